"""Login against the QA database: a Bokeh/Panel auth provider with hashed passwords and
server-side sessions, and the guard that puts every route of the server behind them.

Panel's ``--basic-auth`` compares plain-text passwords; this provider instead checks a login with
:meth:`b2calib.qa.store.Users.authenticate` (scrypt hashes compared in constant time) and opens a
session in the database (:class:`b2calib.qa.store.Sessions`): the browser keeps a random token
in a cookie signed with the server's cookie secret (:data:`SESSION_COOKIE`), the database its
hash. With ``allow_anonymous`` a visitor who has not logged in may read every app as
*anonymous*; anonymous users never write.

The provider serves ``/login`` (form, POST checks the password) and ``/logout`` (ends the
session and clears the cookie).

**Every route is guarded** (:meth:`DatabaseAuthProvider.guard`): once the server is built, every
handler of its route table but the login and logout pages, the favicon and the static assets
(Bokeh's and Panel's JavaScript and CSS, public library files) is replaced by a subclass that
looks the request's session up before anything else runs: without a live session a page
(``GET``) is sent to the login page, anything else is refused (403), a websocket before its
handshake. Nothing is reachable by omission: a handler a later Panel or Bokeh registers, or one
added to the running application, is guarded too. Panel's component-resource handler
(``/components/...``) is also kept from importing anything: it serves only resources of modules
already loaded, of Panel, Bokeh, HoloViews and these apps, and answers 404 for anything else
(never a traceback).

**Sessions end** at logout, after :data:`COOKIE_MAX_AGE_DAYS`, and when their user is removed or
their password, role or detectors change (see :mod:`b2calib.qa.store.sessions`), for every server
process sharing the database, since each request asks the database:

* every HTTP request of a guarded route looks its session up;
* a page never sees the cookie: Bokeh's session token, embedded in the page where scripts can
  read it, carries no cookie and no ``Cookie`` header (``include_cookies=[]``, see
  :func:`b2calib_apps.serve.make_server`); the guard puts the session's *id* in the request's
  :data:`SESSION_HEADER` instead (a client's own header of that name is dropped), from which the
  page's code finds its user (:func:`b2calib_apps._common.session_user`), and which is no
  credential;
* a page's websocket opens only with the cookie of the session its page was made for, and only
  to a Bokeh session this server process made (a page of before a restart stays disconnected);
  every message it sends looks the session up first, and when the session has ended the socket
  is closed (code 1008) before the message acts;
* :meth:`DatabaseAuthProvider.sweep`, run every few seconds by the server, closes the websockets
  of open pages whose session ended, and a logout closes its own pages' sockets at once.

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

After a login the browser goes back to the page it came from (``next``), only if that is a path
of this site (:func:`safe_next`); anything else (another host, a scheme, backslashes, tabs or
other characters a browser drops or reinterprets) leads to ``/``.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import math
import re
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bokeh.server.auth_provider import AuthProvider
from bokeh.server.views.ico_handler import IcoHandler
from bokeh.server.views.multi_root_static_handler import MultiRootStaticHandler
from bokeh.server.views.static_handler import StaticHandler
from bokeh.util.token import get_session_id, get_token_payload
from tornado.routing import RuleRouter
from tornado.web import Application, HTTPError, RequestHandler, decode_signed_value
from tornado.websocket import WebSocketHandler

from b2calib.exceptions import B2CalibError

__all__ = [
    "ANONYMOUS",
    "COOKIE_MAX_AGE_DAYS",
    "SESSION_COOKIE",
    "SESSION_HEADER",
    "DatabaseAuthProvider",
    "LoginThrottle",
    "SessionStore",
    "safe_next",
    "session_token",
]

log = logging.getLogger(__name__)

#: What :meth:`DatabaseAuthProvider.get_user` reports for a visitor without a login when
#: anonymous reading is allowed. Not a user name: it is never looked up in the database.
ANONYMOUS = "\x00anonymous"
#: How long a login lasts at most (the cookie and the session in the database).
COOKIE_MAX_AGE_DAYS = 1.0
#: The cookie holding the session's token (signed with the cookie secret, HttpOnly).
SESSION_COOKIE = "b2calib_session"
#: The request header in which the guard hands a page its session's id (never the client's).
SESSION_HEADER = "X-B2calib-Session"
#: The websocket close code of a page whose session ended (policy violation).
_ENDED = 1008


def session_token(cookies: dict[str, Any], secret: str | None) -> str | None:
    """The session token carried by the signed session cookie among ``cookies``, or None.

    The cookie must be signed with ``secret`` and younger than :data:`COOKIE_MAX_AGE_DAYS`;
    Panel's unsigned ``is_guest`` cookie and any other are ignored.
    """
    raw = cookies.get(SESSION_COOKIE)
    if raw is None or not secret:
        return None
    value = getattr(raw, "value", raw)  # a Morsel from tornado or http.cookies, else a str
    decoded = decode_signed_value(secret, SESSION_COOKIE, value, max_age_days=COOKIE_MAX_AGE_DAYS)
    if decoded is None:
        return None
    try:
        return decoded.decode("ascii")
    except UnicodeDecodeError:
        return None


#: What a path to go to after login may hold: an absolute path of this site in RFC 3986's
#: characters (unreserved, reserved, percent escapes), not starting ``//``. No whitespace, control
#: character, backslash or non-ASCII character: browsers drop some of them (``/<TAB>/evil`` is
#: ``//evil``) and read others as a slash.
_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/?#%\[\]]*")
_NEXT_MAX = 2048


def safe_next(url: str | None) -> str:
    """``url`` if it is a same-origin path to go to after login, else ``/``."""
    if url is None or len(url) > _NEXT_MAX or not _NEXT.fullmatch(url):
        return "/"
    return url


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


class SessionStore(Protocol):
    """What the provider needs of the sessions (:class:`b2calib.qa.store.Sessions`)."""

    def open(self, name: str, *, lifetime: float = ...) -> tuple[str, Any]:
        """Begin a session of ``name``: its token and the session."""

    def find(self, token: str) -> Any:
        """The live session of a token, or None."""

    def get(self, sid: str) -> Any:
        """The live session with id ``sid``, or None."""

    def alive(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` name live sessions."""

    def close(self, sid: str) -> bool:
        """End session ``sid``."""


class DatabaseAuthProvider(AuthProvider):
    """Log users in against the QA database, with sessions in the database.

    Parameters
    ----------
    authenticate
        ``(name, password) -> User | None``, normally ``QADatabase.users.authenticate``.
    sessions
        Where logins are kept, normally ``QADatabase.sessions``.
    cookie_secret
        Secret signing the session cookie (the server's ``cookie_secret``).
    allow_anonymous
        Let visitors without a login read (they are reported as :data:`ANONYMOUS`).
    throttle
        Limits failed logins; a :class:`LoginThrottle` with its defaults when not given.
    """

    def __init__(
        self,
        authenticate: Callable[[str, str], Any],
        sessions: SessionStore,
        cookie_secret: str,
        *,
        allow_anonymous: bool = False,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if not cookie_secret:
            raise B2CalibError("the session cookie needs a cookie secret")
        self.authenticate = authenticate
        self.sessions = sessions
        self._secret = cookie_secret
        self.allow_anonymous = allow_anonymous
        self.throttle = LoginThrottle() if throttle is None else throttle
        # the open websockets of each session id (used on the server's IO loop only)
        self._sockets: dict[str, set[WebSocketHandler]] = {}
        super().__init__()

    # ------------------------------------------------------------------ AuthProvider hooks
    @property
    def get_user(self) -> Callable[[Any], Any]:
        """The login of a request, :data:`ANONYMOUS`, or None (then Bokeh redirects to login)."""
        return self.visitor

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
        """Ends the session and clears its cookie."""
        return type("LogoutHandler", (_LogoutHandler,), {"provider": self})

    # ------------------------------------------------------------------------- sessions
    def session_of(self, cookies: dict[str, Any]) -> Any:
        """The live session whose signed cookie is among ``cookies``, or None."""
        token = session_token(cookies, self._secret)
        if token is None:
            return None
        try:
            return self.sessions.find(token)
        except B2CalibError as err:  # the database is unreachable: nobody is logged in
            log.error("cannot look the session up: %s", err)
            return None

    def visitor(self, handler: RequestHandler) -> str | None:
        """Who sends ``handler``'s request: the user name of its live session,
        :data:`ANONYMOUS`, or None (no login, and anonymous visitors are not allowed).

        Looks the session up once per request, and leaves the session's id (only when there is
        one) in the request's :data:`SESSION_HEADER`, where a page finds it.
        """
        if hasattr(handler, "_b2calib_visitor"):
            cached: str | None = handler._b2calib_visitor
            return cached
        session = self.session_of(handler.request.cookies)
        headers = handler.request.headers
        if SESSION_HEADER in headers:
            del headers[SESSION_HEADER]  # only the guard says which session a request has
        handler._b2calib_session = session  # type: ignore[attr-defined]
        if session is not None:
            headers[SESSION_HEADER] = session.id
            name: str | None = session.user.name
        else:
            name = ANONYMOUS if self.allow_anonymous else None
        handler._b2calib_visitor = name  # type: ignore[attr-defined]
        return name

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is right for ``name`` (the database compares hashes)."""
        if not name or not password:
            return False
        try:
            return self.authenticate(name, password) is not None
        except B2CalibError as err:
            log.warning("login of %r failed: %s", name, err)
            return False

    def sweep(self) -> int:
        """Close the websockets of open pages whose session ended; how many sessions ended.

        The server runs this every few seconds, on its IO loop.
        """
        if not self._sockets:
            return 0
        try:
            alive = self.sessions.alive(list(self._sockets))
        except B2CalibError as err:
            log.error("cannot check the open pages' sessions: %s", err)
            return 0
        ended = [sid for sid in self._sockets if sid not in alive]
        for sid in ended:
            self.disconnect(sid)
        return len(ended)

    def disconnect(self, sid: str) -> None:
        """Close the websockets of this process's open pages of session ``sid``."""
        for socket in self._sockets.pop(sid, set()):
            log.info("closing a page of an ended session")
            socket.close(_ENDED, "the login ended")

    def _register(self, sid: str, socket: WebSocketHandler) -> None:
        self._sockets.setdefault(sid, set()).add(socket)

    def _unregister(self, sid: str, socket: WebSocketHandler) -> None:
        sockets = self._sockets.get(sid)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._sockets[sid]

    # ---------------------------------------------------------------------------- guard
    def is_public(self, handler: type[RequestHandler]) -> bool:
        """Whether a handler is reachable without a session: login, logout, favicon, static
        assets."""
        return issubclass(
            handler,
            (_LoginHandler, _LogoutHandler, IcoHandler, StaticHandler, MultiRootStaticHandler),
        )

    def guard(self, application: Application) -> list[str]:
        """Put every route of ``application`` but the public ones behind the session check
        (see the module's description); the guarded handlers' names.

        Every router of the application is walked (nested ones too), and routes added later
        through ``application.add_handlers`` are guarded as they come. A route whose target is
        neither a request handler nor a router cannot be guarded: it is refused
        (:class:`~b2calib.exceptions.B2CalibError`) rather than left open.
        """
        guarded: list[str] = []
        self._guard_router(application.default_router, guarded)
        if not getattr(application, "_b2calib_guard", None):
            add_handlers = application.add_handlers

            def add_and_guard(host_pattern: str, host_handlers: Any) -> None:
                add_handlers(host_pattern, host_handlers)
                self.guard(application)

            application.add_handlers = add_and_guard  # type: ignore[method-assign]
            application._b2calib_guard = self  # type: ignore[attr-defined]
        return guarded

    def _guard_router(self, router: RuleRouter, guarded: list[str]) -> None:
        from panel.io.server import ComponentResourceHandler

        for rule in router.rules:
            target = rule.target
            if isinstance(target, RuleRouter):
                self._guard_router(target, guarded)
                continue
            if not (isinstance(target, type) and issubclass(target, RequestHandler)):
                raise B2CalibError(f"cannot guard the route {rule.matcher!r} ({target!r})")
            if self.is_public(target) or issubclass(target, _Guarded):
                continue
            if issubclass(target, WebSocketHandler):
                mixin: type = _GuardedSocket
            elif issubclass(target, ComponentResourceHandler):
                mixin = _GuardedComponents
            else:
                mixin = _Guarded
            rule.target = type(target.__name__, (mixin, target), {"provider": self})
            guarded.append(target.__name__)


#: Packages whose loaded modules' component resources ``/components/...`` may serve.
_COMPONENT_PACKAGES = ("panel", "bokeh", "holoviews", "b2calib_apps")


class _Guarded(RequestHandler):
    """Refuses a request without a live session (or an anonymous visitor when allowed) before
    its handler runs: a page (GET, HEAD) is sent to the login page, anything else gets 403."""

    provider: DatabaseAuthProvider

    async def prepare(self) -> None:
        pending = super().prepare()
        if pending is not None:
            await pending
        if self._finished:
            return
        self.current_user = self.provider.visitor(self)
        reason = self._refusal()
        if reason is not None:
            self._refuse(reason)

    def _refusal(self) -> str | None:
        """Why the request may not go on, or None."""
        return "no login" if self.current_user is None else None

    def _refuse(self, reason: str) -> None:
        if self.request.method in ("GET", "HEAD"):
            back = urllib.parse.urlencode({"next": safe_next(self.request.uri)})
            self.redirect(f"{self.provider.login_url}?{back}")
        else:
            raise HTTPError(403)


class _GuardedComponents(_Guarded):
    """Panel's component resources, without importing anything: a module not loaded yet, or of
    another package, a malformed or unlisted path are all 404 (never a traceback)."""

    def parse_url_path(self, url_path: str) -> str:
        module = url_path.split("/", 1)[0]
        if module not in sys.modules or module.split(".")[0] not in _COMPONENT_PACKAGES:
            raise HTTPError(404)
        try:
            path: str = super().parse_url_path(url_path)  # type: ignore[misc]
        except HTTPError as err:
            raise HTTPError(404 if err.status_code == 400 else err.status_code) from None
        except Exception:
            raise HTTPError(404) from None
        return path


class _GuardedSocket(_Guarded, WebSocketHandler):
    """A page's websocket: opens only with the session its page was made for, to a Bokeh
    session of this process; checks the session before every message it receives."""

    _b2calib_sid: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        session = getattr(self, "_b2calib_session", None)
        if not self._finished and session is not None:
            self._b2calib_sid = session.id

    def _refusal(self) -> str | None:
        if self.current_user is None:
            return "no login"
        session = getattr(self, "_b2calib_session", None)
        token = _bokeh_token(self.request.headers.get("Sec-WebSocket-Protocol", ""))
        if token is None:
            return "no session token"
        if _token_session(token) != (None if session is None else session.id):
            return "a session token of another login"
        if not self._known(token):
            return "a session of another server process (a page of before a restart?)"
        return None

    def _refuse(self, reason: str) -> None:
        log.info("refused the websocket of %s: %s", self.request.path, reason)
        self.set_status(403)
        self.finish()

    def _known(self, token: str) -> bool:
        """Whether the token's Bokeh session was made by this server process."""
        context = getattr(self, "application_context", None)
        if context is None:
            return False
        try:
            context.get_session(get_session_id(token))
        except Exception:
            return False
        return True

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if self._b2calib_sid is not None:
            self.provider._register(self._b2calib_sid, self)
        return super().open(*args, **kwargs)

    async def on_message(self, message: str | bytes) -> None:
        sid = self._b2calib_sid
        if sid is not None:
            try:
                live = self.provider.sessions.get(sid) is not None
            except B2CalibError as err:
                log.error("cannot look the session up: %s", err)
                live = False
            if not live:
                self.provider.disconnect(sid)
                self.close(_ENDED, "the login ended")
                return
        pending = super().on_message(message)
        if pending is not None:
            await pending

    def on_close(self) -> None:
        if self._b2calib_sid is not None:
            self.provider._unregister(self._b2calib_sid, self)
        super().on_close()


def _bokeh_token(protocols: str) -> str | None:
    """The Bokeh session token of a websocket's ``Sec-WebSocket-Protocol`` (``bokeh, <token>``)."""
    parts = [p.strip() for p in protocols.split(",")]
    return parts[1] if len(parts) == 2 and parts[0] == "bokeh" and parts[1] else None


def _token_session(token: str) -> str | None:
    """The session id a Bokeh token's page was made for (see :data:`SESSION_HEADER`)."""
    try:
        headers = get_token_payload(token).get("headers", {})
    except Exception:
        return None
    sid = headers.get(SESSION_HEADER) if isinstance(headers, dict) else None
    return sid if isinstance(sid, str) else None


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
        nxt = safe_next(self.get_argument("next", None, strip=False))
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
        try:
            token, _ = self.provider.sessions.open(name, lifetime=COOKIE_MAX_AGE_DAYS * 86400.0)
        except B2CalibError as err:  # removed in the meantime, or the database is away
            log.warning("no session for %r: %s", name, err)
            self._page(_WRONG, status=401)
            return
        _end_session(self)  # a login replaces the one this browser had
        log.info("login of %r from %s", name, address)
        self.set_secure_cookie(
            SESSION_COOKIE,
            token,
            expires_days=COOKIE_MAX_AGE_DAYS,
            httponly=True,
            samesite="Lax",
            secure=self.request.protocol == "https",
            path="/",
        )
        self.redirect(safe_next(self.get_argument("next", None, strip=False)))


def _end_session(handler: Any) -> None:
    """End the session whose cookie a request carries, and close its open pages here."""
    provider: DatabaseAuthProvider = handler.provider
    session = provider.session_of(handler.request.cookies)
    if session is None:
        return
    try:
        provider.sessions.close(session.id)
    except B2CalibError as err:
        log.error("cannot end the session: %s", err)
    provider.disconnect(session.id)


class _LogoutHandler(RequestHandler):
    provider: DatabaseAuthProvider

    def get(self) -> None:
        _end_session(self)
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.clear_cookie("id_token", path="/")
        self.set_header("Cache-Control", "no-store")
        body = '<h1 id="logged-out">Logged out</h1><p><a href="/login">Log in again</a></p>'
        self.write(_PAGE.format(title="logged out", body=body))


def __dir__() -> list[str]:
    return __all__
