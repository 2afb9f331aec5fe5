"""Lazy exports of a package (PEP 562): a name is imported from its module on first use.

``import b2calib`` (or ``b2calib.conditions``, ``b2calib.qa``) must not load the database, I/O
or plotting stacks before they are used, yet each package keeps its short public names
(``from b2calib.conditions import ConditionsDB``). A package states its names once per module
in :func:`attach`; its ``if TYPE_CHECKING:`` block imports the same names for type checkers and
its ``__all__`` lists them (``tests/test_public_api.py`` checks that the three agree).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["attach"]


def attach(package: str, names: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` exporting ``names`` (the package keeps its
    literal ``__all__`` and ``__dir__``).

    Parameters
    ----------
    package
        The package's ``__name__``.
    names
        Module (relative to the package, ``""`` for a submodule exported by its own name)
        -> the names it exports, e.g. ``{"database": ["ConditionsDB"], "": ["geometry"]}``.
    """
    where = {
        name: (f"{package}.{module}" if module else f"{package}.{name}", bool(module))
        for module, exported in names.items()
        for name in exported
    }
    for module, exported in names.items():
        if module in exported:
            # a name that is also its module's name (``qa.compare``, the function of the
            # module ``qa/compare.py``) is imported now: importing the module later would set
            # the package's attribute to the module, and __getattr__ would never be asked
            imported = importlib.import_module(f"{package}.{module}")
            setattr(sys.modules[package], module, getattr(imported, module))

    def __getattr__(name: str) -> Any:
        try:
            module, is_attribute = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        imported = importlib.import_module(module)
        value = getattr(imported, name) if is_attribute else imported
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    return __getattr__
