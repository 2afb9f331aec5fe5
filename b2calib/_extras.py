"""Optional dependencies: the stacks a feature needs beyond the core, and the extra that
installs them.

The core (simulate, read, collect, fit, calibrate, the conditions and QA databases on SQLite,
the command line) imports none of them. A feature that needs one imports it through
:func:`require`, which says what to install when it is missing, as uproot's ``extras`` do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from b2calib.exceptions import MissingExtraError

__all__ = ["EXTRAS", "require"]

#: Top-level module -> the extra of b2calib that installs it.
EXTRAS: dict[str, str] = {
    "panel": "dashboards",
    "holoviews": "dashboards",
    "bokeh": "dashboards",
    "param": "dashboards",
    "pandas": "dashboards",
    "tornado": "dashboards",
    "b2calib_apps": "dashboards",
    "distributed": "dask",
    "dask": "dask",
    "dask_jobqueue": "dask",
    "psycopg": "postgres",
    "b2luigi": "prompt",
    "luigi": "prompt",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` naming the
    extra to install.

    Parameters
    ----------
    module
        The module to import (``"holoviews"``, ``"distributed"`` ...); its top-level package
        must be in :data:`EXTRAS`.
    feature
        What needs it, for the message (``"plot_fit"``, ``"the Dask executor"``).
    """
    top = module.partition(".")[0]
    extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and err.name.partition(".")[0] != top:
            raise  # the module is there but something it needs is broken: show that
        raise MissingExtraError(
            f"{feature} needs {top}, which is not installed: pip install 'b2calib[{extra}]'"
        ) from err


def __dir__() -> list[str]:
    return __all__
