"""The login's guards (:mod:`b2calib_apps.auth`): the throttle of failed logins with a clock the
tests drive (nothing sleeps), and the login handler's XSRF check and throttling in a Tornado server
of this process with a stand-in for the database's ``authenticate``."""

from __future__ import annotations

import asyncio
import http.client
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

from b2calib.exceptions import B2CalibError
from b2calib_apps.auth import DatabaseAuthProvider, LoginThrottle, login_name

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
        self, method: str, form: dict[str, str] | None = None, *, https: bool = False
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"X-Real-Ip": self.address}
        if https:  # as a TLS-terminating proxy says
            hdrs["X-Forwarded-Proto"] = "https"
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, "/login?next=/signoff", body=body, headers=hdrs)
            raw = conn.getresponse()
            response = Response(raw.status, raw.headers, raw.read().decode())
        finally:
            conn.close()
        self.cookies.update({k: m.value for k, m in response.cookies.items()})
        return response

    def login(self, name: str, password: str, token: str | None = None) -> Response:
        """Open the form, then post it (with its token unless ``token`` is given)."""
        form = self.request("GET")
        return self.request(
            "POST",
            {"username": name, "password": password, "_xsrf": token or form.token},
        )


@pytest.fixture
def served(clock: Clock) -> Iterator[tuple[int, Authenticate, LoginThrottle]]:
    """The provider's login handler in a Tornado server on a thread of this process."""
    authenticate = Authenticate()
    throttle = LoginThrottle(clock=clock)
    provider = DatabaseAuthProvider(authenticate, SECRET, throttle=throttle)
    app = Application([(provider.login_url, provider.login_handler)], cookie_secret=SECRET)
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
    yield port, authenticate, throttle
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
    served: tuple[int, Authenticate, LoginThrottle],
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
        assert "user" not in r.cookies
        assert r.error is not None
        assert "another site" in r.error
        assert r.token  # a fresh form to log in with
    assert authenticate.calls == []
    ok = browser.login(*RIGHT)
    assert ok.status == 302
    assert ok.headers["Location"] == "/signoff"
    assert login_name(ok.cookies, SECRET) == "alice"


def test_lockout_refuses_without_checking_the_password(
    served: tuple[int, Authenticate, LoginThrottle], clock: Clock
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
    assert "user" not in locked.cookies
    assert len(authenticate.calls) == 5  # no password checked
    # another address is refused for that name too; the refusal says nothing of the name
    elsewhere = Client(port, "10.0.0.2")
    assert elsewhere.login(*RIGHT).status == 429
    clock.advance(29.0)
    assert elsewhere.login(*RIGHT).headers["Retry-After"] == "1"
    clock.advance(1.0)
    ok = elsewhere.login(*RIGHT)
    assert ok.status == 302
    assert login_name(ok.cookies, SECRET) == "alice"
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
