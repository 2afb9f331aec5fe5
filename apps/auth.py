"""Login against the QA database: a Bokeh/Panel auth provider with hashed passwords.

Panel's ``--basic-auth`` compares plain-text passwords; this provider instead checks a login with
:meth:`b2calib.qa.store.Users.authenticate` (scrypt hashes compared in constant time) and
keeps the login in a cookie signed with the server's cookie secret (``pn.state.user`` then
returns it). With ``allow_anonymous`` a visitor who has not logged in may read every app as
*anonymous*; anonymous users never write.

The provider serves ``/login`` (form, POST checks the password) and ``/logout`` (clears the
cookie). Every page and websocket of the apps requires a login otherwise (Bokeh's
``@authenticated`` consults :attr:`DatabaseAuthProvider.get_user`).

Two guards stand before the password check of a ``POST /login``:

* **XSRF token.** The form carries Tornado's ``_xsrf`` token (:meth:`RequestHandler.xsrf_form_html`)
  and the POST must send it back matching the ``_xsrf`` cookie (double submit,
  :meth:`RequestHandler.check_xsrf_cookie`); otherwise it is refused with 403 and nobody is
  logged in. Another site cannot read the cookie nor the form, so it cannot log a visitor into
  an account of its choosing (login CSRF). Only the login handler checks it: Tornado's
  application-wide ``xsrf_cookies`` setting stays off, Bokeh's own handlers are untouched. The
  cookie is HttpOnly and SameSite=Lax; over HTTPS it is ``__Host-`` prefixed and Secure, so a
  sibling subdomain cannot plant one.
* **Throttle of failed logins** (:class:`LoginThrottle`). After a few failures within a
  window for a user name, or from a client address, further attempts for that name or from that
  address are refused (429) for a delay that doubles with every further failure, without
  checking the password (a refusal costs no scrypt). By default: 5 failures within 15 minutes
  lock for 30 s, each further failure for twice as long up to 15 minutes, and an hour without
  failures forgets them. A success clears the name's record. The refusal reads the same whether
  or not the user exists. The state lives in the memory of the server process: every process
  (and every restart) has its own, and the database is not involved. Since anybody may fail
  logins of any name, a name under attack stays locked for its owner too (the price of limiting
  guesses per account). Behind a reverse proxy every client has the proxy's address (the server
  does not trust ``X-Forwarded-For``), so the address limit then applies to all clients together.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bokeh.server.auth_provider import AuthProvider
from tornado.web import RequestHandler, decode_signed_value

from b2calib.exceptions import B2CalibError

__all__ = [
    "ANONYMOUS",
    "COOKIE_MAX_AGE_DAYS",
    "DatabaseAuthProvider",
    "LoginThrottle",
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


#: Longest part of a user name kept as a throttle key (longer names share their prefix's record).
_MAX_KEY_CHARS = 200
#: Records kept before stale ones are dropped (then twice the number left, at least this); they
#: are also dropped every ``forget_after`` seconds.
_PRUNE_MIN = 10_000


@dataclass
class _Record:
    """Failed logins of one user name or one client address."""

    failures: deque[float] = field(default_factory=deque)  # times, within the window
    last_failure: float = -math.inf
    level: int = 0  # lockouts since the record was last forgotten: the delay doubles with each
    locked_until: float = -math.inf


def _address_key(address: str) -> str:
    """The throttle key of a client address: an IPv6 address counts by its /64 network (one
    host usually has a whole /64), an IPv4-mapped one as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:_MAX_KEY_CHARS]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottle:
    """Refuse logins for a while after repeated failures, per user name and per client address.

    When ``max_failures`` failures of one name (or from one address) fall within ``window``
    seconds, that name (address) is locked for ``base_delay`` seconds. Once locked, a single
    further failure locks it again for twice the previous delay, up to ``max_delay``. A locked
    name or address is refused before any password is checked. A success clears the name's
    record but not the address's (an attacker with an account of their own could otherwise
    clear their address between guesses at other names). A record with no failure for
    ``forget_after`` seconds starts afresh.

    The state is in this object only (one per server process); every method is thread safe.
    Unknown user names are counted exactly like known ones, so the throttle reveals nothing about
    which users exist.

    Parameters
    ----------
    max_failures
        Failures within ``window`` that lock a name or an address.
    window
        Seconds within which failures are counted.
    base_delay
        Seconds of the first lockout.
    max_delay
        Longest lockout in seconds.
    forget_after
        Seconds after a record's last failure when its failures and lockouts are forgotten; must
        exceed ``max_delay`` (else a locked name would start afresh when its lock ends).
    clock
        Monotonic time in seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        base_delay: float = 30.0,
        max_delay: float = 900.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise B2CalibError("max_failures must be at least 1")
        if not 0 < base_delay <= max_delay:
            raise B2CalibError("the delays must satisfy 0 < base_delay <= max_delay")
        if window <= 0 or forget_after <= max_delay:
            raise B2CalibError("window must be positive and forget_after exceed max_delay")
        self.max_failures = max_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._clock = clock
        self._names: dict[str, _Record] = {}
        self._addresses: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._prune_at = _PRUNE_MIN
        self._next_prune = clock() + forget_after

    def __len__(self) -> int:
        """Number of records held (user names and addresses)."""
        with self._lock:
            return len(self._names) + len(self._addresses)

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until ``name`` may try to log in from ``address`` again (0: it may now)."""
        now = self._clock()
        with self._lock:
            records = (
                self._names.get(name[:_MAX_KEY_CHARS]),
                self._addresses.get(_address_key(address)),
            )
            return max([0.0] + [r.locked_until - now for r in records if r is not None])

    def failed(self, name: str, address: str) -> None:
        """Count a failed login of ``name`` from ``address``."""
        now = self._clock()
        with self._lock:
            for table, key in (
                (self._names, name[:_MAX_KEY_CHARS]),
                (self._addresses, _address_key(address)),
            ):
                delay = self._fail(table.setdefault(key, _Record()), now)
                if delay:
                    kind = "user name" if table is self._names else "address"
                    log.warning("logins of %s %r locked for %.0f s", kind, key, delay)
            if len(self._names) + len(self._addresses) > self._prune_at or now >= self._next_prune:
                self._prune(now)

    def succeeded(self, name: str) -> None:
        """Clear the record of ``name`` after a successful login."""
        with self._lock:
            self._names.pop(name[:_MAX_KEY_CHARS], None)

    def _fail(self, record: _Record, now: float) -> float:
        """Count a failure at ``now``; the seconds of the lockout it starts (0: none)."""
        if now - record.last_failure >= self.forget_after:
            record.failures.clear()
            record.level = 0
        while record.failures and record.failures[0] <= now - self.window:
            record.failures.popleft()
        record.failures.append(now)
        record.last_failure = now
        if record.level > 0 or len(record.failures) >= self.max_failures:
            record.level += 1
            delay = min(self.base_delay * 2.0 ** (record.level - 1), self.max_delay)
            record.locked_until = now + delay
            record.failures.clear()
            return delay
        return 0.0

    def _prune(self, now: float) -> None:
        """Drop the records that no longer matter (memory stays bounded under a flood of names)."""
        for table in (self._names, self._addresses):
            stale = [
                key
                for key, r in table.items()
                if r.locked_until <= now and now - r.last_failure >= self.forget_after
            ]
            for key in stale:
                del table[key]
        self._prune_at = max(_PRUNE_MIN, 2 * (len(self._names) + len(self._addresses)))
        self._next_prune = now + self.forget_after


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
{xsrf}
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
        ``(name, password) -> User | None``, normally ``QADatabase.users.authenticate``.
    cookie_secret
        Secret signing the login cookie (the server's ``cookie_secret``).
    allow_anonymous
        Let visitors without a login read (they are reported as :data:`ANONYMOUS`).
    throttle
        Limits failed logins; a :class:`LoginThrottle` with its defaults when not given.
    """

    def __init__(
        self,
        authenticate: Callable[[str, str], Any],
        cookie_secret: str,
        *,
        allow_anonymous: bool = False,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if not cookie_secret:
            raise B2CalibError("the login cookie needs a cookie secret")
        self._authenticate = authenticate
        self._secret = cookie_secret
        self.allow_anonymous = allow_anonymous
        self.throttle = LoginThrottle() if throttle is None else throttle
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


#: Name of the XSRF cookie over HTTPS: ``__Host-`` cookies must be Secure, for path ``/`` and
#: without a domain, so no subdomain can set one (over HTTP Tornado's ``_xsrf`` is used).
_XSRF_COOKIE_HTTPS = "__Host-b2calib_xsrf"
_WRONG = "Wrong user name or password."
_FORGED = (
    "The login was refused: the form had expired or came from another site. Please log in again."
)


class _LoginHandler(RequestHandler):
    provider: DatabaseAuthProvider

    @property
    def settings(self) -> dict[str, Any]:
        """The application's settings with this handler's XSRF cookie options.

        Tornado reads the XSRF cookie's name and attributes from the settings; they are given
        here rather than to the application, which concerns Bokeh's handlers too.
        """
        https = self.request.protocol == "https"
        xsrf: dict[str, Any] = {"httponly": True, "samesite": "Lax", "secure": https, "path": "/"}
        extra: dict[str, Any] = {"xsrf_cookie_kwargs": xsrf}
        if https:
            extra["xsrf_cookie_name"] = _XSRF_COOKIE_HTTPS
        return {**self.application.settings, **extra}

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
            xsrf=self.xsrf_form_html(),
            error=f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else "",
            anonymous=anonymous,
        )
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.write(_PAGE.format(title="log in", body=body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A refused XSRF token (403) shows the form again, with a valid token."""
        if status_code == 403:
            self._page(_FORGED, status=403)
        else:
            super().write_error(status_code, **kwargs)

    def get(self) -> None:
        self._page()

    def post(self) -> None:
        self.check_xsrf_cookie()  # raises HTTPError(403), which Tornado logs
        address = self.request.remote_ip or ""
        name = self.get_argument("username", "").strip()
        password = self.get_argument("password", "")
        throttle = self.provider.throttle
        wait = throttle.retry_after(name, address)
        if wait > 0:  # refused before any password is checked
            log.info("throttled login of %r from %s (%.0f s left)", name, address, wait)
            seconds = math.ceil(wait)
            self.set_header("Retry-After", str(seconds))
            self._page(
                f"Too many failed logins: please try again in {seconds} s.",
                status=429,
            )
            return
        if not self.provider.check(name, password):
            log.info("refused login of %r from %s", name, address)
            throttle.failed(name, address)
            self._page(_WRONG, status=401)
            return
        throttle.succeeded(name)
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
