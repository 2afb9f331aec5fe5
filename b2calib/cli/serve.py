"""``b2calib serve``: the QA dashboards (QAM, sign-off, run summary) and their index on one port.

Panel and the apps are imported only when the command runs, so the rest of the command line
starts without them.
"""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
@click.option(
    "--db",
    "url",
    default=None,
    help="Database URL or SQLite path (default: the embedded database).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5006,
    show_default=True,
    help="Port to listen on.",
)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--allow-anonymous",
    is_flag=True,
    help="Let visitors read without logging in (they can never write).",
)
@click.option(
    "--cookie-secret",
    envvar="B2CALIB_COOKIE_SECRET",
    default=None,
    help="Secret signing login cookies (env B2CALIB_COOKIE_SECRET); random per start when "
    "not given, so logins then end with the server.",
)
@click.option(
    "--websocket-origin",
    "origins",
    multiple=True,
    help="Further HOST:PORT the pages may be opened from (e.g. behind a proxy).",
)
def serve(
    url: str | None,
    port: int,
    address: str,
    allow_anonymous: bool,
    cookie_secret: str | None,
    origins: tuple[str, ...],
) -> None:
    """Serve the QA dashboards; login required (accounts: `b2calib user add`)."""
    from b2calib._extras import require
    from b2calib.qa.store import QADatabase

    require("panel", "b2calib serve")  # the dashboards extra, before anything imports Panel
    make_server = require("b2calib_apps.serve", "b2calib serve").make_server

    db = QADatabase(url)
    server = make_server(
        db,
        port=port,
        address=address,
        allow_anonymous=allow_anonymous,
        cookie_secret=cookie_secret,
        websocket_origins=origins,
    )
    access = "anonymous read allowed" if allow_anonymous else "login required"
    click.echo(f"serving on http://{address}:{server.port}/ ({access})", err=False)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.stop()


def __dir__() -> list[str]:
    return __all__
