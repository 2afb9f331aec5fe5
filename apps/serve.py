"""Serve every app and the index page on one port, behind the database login.

:func:`make_server` builds the Bokeh/Panel server (``b2calib serve`` runs it);
:func:`current_database` is how a page finds the database the server was started with.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

import panel as pn

from b2calib.exceptions import ConfigError

from .auth import DatabaseAuthProvider

__all__ = ["APPS", "current_database", "make_server"]

#: URL path -> (title, module) of the served apps ("" is the index).
APPS: dict[str, tuple[str, str]] = {
    "": ("b2calib data quality", "b2calib_apps.index"),
    "qam": ("b2calib QAM", "b2calib_apps.qam"),
    "signoff": ("b2calib sign-off", "b2calib_apps.signoff"),
    "runsummary": ("b2calib run summary", "b2calib_apps.runsummary"),
}

_SERVED: dict[str, Any] = {"db": None}


def current_database() -> Any:
    """The QA database of this server (the default database when none was configured)."""
    if _SERVED["db"] is None:
        from b2calib.qa.store import QADatabase

        _SERVED["db"] = QADatabase()
    return _SERVED["db"]


def _page(module: str) -> Callable[[], pn.viewable.Viewable]:
    def page() -> pn.viewable.Viewable:
        import importlib

        built: pn.viewable.Viewable = importlib.import_module(module).app()
        return built

    return page


def make_server(
    db: Any,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_anonymous: bool = False,
    cookie_secret: str | None = None,
    websocket_origins: Sequence[str] = (),
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
        Signs the login cookies; a random one per start when not given (logins then end
        with the server).
    websocket_origins
        Further ``host:port`` origins allowed to open the websocket (the listening address
        and localhost are always allowed).
    start
        Start listening (the caller runs the IO loop).
    """
    if cookie_secret is not None and len(cookie_secret) < 16:
        raise ConfigError("--cookie-secret must have at least 16 characters")
    secret = cookie_secret or secrets.token_urlsafe(32)
    _SERVED["db"] = db
    provider = DatabaseAuthProvider(db.users.authenticate, secret, allow_anonymous=allow_anonymous)
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
    )
    if start:
        server.start()
    return server


def __dir__() -> list[str]:
    return __all__
