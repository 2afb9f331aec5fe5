"""Serve every app and the index page on one port, behind the database login.

:func:`make_server` builds the Bokeh/Panel server (``b2calib serve`` runs it): every route but
the login page and the static assets needs a live session (:mod:`b2calib_apps.auth`), the
pages' websockets are checked against the database on every message and every few seconds, and
a page whose connection is lost says so and blocks its controls until it is reloaded
(:func:`b2calib_apps._common.block_when_disconnected`). :func:`current_database` is how a page
finds the database the server was started with, :func:`current_conditions` the conditions
database of the same URL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import panel as pn
from tornado.ioloop import PeriodicCallback

from b2calib.exceptions import ConfigError

from ._common import block_when_disconnected, replace_history_state
from .auth import DatabaseAuthProvider

__all__ = ["APPS", "current_conditions", "current_database", "make_server"]

#: URL path -> (title, module) of the served apps ("" is the index).
APPS: dict[str, tuple[str, str]] = {
    "": ("b2calib workbench", "b2calib_apps.index"),
    "qam": ("b2calib QAM", "b2calib_apps.qam"),
    "signoff": ("b2calib sign-off", "b2calib_apps.signoff"),
    "runsummary": ("b2calib run summary", "b2calib_apps.runsummary"),
    "payloads": ("b2calib payload validation", "b2calib_apps.payloads"),
    "conditions": ("b2calib conditions", "b2calib_apps.conditions"),
}

_SERVED: dict[str, Any] = {"db": None, "conditions": None}


def current_database() -> Any:
    """The QA database of this server (the default database when none was configured)."""
    if _SERVED["db"] is None:
        from b2calib.qa.store import QADatabase

        _SERVED["db"] = QADatabase()
    return _SERVED["db"]


def current_conditions() -> Any:
    """The conditions database of this server: a ConditionsDB on the URL of
    :func:`current_database` (made once, shared by the pages)."""
    if _SERVED["conditions"] is None:
        from b2calib.conditions import ConditionsDB

        _SERVED["conditions"] = ConditionsDB(current_database().url)
    return _SERVED["conditions"]


def _page(module: str) -> Callable[[], pn.viewable.Viewable]:
    def page() -> pn.viewable.Viewable:
        import importlib

        built: pn.viewable.Viewable = importlib.import_module(module).app()
        block_when_disconnected(pn.state.curdoc)
        replace_history_state(pn.state.curdoc)
        return built

    return page


def _derived_key(secret: str, purpose: str) -> bytes:
    """A key for ``purpose`` derived from the cookie secret (one secret to configure)."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest().encode()


def make_server(
    db: Any,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_anonymous: bool = False,
    cookie_secret: str | None = None,
    websocket_origins: Sequence[str] = (),
    session_check: float = 5.0,
    start: bool = True,
) -> Any:
    """A Panel server of all apps against ``db`` (a QADatabase), login required.

    Parameters
    ----------
    db
        The QA database every page reads and writes.
    port, address
        Where to listen.
    allow_anonymous
        Let visitors read without logging in (they never write).
    cookie_secret
        Signs the session cookies (and, through a key derived from it, Bokeh's session
        tokens); a random one per start when not given (logins then end with the server).
        Several server processes behind one address share it (and the database).
    websocket_origins
        Further ``host:port`` origins allowed to open the websocket (the listening address
        and localhost are always allowed).
    session_check
        Seconds between two checks of the open pages' sessions: a page whose login ended
        (logout elsewhere, user removed or changed, expiry) is disconnected by then at the
        latest, or at its next message.
    start
        Start listening (the caller runs the IO loop).
    """
    if cookie_secret is not None and len(cookie_secret) < 16:
        raise ConfigError("--cookie-secret must have at least 16 characters")
    if not session_check > 0:
        raise ConfigError(
            f"session_check must be a positive number of seconds, not {session_check}"
        )
    secret = cookie_secret or secrets.token_urlsafe(32)
    _SERVED["db"] = db
    _SERVED["conditions"] = None
    provider = DatabaseAuthProvider(
        db.users.authenticate, db.sessions, secret, allow_anonymous=allow_anonymous
    )
    pages = {path or "/": _page(module) for path, (_, module) in APPS.items()}
    titles = {path or "/": title for path, (title, _) in APPS.items()}
    origins = {f"{host}:{port}" for host in (address, "localhost", "127.0.0.1")}
    origins.update(websocket_origins)
    server = pn.serve(
        pages,
        port=port,
        address=address,
        title=titles,
        show=False,
        start=False,
        cookie_secret=secret,
        auth_provider=provider,
        websocket_origin=sorted(origins),
        websocket_max_message_size=20 * 1024 * 1024,
        # Bokeh's session tokens are signed, so a page cannot claim another session; they are
        # embedded in the page, so they carry no cookie (the session's id comes in a header)
        sign_sessions=True,
        secret_key=_derived_key(secret, "bokeh session tokens"),
        include_cookies=[],
        exclude_headers=["Cookie"],
    )
    provider.guard(server._tornado)

    def check_sessions() -> None:
        provider.sweep()

    server.b2calib_session_check = PeriodicCallback(check_sessions, session_check * 1000.0)
    server.b2calib_session_check.start()
    if start:
        server.start()
    return server


def __dir__() -> list[str]:
    return __all__
