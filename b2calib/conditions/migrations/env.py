"""Alembic environment of the conditions database.

b2calib runs the migrations itself (:func:`b2calib.conditions.database.upgrade`) on a connection
it opened, passed in ``config.attributes["connection"]``; there is no alembic.ini. Developers
add a revision with ``alembic -x url=sqlite:///dev.sqlite revision -m "..."`` from this folder's
parent after writing the change in ``schema.py``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from b2calib.conditions.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # command-line use by developers
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///conditions.sqlite")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
