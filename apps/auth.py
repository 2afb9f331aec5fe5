"""Login against the QA database: a Bokeh/Panel auth provider with hashed passwords.

Panel's ``--basic-auth`` compares plain-text passwords; this provider instead checks a login with
:meth:`b2calib.qa.store.QADatabase.authenticate` (scrypt hashes compared in constant time) and
keeps the login in a cookie signed with the server's cookie secret (``pn.state.user`` then
returns it). With ``allow_anonymous`` a visitor who has not logged in may read every app as
*anonymous*; anonymous users never write.

The provider serves ``/login`` (form, POST checks the password) and ``/logout`` (clears the
cookie). Every page and websocket of the apps requires a login otherwise (Bokeh's
``@authenticated`` consults :attr:`DatabaseAuthProvider.get_user`).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

from bokeh.server.auth_provider import AuthProvider
from tornado.web import RequestHandler, decode_signed_value

from b2calib.exceptions import B2CalibError

__all__ = [
    "ANONYMOUS",
    "COOKIE_MAX_AGE_DAYS",
    "DatabaseAuthProvider",
    "login_name",
]

log = logging.getLogger(__name__)

#: What :meth:`DatabaseAuthProvider.get_user` reports for a visitor without a login when
#: anonymous reading is allowed. Not a user name: it is never looked up in the database.
ANONYMOUS = "\x00anonymous"
#: How long a login cookie stays valid.
COOKIE_MAX_AGE_DAYS = 1.0
_USER_COOKIE = "user"


def login_name(cookies: dict[str, Any], secret: str | None) -> str | None:
    """The user name carried by the signed login cookie among ``cookies``, or None.

    The cookie must be signed with ``secret`` and younger than :data:`COOKIE_MAX_AGE_DAYS`;
    Panel's unsigned ``is_guest`` cookie is deliberately ignored.
    """
    raw = cookies.get(_USER_COOKIE)
    if raw is None or not secret:
        return None
    value = getattr(raw, "value", raw)  # a Morsel from tornado, a str from the session context
    decoded = decode_signed_value(secret, _USER_COOKIE, value, max_age_days=COOKIE_MAX_AGE_DAYS)
    return None if decoded is None else decoded.decode("utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>b2calib - {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f6f8; margin: 0; }}
main {{ max-width: 22rem; margin: 8rem auto; background: white; padding: 2rem;
        border-radius: 8px; box-shadow: 0 2px 10px rgba(0,0,0,.12); }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin-top: 1rem; font-size: .9rem; color: #333; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; margin-top: .25rem;
         font-size: 1rem; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem;
          background: #1f4e8c; color: white; border: 0; border-radius: 4px; }}
.error {{ color: #b00020; margin-top: 1rem; }}
.note {{ color: #555; font-size: .85rem; margin-top: 1rem; }}
</style></head>
<body><main>{body}</main></body></html>
"""

_LOGIN_FORM = """<h1>b2calib data quality: log in</h1>
<form method="post" action="{action}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button id="login-submit" type="submit">Log in</button>
</form>
{error}{anonymous}
"""


def _safe_next(url: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


class DatabaseAuthProvider(AuthProvider):
    """Log users in against the QA database.

    Parameters
    ----------
    authenticate
        ``(name, password) -> User | None``, normally ``QADatabase.authenticate``.
    cookie_secret
        Secret signing the login cookie (the server's ``cookie_secret``).
    allow_anonymous
        Let visitors without a login read (they are reported as :data:`ANONYMOUS`).
    """

    def __init__(
        self,
        authenticate: Callable[[str, str], Any],
        cookie_secret: str,
        *,
        allow_anonymous: bool = False,
    ) -> None:
        if not cookie_secret:
            raise B2CalibError("the login cookie needs a cookie secret")
        self._authenticate = authenticate
        self._secret = cookie_secret
        self.allow_anonymous = allow_anonymous
        super().__init__()

    # ------------------------------------------------------------------ AuthProvider hooks
    @property
    def get_user(self) -> Callable[[Any], Any]:
        """The login of a request, :data:`ANONYMOUS`, or None (then Bokeh redirects to login)."""

        def get_user(handler: RequestHandler) -> str | None:
            name = login_name(handler.request.cookies, self._secret)
            if name is not None:
                return name
            return ANONYMOUS if self.allow_anonymous else None

        return get_user

    @property
    def login_url(self) -> str:
        """Where Bokeh sends a visitor without a login."""
        return "/login"

    @property
    def login_handler(self) -> type[RequestHandler]:
        """The login page, bound to this provider."""
        return type("LoginHandler", (_LoginHandler,), {"provider": self})

    @property
    def logout_url(self) -> str:
        """The logout page."""
        return "/logout"

    @property
    def logout_handler(self) -> type[RequestHandler]:
        """Clears the login cookie."""
        return type("LogoutHandler", (_LogoutHandler,), {"provider": self})

    # --------------------------------------------------------------------------- helpers
    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is right for ``name`` (the database compares hashes)."""
        if not name or not password:
            return False
        try:
            return self._authenticate(name, password) is not None
        except B2CalibError as err:
            log.warning("login of %r failed: %s", name, err)
            return False


class _LoginHandler(RequestHandler):
    provider: DatabaseAuthProvider

    def _page(self, error: str = "", status: int = 200) -> None:
        nxt = _safe_next(self.get_argument("next", None))
        anonymous = (
            '<p class="note"><a id="anonymous-link" href="/">Continue without logging in '
            "(read only)</a></p>"
            if self.provider.allow_anonymous
            else ""
        )
        body = _LOGIN_FORM.format(
            action=html.escape(self.request.path),
            next=html.escape(nxt),
            error=f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else "",
            anonymous=anonymous,
        )
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.write(_PAGE.format(title="log in", body=body))

    def get(self) -> None:
        self._page()

    def post(self) -> None:
        name = self.get_argument("username", "").strip()
        password = self.get_argument("password", "")
        if not self.provider.check(name, password):
            log.info("refused login of %r from %s", name, self.request.remote_ip)
            self._page("Wrong user name or password.", status=401)
            return
        self.set_secure_cookie(
            _USER_COOKIE,
            name,
            expires_days=COOKIE_MAX_AGE_DAYS,
            httponly=True,
            samesite="Lax",
            secure=self.request.protocol == "https",
            path="/",
        )
        self.redirect(_safe_next(self.get_argument("next", None)))


class _LogoutHandler(RequestHandler):
    provider: DatabaseAuthProvider

    def get(self) -> None:
        self.clear_cookie(_USER_COOKIE, path="/")
        self.clear_cookie("id_token", path="/")
        self.set_header("Cache-Control", "no-store")
        body = '<h1 id="logged-out">Logged out</h1><p><a href="/login">Log in again</a></p>'
        self.write(_PAGE.format(title="logged out", body=body))
