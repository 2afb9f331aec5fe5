"""The login's guards (:mod:`b2calib_apps.auth`): the throttle of failed logins with a clock the
tests drive (nothing sleeps), the login handler's XSRF check, throttling and redirect after login
in a Tornado server of this process with a stand-in for the database's ``authenticate``; the
server-side sessions of the QA database (both backends); and the served dashboards' guard of
every route, the end of sessions (logout, user removal, password or role change) for pages and
websockets, in one process and across server processes sharing the database."""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import logging
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

import b2calib.qa.store as store
import b2calib_apps.auth as auth
from b2calib.exceptions import B2CalibError, QAError
from b2calib.qa.store import QADatabase
from b2calib.runs import RunRegistry
from b2calib_apps.auth import DatabaseAuthProvider, LoginThrottle
from tests.browser_server import USERS, Server, free_port

SECRET = "test-cookie-secret-0123456789"
RIGHT = ("alice", "alice-secret-1")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(
        max_failures=5, window=600.0, base_delay=30.0, max_delay=480.0, forget_after=3600.0,
        clock=clock,
    )  # fmt: skip


def fail(throttle: LoginThrottle, name: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        assert throttle.retry_after(name, address) == 0.0  # an attempt is only made when allowed
        throttle.failed(name, address)


# ------------------------------------------------------------------------------ throttle
def test_fifth_failure_locks_for_the_base_delay(throttle: LoginThrottle, clock: Clock) -> None:
    fail(throttle, "alice", "10.0.0.1", times=4)
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0
    fail(throttle, "alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 30.0
    clock.advance(29.5)
    assert throttle.retry_after("alice", "10.0.0.1") == pytest.approx(0.5)
    clock.advance(0.5)
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0


def test_failures_outside_the_window_do_not_count(throttle: LoginThrottle, clock: Clock) -> None:
    fail(throttle, "alice", "10.0.0.1", times=4)
    clock.advance(600.0)  # the four fall out of the window
    fail(throttle, "alice", "10.0.0.1", times=4)
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0
    fail(throttle, "alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 30.0


def test_delay_doubles_with_each_further_failure_up_to_the_cap(
    throttle: LoginThrottle, clock: Clock
) -> None:
    fail(throttle, "alice", "10.0.0.1", times=5)
    delays = []
    for _ in range(7):
        wait = throttle.retry_after("alice", "10.0.0.1")
        delays.append(wait)
        clock.advance(wait)
        fail(throttle, "alice", "10.0.0.1")  # once locked, a single failure locks again
    delays.append(throttle.retry_after("alice", "10.0.0.1"))
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 480.0, 480.0, 480.0]


def test_quiet_record_is_forgotten(throttle: LoginThrottle, clock: Clock) -> None:
    fail(throttle, "alice", "10.0.0.1", times=5)
    clock.advance(30.0)
    fail(throttle, "alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 60.0
    clock.advance(3600.0)
    fail(throttle, "alice", "10.0.0.1", times=4)  # five needed again
    assert throttle.retry_after("alice", "10.0.0.1") == 0.0
    fail(throttle, "alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.1") == 30.0  # the delay starts afresh


def test_success_resets_the_name_but_not_the_address(throttle: LoginThrottle, clock: Clock) -> None:
    for i in range(4):
        fail(throttle, "alice", f"10.0.1.{i}")
    throttle.succeeded("alice")
    for i in range(4):
        fail(throttle, "alice", f"10.0.2.{i}")
    assert throttle.retry_after("alice", "10.0.3.1") == 0.0  # 8 failures, but 4 since success
    fail(throttle, "alice", "10.0.3.1")
    assert throttle.retry_after("alice", "10.0.3.2") == 30.0
    # an address is not cleared by a success there: guesses at other names stay counted
    fail(throttle, "bob", "10.0.9.9", times=4)
    throttle.succeeded("bob")
    fail(throttle, "carol", "10.0.9.9")
    assert throttle.retry_after("dave", "10.0.9.9") == 30.0
    # a success also ends a name's growing delays
    clock.advance(30.0)
    throttle.succeeded("alice")
    fail(throttle, "alice", "10.0.4.1", times=4)
    assert throttle.retry_after("alice", "10.0.4.2") == 0.0


def test_name_locked_from_every_address(throttle: LoginThrottle) -> None:
    for i in range(5):
        fail(throttle, "alice", f"10.0.0.{i}")
    assert throttle.retry_after("alice", "192.168.1.1") == 30.0  # a new address: still locked
    assert throttle.retry_after("bob", "10.0.0.1") == 0.0  # another name: free
    assert throttle.retry_after("Alice", "192.168.1.1") == 0.0  # names are case sensitive


def test_address_locked_for_every_name(throttle: LoginThrottle) -> None:
    for name in ("alice", "bob", "carol", "dave", "eve"):
        fail(throttle, name, "10.0.0.1")
    assert throttle.retry_after("mallory", "10.0.0.1") == 30.0  # any name from there
    assert throttle.retry_after("alice", "10.0.0.2") == 0.0  # the same names elsewhere: free


def test_ipv6_counted_by_network(throttle: LoginThrottle) -> None:
    for i in range(5):
        fail(throttle, f"user{i}", f"2001:db8:1:2::{i + 1:x}")
    assert throttle.retry_after("x", "2001:db8:1:2:ffff::1") == 30.0  # the same /64
    assert throttle.retry_after("x", "2001:db8:1:3::1") == 0.0  # another /64
    for i in range(5):
        fail(throttle, f"other{i}", "::ffff:192.0.2.7")
    assert throttle.retry_after("x", "192.0.2.7") == 30.0  # IPv4-mapped is the IPv4 address


def test_unknown_and_long_names_are_bounded(throttle: LoginThrottle, clock: Clock) -> None:
    long = "x" * 10_000
    fail(throttle, long, "10.0.0.1", times=4)
    fail(throttle, long[:200] + "different tail", "10.0.0.2")  # keys keep 200 characters
    assert throttle.retry_after(long, "10.0.0.3") == 30.0
    # a flood of names is pruned once it is stale
    for i in range(10_001):
        throttle.failed(f"spray{i}", f"10.1.{i // 256}.{i % 256}")
    assert len(throttle) > 10_000
    clock.advance(3600.0)
    throttle.failed("last", "10.2.0.1")
    assert len(throttle) == 2


@pytest.mark.parametrize(
    "kw",
    [
        {"max_failures": 0},
        {"base_delay": 0.0},
        {"base_delay": 100.0, "max_delay": 50.0},
        {"window": 0.0},
        {"max_delay": 900.0, "forget_after": 900.0},
    ],
)
def test_inconsistent_settings_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(B2CalibError):
        LoginThrottle(**kw)


# ------------------------------------------------------------------------ login handler
class Authenticate:
    """A stand-in for ``QADatabase.users.authenticate`` that records its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, password: str) -> object | None:
        self.calls.append(name)
        return object() if (name, password) == RIGHT else None


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.cookies = SimpleCookie()
        for line in headers.get_all("Set-Cookie") or []:
            self.cookies.load(line)

    @property
    def error(self) -> str | None:
        m = re.search(r'<p class="error" id="login-error">([^<]*)</p>', self.body)
        return None if m is None else m.group(1)

    @property
    def token(self) -> str:
        m = re.search(r'name="_xsrf" value="([^"]+)"', self.body)
        assert m is not None, self.body
        return m.group(1)


class Client:
    """One browser: keeps its cookies, sends requests from ``address`` (``X-Real-Ip``)."""

    def __init__(self, port: int, address: str = "10.0.0.1") -> None:
        self.port = port
        self.address = address
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        form: dict[str, str] | None = None,
        *,
        https: bool = False,
        path: str = "/login?next=/signoff",
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdrs = {"X-Real-Ip": self.address, **(headers or {})}
        if https:  # as a TLS-terminating proxy says
            hdrs["X-Forwarded-Proto"] = "https"
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=hdrs)
            raw = conn.getresponse()
            response = Response(raw.status, raw.headers, raw.read().decode(errors="replace"))
        finally:
            conn.close()
        self.cookies.update({k: m.value for k, m in response.cookies.items()})
        self.cookies = {k: v for k, v in self.cookies.items() if v}  # a cleared cookie is gone
        return response

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path=path, headers=headers)

    def login(
        self, name: str, password: str, token: str | None = None, *, page: str = "/signoff"
    ) -> Response:
        """Open the form (``/login?next=<page>``), then post it (with its token unless
        ``token`` is given)."""
        path = "/login?next=" + urllib.parse.quote(page, safe="")
        form = self.request("GET", path=path)
        return self.request(
            "POST",
            {"username": name, "password": password, "_xsrf": token or form.token},
            path=path,
        )


@pytest.fixture
def provider(clock: Clock, tmp_path: Path) -> Iterator[DatabaseAuthProvider]:
    """A provider with a stand-in for ``authenticate`` (its ``authenticate`` attribute) and the
    sessions of an SQLite QA database that knows alice."""
    db = QADatabase(f"sqlite:///{tmp_path / 'qa.sqlite'}", author="admin")
    db.users.add(RIGHT[0], RIGHT[1], "expert", ["CDC"])
    yield DatabaseAuthProvider(
        Authenticate(), db.sessions, SECRET, throttle=LoginThrottle(clock=clock)
    )
    db.close()


def logged_in(provider: DatabaseAuthProvider, response: Response) -> str | None:
    """The user the session cookie a response set belongs to, or None."""
    session = provider.session_of(response.cookies)
    return None if session is None else session.user.name


@pytest.fixture
def served(provider: DatabaseAuthProvider) -> Iterator[tuple[int, Authenticate, LoginThrottle]]:
    """The provider's login handler in a Tornado server on a thread of this process."""
    authenticate = provider.authenticate
    assert isinstance(authenticate, Authenticate)
    app = Application(
        [
            (provider.login_url, provider.login_handler),
            (provider.logout_url, provider.logout_handler),
        ],
        cookie_secret=SECRET,
    )
    sock, port = bind_unused_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        async def start() -> HTTPServer:
            server = HTTPServer(app, xheaders=True)  # trusts X-Real-Ip/X-Forwarded-Proto
            server.add_sockets([sock])
            return server

        server = loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        server.stop()
        loop.run_until_complete(server.close_all_connections())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(timeout=10)
    yield port, authenticate, provider.throttle
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_form_carries_an_xsrf_token_in_a_protected_cookie(
    served: tuple[int, Authenticate, LoginThrottle],
) -> None:
    port, _, _ = served
    form = Client(port).request("GET")
    assert form.status == 200
    cookie = form.cookies["_xsrf"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]
    assert form.token  # masked afresh on every page, the same secret underneath
    # over HTTPS the cookie is __Host- prefixed and Secure
    https = Client(port).request("GET", https=True)
    assert "_xsrf" not in https.cookies
    assert https.cookies["__Host-b2calib_xsrf"]["secure"]


def test_post_without_or_with_a_wrong_token_refused(
    served: tuple[int, Authenticate, LoginThrottle], provider: DatabaseAuthProvider
) -> None:
    port, authenticate, _ = served
    browser = Client(port)
    browser.request("GET")
    refused = [
        browser.request("POST", {"username": RIGHT[0], "password": RIGHT[1]}),
        browser.request("POST", {"username": RIGHT[0], "password": RIGHT[1], "_xsrf": "x"}),
    ]
    # the attacker's own valid token does not go with the victim's cookie
    attacker = Client(port)
    refused.append(browser.login(*RIGHT, token=attacker.request("GET").token))
    # nor does a token without the cookie (a cross-site form: the Lax cookie is not sent)
    victim = Client(port)
    refused.append(victim.request("POST", {"username": "a", "password": "b", "_xsrf": "x"}))
    for r in refused:
        assert r.status == 403
        assert auth.SESSION_COOKIE not in r.cookies
        assert r.error is not None
        assert "another site" in r.error
        assert r.token  # a fresh form to log in with
    assert authenticate.calls == []
    ok = browser.login(*RIGHT)
    assert ok.status == 302
    assert ok.headers["Location"] == "/signoff"
    assert logged_in(provider, ok) == "alice"


def test_lockout_refuses_without_checking_the_password(
    served: tuple[int, Authenticate, LoginThrottle], clock: Clock, provider: DatabaseAuthProvider
) -> None:
    port, authenticate, _ = served
    browser = Client(port, "10.0.0.1")
    for _ in range(5):
        r = browser.login("alice", "guess")
        assert (r.status, r.error) == (401, "Wrong user name or password.")
    assert len(authenticate.calls) == 5
    locked = browser.login(*RIGHT)  # even the right password
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "30"
    assert locked.error == "Too many failed logins: please try again in 30 s."
    assert auth.SESSION_COOKIE not in locked.cookies
    assert len(authenticate.calls) == 5  # no password checked
    # another address is refused for that name too; the refusal says nothing of the name
    elsewhere = Client(port, "10.0.0.2")
    assert elsewhere.login(*RIGHT).status == 429
    clock.advance(29.0)
    assert elsewhere.login(*RIGHT).headers["Retry-After"] == "1"
    clock.advance(1.0)
    ok = elsewhere.login(*RIGHT)
    assert ok.status == 302
    assert logged_in(provider, ok) == "alice"
    assert len(authenticate.calls) == 6


def test_refusal_does_not_tell_whether_the_user_exists(
    served: tuple[int, Authenticate, LoginThrottle],
) -> None:
    port, authenticate, _ = served
    answers = []
    for i, name in enumerate(("alice", "nobody-by-this-name")):
        browser = Client(port, f"10.0.{i}.1")
        wrong = [browser.login(name, "guess") for _ in range(5)]
        locked = browser.login(name, "guess")
        answers.append(
            [(r.status, r.error) for r in wrong]
            + [(locked.status, locked.error, locked.headers["Retry-After"])]
        )
    assert answers[0] == answers[1]
    assert len(authenticate.calls) == 10


def test_address_lockout_from_many_names(
    served: tuple[int, Authenticate, LoginThrottle], clock: Clock
) -> None:
    port, authenticate, throttle = served
    spray = Client(port, "10.9.9.9")
    for name in ("u1", "u2", "u3", "u4", "u5"):
        assert spray.login(name, "guess").status == 401
    assert spray.login(*RIGHT).status == 429  # a right password from there waits too
    assert Client(port, "10.9.9.8").login(*RIGHT).status == 302  # alice elsewhere: fine
    assert len(authenticate.calls) == 6
    assert throttle.retry_after("u6", "10.9.9.9") == 30.0


# --------------------------------------------------------------------- where a login leads
#: ``next`` values (as the handler reads them, decoded once) that must not lead off the site:
#: browsers drop tabs and newlines anywhere in a URL, strip leading C0 controls and spaces, and
#: read a backslash as a slash, so each of these is, or becomes, another origin.
OFF_SITE = [
    "/\t/evil.example",  # the issue's /login?next=/%09/evil.example
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\t\t/evil.example/signoff",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "/\t\\evil.example",
    "\x00//evil.example",
    "\x1f//evil.example",
    "http://evil.example/",
    "HTTP://evil.example/",
    "https:evil.example",
    "https:\\\\evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http:///evil.example",
]
#: ``next`` values that stay on the site but are refused all the same (``/`` instead).
REFUSED = [
    "",
    "evil.example",  # relative: where it leads depends on the login page's own path
    "/\x00/evil.example",  # a control character (Tornado refuses it in a header)
    "/\u3000/evil.example",  # not ASCII: refused rather than guessed at
    "/" + "x" * 3000,  # long
]
#: Same-origin paths a login may lead back to, unchanged.
SAME_SITE = [
    "/",
    "/signoff",
    "/qam?exp=12&run=3",
    "/runsummary#top",
    "/%2F/evil.example",  # an encoded slash is part of the path, not a separator
    "/%09/evil.example",  # an encoded tab too
    "/signoff?next=//evil.example",  # a query may hold anything URL-safe
]


def browser_destination(base: str, location: str) -> tuple[str, str]:
    """(scheme, host) a browser at ``base`` (http or https) goes to for a redirect to
    ``location``, as the WHATWG URL parser reads it (Python's urljoin does not: it keeps tabs,
    backslashes and extra slashes)."""
    loc = location.strip("".join(map(chr, range(0x21))))
    loc = re.sub(r"[\t\n\r]", "", loc)
    own = urllib.parse.urlsplit(base)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", loc)
    if scheme is not None and scheme.group(1).lower() not in ("http", "https", "ws", "wss"):
        return scheme.group(1).lower(), ""  # javascript:, data:, ...: not this site
    loc = loc.replace("\\", "/")  # special schemes: a backslash is a slash
    if scheme is not None:
        name, loc = scheme.group(1).lower(), loc[scheme.end() :]
        if name != own.scheme or loc.startswith("//"):
            return name, re.split(r"[/?#]", loc.lstrip("/"))[0].lower()
    if loc.startswith("//"):  # any number of slashes before the host
        return own.scheme, re.split(r"[/?#]", loc.lstrip("/"))[0].lower()
    return own.scheme, own.netloc


@pytest.mark.parametrize("value", OFF_SITE)
def test_next_off_site_goes_home(value: str) -> None:
    base = "http://dq.example:5006/login"
    assert browser_destination(base, value) != ("http", "dq.example:5006")  # the test's premise
    assert auth.safe_next(value) == "/"
    assert browser_destination(base, "/") == ("http", "dq.example:5006")


@pytest.mark.parametrize("value", REFUSED)
def test_next_refused_goes_home(value: str) -> None:
    assert auth.safe_next(value) == "/"


@pytest.mark.parametrize("value", SAME_SITE)
def test_next_same_site_kept(value: str) -> None:
    assert browser_destination("https://dq.example/login", value) == ("https", "dq.example")
    assert auth.safe_next(value) == value
    assert auth.safe_next(None) == "/"


def test_login_never_redirects_off_site(
    served: tuple[int, Authenticate, LoginThrottle], provider: DatabaseAuthProvider
) -> None:
    """A real login through the form with each ``next``: the form carries a safe one, and the
    POST's redirect (which reads ``next`` from the query too) stays on the site."""
    port, _, _ = served
    base = f"http://127.0.0.1:{port}/login"
    for value in [*OFF_SITE, *REFUSED[:-1], "%2F%09%2Fevil.example", "/%2509/evil.example"]:
        browser = Client(port)
        path = "/login?next=" + urllib.parse.quote(value, safe="%")
        form = browser.request("GET", path=path)
        assert form.status == 200
        hidden = re.search(r'name="next" value="([^"]*)"', form.body)
        assert hidden is not None
        ok = browser.request(
            "POST",
            {"username": RIGHT[0], "password": RIGHT[1], "_xsrf": form.token},
            path=path,
        )
        assert ok.status == 302, value
        location = ok.headers["Location"]
        assert browser_destination(base, location) == ("http", f"127.0.0.1:{port}"), value
        assert browser_destination(base, html.unescape(hidden.group(1))) == (
            "http",
            f"127.0.0.1:{port}",
        ), value
        assert logged_in(provider, ok) == "alice"


# ------------------------------------------------------------- sessions in the database
@pytest.fixture
def qa(db_url: str) -> Iterator[QADatabase]:
    """A new QA database (SQLite or PostgreSQL) with alice (expert of CDC) and boss."""
    db = QADatabase(db_url, author="admin")
    db.users.add("alice", "alice-secret-1", "expert", ["CDC"])
    db.users.add("boss", "boss-secret-1", "manager")
    yield db
    db.close()


def _stored_sessions(db: QADatabase) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM qa_sessions")).all()]


def test_session_opened_found_and_closed(qa: QADatabase) -> None:
    token, session = qa.sessions.open("alice")
    assert isinstance(session, store.Session)
    assert session.user == qa.users.get("alice")
    assert session.id == store.session_id(token) != token
    assert session.expires > session.created
    assert qa.sessions.find(token) == session
    assert qa.sessions.get(session.id) == session
    assert qa.sessions.find(session.id) is None  # the id is no credential
    assert qa.sessions.find("") is None
    # the database holds the token's hash, never the token
    rows = _stored_sessions(qa)
    assert len(rows) == 1
    assert not any(token in str(v) for v in rows[0])
    # every login is a session of its own: ending one leaves the others
    other_token, other = qa.sessions.open("alice")
    assert other.id != session.id
    assert qa.sessions.alive([session.id, other.id, "no-such-id"]) == {session.id, other.id}
    assert qa.sessions.close(session.id)
    assert not qa.sessions.close(session.id)
    assert qa.sessions.find(token) is None
    assert qa.sessions.get(session.id) is None
    assert qa.sessions.find(other_token) == other
    assert qa.sessions.alive([session.id, other.id]) == {other.id}


def test_session_needs_a_user_and_a_lifetime(qa: QADatabase) -> None:
    with pytest.raises(QAError, match="no user 'nobody'"):
        qa.sessions.open("nobody")
    with pytest.raises(QAError, match="lifetime"):
        qa.sessions.open("alice", lifetime=0.0)
    assert _stored_sessions(qa) == []


def test_session_ends_when_it_expires(qa: QADatabase) -> None:
    token, session = qa.sessions.open("alice", lifetime=3600.0)
    assert (session.expires - session.created).total_seconds() == pytest.approx(3600.0)
    kept_token, kept = qa.sessions.open("boss")
    past = datetime.now(UTC) - timedelta(seconds=1)
    with qa.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE qa_sessions SET expires = :t WHERE id = :i"),
            {"t": past, "i": session.id},
        )
    assert qa.sessions.find(token) is None
    assert qa.sessions.alive([session.id, kept.id]) == {kept.id}
    assert qa.sessions.purge() == 1  # expired rows are dropped
    assert len(_stored_sessions(qa)) == 1
    assert qa.sessions.find(kept_token) == kept


#: Changes of a user (``name``, an expert of CDC whose password is ``<name>-secret-1``) that end
#: their sessions, through the library or behind its back in SQL.
CHANGES = {
    "removed": lambda db, name: db.users.remove(name),
    "removed and added again": lambda db, name: (
        db.users.remove(name),
        db.users.add(name, f"{name}-secret-1", "expert", ["CDC"]),
    ),
    "new password": lambda db, name: db.users.set_password(name, f"{name}-secret-2"),
    "same password set again": lambda db, name: db.users.set_password(name, f"{name}-secret-1"),
    "new role": lambda db, name: _sql(
        db, "UPDATE qa_users SET role = 'manager', detectors = '' WHERE name = :n", name
    ),
    "new detectors": lambda db, name: _sql(
        db, "UPDATE qa_users SET detectors = 'CDC,ECL' WHERE name = :n", name
    ),
}


def _sql(db: QADatabase, sql: str, name: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(sql), {"n": name})


@pytest.mark.parametrize("change", CHANGES)
def test_sessions_end_when_the_user_changes(qa: QADatabase, change: str) -> None:
    """Removal, a password or a role change ends every session of the user at once, however
    it was made; other users' sessions stay."""
    tokens = [qa.sessions.open("alice")[0] for _ in range(2)]
    boss_token, boss = qa.sessions.open("boss")
    CHANGES[change](qa, "alice")
    assert [qa.sessions.find(t) for t in tokens] == [None, None]
    assert qa.sessions.find(boss_token) == boss


def test_sessions_shared_by_processes(qa: QADatabase) -> None:
    """Another process on the same database (another engine) sees a session open and end at
    once: nothing is cached."""
    other = QADatabase(qa.url)
    try:
        token, session = qa.sessions.open("alice")
        assert other.sessions.find(token) == session
        assert other.sessions.close(session.id)
        assert qa.sessions.find(token) is None
        token, session = other.sessions.open("alice")
        assert qa.sessions.find(token) == session
        qa.users.remove("alice")
        assert other.sessions.find(token) is None
    finally:
        other.close()


# ------------------------------------------------------------ the served dashboards
# building the pages in this process: Bokeh's ColumnDataSource.from_df calls
# reset_index(inplace=True), deprecated by pandas 3.1
APP_WARNINGS = pytest.mark.filterwarnings("ignore:The inplace keyword:pandas.errors.Pandas4Warning")


class AppServer:
    """:func:`b2calib_apps.serve.make_server` on a thread of this process, so that a test can
    walk its route table; ``with AppServer(db) as s: s.port``."""

    def __init__(self, db: QADatabase, **options: Any) -> None:
        self.db = db
        self.options = options
        self.port = free_port()
        self.server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AppServer:
        from b2calib_apps.serve import make_server

        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self.server = make_server(self.db, port=self.port, **self.options)
            except BaseException as err:  # reported by __enter__
                failed.append(err)
                started.set()
                return
            started.set()
            self.server.io_loop.start()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert started.wait(timeout=60)
        if failed:
            raise failed[0]
        return self

    @property
    def rules(self) -> list[Any]:
        """The Tornado rules of every route the server answers."""
        rules: list[Any] = self.server._tornado.wildcard_router.rules
        return rules

    def __exit__(self, *exc: object) -> None:
        loop = self.server.io_loop

        def stop() -> None:
            self.server.stop()
            loop.stop()

        loop.add_callback(stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def app_db(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QADatabase]:
    """An SQLite QA database with the sample's runs and the browser tests' users."""
    db = QADatabase(f"sqlite:///{tmp_path_factory.mktemp('apps') / 'qa.sqlite'}", author="admin")
    db.runs.import_runs(RunRegistry.load(sample / "runs.json"))
    for name, (password, role, dets) in USERS.items():
        db.users.add(name, password, role, dets)
    yield db
    db.close()


@pytest.fixture(scope="module")
def app_server(app_db: QADatabase) -> Iterator[AppServer]:
    """The dashboards in this process; open pages are checked on every message only (the
    periodic check is an hour away)."""
    options = {"session_check": 3600.0} if _has_session_check() else {}
    with AppServer(app_db, **options) as s:
        yield s


def _has_session_check() -> bool:
    import inspect

    from b2calib_apps.serve import make_server

    return "session_check" in inspect.signature(make_server).parameters


class ServerLog(logging.Handler):
    """Records what the server logs at ERROR (a traceback is logged at ERROR)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ServerLog:
        for name in ("tornado", "bokeh", "panel"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("tornado", "bokeh", "panel"):
            logging.getLogger(name).removeHandler(self)

    def errors(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()} {r.exc_info[1] if r.exc_info else ''}"
            for r in self.records
        ]


#: What each capture group of a route is given: harmless, a module to import, a traversal.
GROUP_SAMPLES = [
    "js/bokeh.min.js",
    "x",
    "this/Component/_css/x.css",
    "this/a/b/c",
    "..%2f..%2fetc%2fpasswd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd/a/b",
    "%2e%2e/%2e%2e/etc/passwd",
    "os/path/_css/..%2f..%2f..%2fetc%2fpasswd",
]
WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Protocol": "bokeh, not-a-token",
}
#: Handlers anybody may reach: the login and logout pages, the favicon and static assets.
PUBLIC = ("LoginHandler", "LogoutHandler", "IcoHandler", "StaticHandler", "MultiRootStaticHandler")


def route_paths(rule: Any) -> list[str]:
    """Request paths that a rule of the route table matches: each capture group filled with
    each of :data:`GROUP_SAMPLES`, an optional trailing slash left out and put in."""
    pattern = rule.matcher.regex.pattern
    template = pattern.removesuffix("$").replace("(?!extensions/)", "")
    assert re.sub(r"\(\.\*\)", "", template).find("(") < 0, f"cannot fill {pattern!r}"
    optional_slash = template.endswith("/?")
    templates = [template[:-2] or "/", template[:-1]] if optional_slash else [template]
    samples = GROUP_SAMPLES if "(.*)" in template else [""]
    paths = sorted({t.replace("(.*)", sample) for t in templates for sample in samples})
    for path in paths:
        assert rule.matcher.regex.match(path), (pattern, path)
    return paths


def is_public(rule: Any) -> bool:
    return rule.target.__name__ in PUBLIC or any(
        cls.__name__ in PUBLIC[2:] for cls in rule.target.__mro__
    )


def is_websocket(rule: Any) -> bool:
    from tornado.websocket import WebSocketHandler

    return issubclass(rule.target, WebSocketHandler)


def walk(
    server: AppServer, client: Client, skip: tuple[str, ...] = ()
) -> list[tuple[str, str, Response]]:
    """Every route of the server but those of the handlers in ``skip``, requested with each of
    its sample paths."""
    answers = []
    for rule in server.rules:
        if rule.target.__name__ in skip:
            continue
        for path in route_paths(rule):
            headers = dict(WS_HEADERS) if is_websocket(rule) else None
            if headers:
                headers["Origin"] = f"http://127.0.0.1:{server.port}"
            answers.append((rule.target.__name__, path, client.get(path, headers=headers)))
    return answers


@APP_WARNINGS
def test_every_route_but_login_and_assets_needs_a_session(app_server: AppServer) -> None:
    """Walk the route table: without a login, a page or anything else but the login, logout,
    favicon and static assets redirects to the login page (GET) or is refused (websocket); no
    request makes the server import a module or answer 500 with a traceback."""
    sys.modules.pop("this", None)
    names = {rule.target.__name__ for rule in app_server.rules}
    assert {"LoginHandler", "LogoutHandler", "ComponentResourceHandler"} <= {
        cls.__name__ for rule in app_server.rules for cls in rule.target.__mro__
    }, names
    with ServerLog() as log:
        answers = walk(app_server, Client(app_server.port))
    public = {rule.target.__name__ for rule in app_server.rules if is_public(rule)}
    refused = []
    for name, path, r in answers:
        assert r.status != 500, (name, path, r.body[:300])
        if name in public:
            continue
        if r.status == 302:
            assert re.match(r"\.?/login\?next=%2F", r.headers["Location"]), (path, r.headers)
        else:
            assert r.status == 403, (name, path, r.status)
        refused.append(path)
    assert "/components/this/Component/_css/x.css" in refused
    assert {"/", "/qam", "/signoff", "/runsummary", "/ws", "/qam/ws", "/metadata"} <= set(refused)
    assert "this" not in sys.modules
    assert log.errors() == []


@APP_WARNINGS
def test_routes_with_a_session_import_nothing_and_never_fail(app_server: AppServer) -> None:
    """Logged in, the component handler still imports no module and a traversal is a 404, not
    a 500 with a traceback; the pages answer."""
    sys.modules.pop("this", None)
    client = Client(app_server.port)
    assert client.login("vic", USERS["vic"][0]).status == 302
    with ServerLog() as log:
        answers = walk(app_server, client, skip=("LogoutHandler",))
    for name, path, r in answers:
        assert r.status < 500, (name, path, r.status, r.body[:300])
        if path.startswith("/components/"):
            assert r.status in (403, 404), (path, r.status)
    pages = {path: r.status for _, path, r in answers if path in ("/", "/qam", "/signoff/")}
    assert set(pages.values()) == {200}, pages
    assert "this" not in sys.modules
    assert log.errors() == []


@APP_WARNINGS
def test_routes_added_later_are_guarded(app_db: QADatabase) -> None:
    """A handler added to the running server (``add_handlers``: a nested router) needs a
    session too."""

    class Late(RequestHandler):
        def get(self) -> None:
            self.write("late")

    with AppServer(app_db, session_check=3600.0) as server:
        added = threading.Event()

        def add() -> None:
            server.server._tornado.add_handlers(r".*", [(r"/late", Late)])
            added.set()

        server.server.io_loop.add_callback(add)
        assert added.wait(timeout=30)
        refused = Client(server.port).get("/late")
        assert refused.status == 302
        assert refused.headers["Location"] == "/login?next=%2Flate"
        answered = _login(server, "vic").get("/late")
        assert (answered.status, answered.body) == (200, "late")


def _login(server: AppServer, name: str) -> Client:
    client = Client(server.port)
    r = client.login(name, USERS[name][0] if name in USERS else f"{name}-secret-1")
    assert r.status == 302, r.body
    return client


def _opens(client: Client | dict[str, str], port: int, path: str = "/signoff") -> bool:
    """Whether a page opens with these cookies (False: sent to the login page)."""
    if isinstance(client, dict):
        jar, client = client, Client(port)
        client.cookies = dict(jar)
    r = client.get(path)
    if r.status == 302:
        assert "login?next=" in r.headers["Location"]
        return False
    assert r.status == 200, r.status
    return True


@APP_WARNINGS
def test_logout_ends_the_session_for_a_copied_cookie(app_server: AppServer) -> None:
    browser = _login(app_server, "alice")
    copied = dict(browser.cookies)
    assert _opens(copied, app_server.port)
    r = browser.get("/logout")
    assert r.status == 200
    assert not _opens(browser, app_server.port)
    assert not _opens(copied, app_server.port)  # the copy ends with the login it copied
    for path in ("/", "/qam", "/runsummary"):
        assert not _opens(copied, app_server.port, path)
    # a new login is a new session
    assert _opens(_login(app_server, "alice"), app_server.port)


@APP_WARNINGS
@pytest.mark.parametrize("change", CHANGES)
def test_pages_closed_when_the_user_changes(
    app_server: AppServer, app_db: QADatabase, change: str
) -> None:
    app_db.users.add("alice2", "alice2-secret-1", "expert", ["CDC"])
    try:
        other = _login(app_server, "boss")
        browser = _login(app_server, "alice2")
        assert _opens(browser, app_server.port)
        CHANGES[change](app_db, "alice2")
        assert not _opens(browser, app_server.port)
        assert _opens(other, app_server.port)
    finally:
        if any(u.name == "alice2" for u in app_db.users.all()):
            app_db.users.remove("alice2")


@APP_WARNINGS
def test_session_cookie_never_reaches_the_page(app_server: AppServer) -> None:
    """The HttpOnly login cookie stays out of the page: Bokeh's session token (in the page's
    HTML, readable by scripts) carries no cookie, nor the Cookie header."""
    from bokeh.util.token import get_token_payload

    browser = _login(app_server, "vic")
    r = browser.get("/signoff")
    assert r.status == 200
    payload = get_token_payload(page_token(r.body))
    assert payload.get("cookies", {}) == {}
    assert "Cookie" not in payload.get("headers", {})
    for value in browser.cookies.values():
        assert value not in r.body
        assert value not in json.dumps(payload)


def page_token(body: str) -> str:
    """Bokeh's session token in a served page."""
    m = re.search(r'"token":\s*"([^"]+)"', body)
    assert m is not None, body[:500]
    return m.group(1)


async def ws_open(port: int, app: str, client: Client, token: str) -> Any:
    """A websocket to a page's Bokeh session, with the client's cookies and its ACK read."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Origin": f"http://127.0.0.1:{port}"}
    if client.cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    request = HTTPRequest(f"ws://127.0.0.1:{port}{app}/ws", headers=headers)
    conn = await websocket_connect(request, subprotocols=["bokeh", token])
    try:
        header = await asyncio.wait_for(conn.read_message(), 30)
        assert header is not None, "the server closed the websocket"
        assert json.loads(header)["msgtype"] == "ACK"
        for _ in range(2):
            await asyncio.wait_for(conn.read_message(), 30)
    except BaseException:
        await ws_close(conn)
        raise
    return conn


async def ws_close(conn: Any) -> None:
    """Close a websocket and, unless it was closed already, wait until the server answered
    (then the socket is closed, and no ResourceWarning follows)."""
    protocol = conn.protocol
    conn.close()
    if protocol is not None and not protocol.stream.closed():
        while await asyncio.wait_for(conn.read_message(), 30) is not None:
            pass


async def ws_ask(conn: Any) -> str | None:
    """Send SERVER-INFO-REQ; the reply's type, or None when the server closed the socket."""
    for fragment in ({"msgid": "t1", "msgtype": "SERVER-INFO-REQ"}, {}, {}):
        try:
            await conn.write_message(json.dumps(fragment))
        except Exception:  # closed while sending
            return None
    header = await asyncio.wait_for(conn.read_message(), 30)
    if header is None:
        return None
    for _ in range(2):
        await asyncio.wait_for(conn.read_message(), 30)
    msgtype: str = json.loads(header)["msgtype"]
    return msgtype


@APP_WARNINGS
def test_websocket_checks_the_session_on_every_message(app_server: AppServer) -> None:
    """An open page whose login ends (logged out elsewhere with a copy of its cookie) is cut off
    at its next message: the server closes its websocket before acting on it."""
    browser = _login(app_server, "alice")
    page = browser.get("/signoff")
    assert page.status == 200

    async def scenario() -> tuple[str | None, str | None, int | None]:
        conn = await ws_open(app_server.port, "/signoff", browser, page_token(page.body))
        before = await ws_ask(conn)
        elsewhere = Client(app_server.port)
        elsewhere.cookies = dict(browser.cookies)
        assert elsewhere.get("/logout").status == 200
        after = await ws_ask(conn)
        code = conn.close_code
        await ws_close(conn)
        return before, after, code

    before, after, code = asyncio.run(scenario())
    assert before == "SERVER-INFO-REPLY"
    assert after is None
    assert code == 1008


@APP_WARNINGS
def test_websocket_refused_without_the_page_s_session(app_server: AppServer) -> None:
    """A websocket opens only for the login its page was made for, and only to a session this
    server made: another login's cookie, no cookie, or a page of before a restart are refused."""
    from tornado.httpclient import HTTPClientError
    from tornado.websocket import WebSocketError

    alice, boss = _login(app_server, "alice"), _login(app_server, "boss")
    token = page_token(alice.get("/signoff").body)

    async def refused(client: Client, token: str) -> bool:
        try:
            conn = await ws_open(app_server.port, "/signoff", client, token)
        except (HTTPClientError, WebSocketError, AssertionError):
            return True
        answer = await ws_ask(conn)
        await ws_close(conn)
        return answer is None

    assert asyncio.run(refused(boss, token))
    assert asyncio.run(refused(Client(app_server.port), token))
    # a page made by a server of before a restart (same secret: a token signed alike, for a
    # Bokeh session this process never made)
    from bokeh.util.token import generate_jwt_token, generate_session_id, get_token_payload

    tornado_app = app_server.server._tornado
    payload = get_token_payload(token)
    payload.pop("session_expiry", None)
    old = generate_jwt_token(
        generate_session_id(tornado_app.secret_key, tornado_app.sign_sessions),
        secret_key=tornado_app.secret_key,
        signed=tornado_app.sign_sessions,
        extra_payload=payload,
    )
    assert asyncio.run(refused(alice, old))
    assert not asyncio.run(refused(alice, page_token(alice.get("/signoff").body)))


@APP_WARNINGS
def test_open_pages_closed_soon_after_the_session_ends(app_db: QADatabase) -> None:
    """The periodic check closes the websocket of a page whose login ended (here: the user was
    removed) without waiting for the page to send anything."""
    app_db.users.add("carol", "carol-secret-1", "viewer")
    try:
        with AppServer(app_db, session_check=0.2) as server:
            browser = _login(server, "carol")
            page = browser.get("/")
            assert page.status == 200

            async def scenario() -> tuple[str | None, float]:
                conn = await ws_open(server.port, "", browser, page_token(page.body))
                app_db.users.remove("carol")
                start = time.monotonic()
                closed = await asyncio.wait_for(conn.read_message(), 20)
                await ws_close(conn)
                return closed, time.monotonic() - start

            closed, waited = asyncio.run(scenario())
            assert closed is None
            assert waited < 10
    finally:
        if any(u.name == "carol" for u in app_db.users.all()):
            app_db.users.remove("carol")


# ----------------------------------------------------- several server processes, one database
@pytest.mark.slow
def test_sessions_end_across_server_processes(db_url: str, sample: Path) -> None:
    """Two ``b2calib serve`` processes sharing the database and the cookie secret (behind one
    load balancer): a login made on one opens pages on the other; its logout on one ends it on
    both at once; removing a user ends their logins everywhere."""
    url = db_url
    db = QADatabase(url, author="admin")
    db.runs.import_runs(RunRegistry.load(sample / "runs.json"))
    for name, (password, role, dets) in USERS.items():
        db.users.add(name, password, role, dets)
    secret = ("--cookie-secret", "shared-secret-of-both-processes")
    try:
        with Server(url, *secret) as one, Server(url, *secret) as two:
            alice = Client(one.port)
            assert alice.login("alice", USERS["alice"][0]).status == 302
            copied = dict(alice.cookies)
            assert _opens(copied, two.port)
            assert alice.get("/logout").status == 200
            assert not _opens(copied, two.port)
            assert not _opens(copied, one.port)
            vic = Client(two.port)
            assert vic.login("vic", USERS["vic"][0]).status == 302
            assert _opens(dict(vic.cookies), one.port)
            db.users.remove("vic")
            assert not _opens(dict(vic.cookies), one.port)
            assert not _opens(dict(vic.cookies), two.port)
    finally:
        db.close()
