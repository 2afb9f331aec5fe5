"""Alembic environment of the b2calib database.

b2calib runs the migrations itself (:func:`b2calib.db.upgrade`) on a connection it opened,
passed in ``config.attributes["connection"]``. The migrations are frozen history: neither they
nor this file import a domain's tables. On the command line (``[tool.alembic]`` in
``pyproject.toml``; see :mod:`b2calib.db`) a developer names the database and, for
``--autogenerate``, the modules whose tables to compare with (importing them adds their tables
to the shared :data:`b2calib.db.metadata`)::

    -x url=sqlite:///dev.sqlite
    -x tables=b2calib.conditions.tables,b2calib.calibration.jobs,b2calib.qa.store.tables,\
b2calib.prompt.tables,b2calib.review.tables
"""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import create_engine

from b2calib.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # command-line use by developers
    options = context.get_x_argument(as_dictionary=True)
    for module in filter(None, options.get("tables", "").split(",")):
        importlib.import_module(module.strip())
    url = options.get("url", "sqlite:///conditions.sqlite")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
