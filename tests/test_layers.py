"""The layer map: which package of b2calib may import which (no upward import), and the core
without the optional stacks (as iminuit's ``test_without_matplotlib``)."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

LIBRARY = REPO / "b2calib"
APPS = REPO / "apps"

_BASE = {"exceptions", "_version"}
#: package -> the packages it may import (besides itself). The map of b2calib/__init__.py.
LAYERS: dict[str, set[str]] = {
    "_version": set(),
    "exceptions": set(),
    "_lazy": set(),
    "_extras": {"exceptions"},
    "_workers": set(),
    "geometry": {"exceptions"},
    "dq": {"exceptions"},
    "physics": {"exceptions"},
    "io": {"exceptions"},
    "skims": {"exceptions", "io"},
    "runs": {"exceptions", "dq"},
    "db": {"exceptions", "_extras"},
    "conditions": {"exceptions", "_lazy", "geometry", "io", "db"},
    "sim": _BASE | {"_workers", "geometry", "physics", "io", "skims", "runs", "dq", "conditions"},
    "engine": {"exceptions", "_extras", "_workers", "io", "runs"},
    "fit": {"exceptions", "_lazy", "_extras", "conditions"},
    "calibration": _BASE
    | {"_lazy", "geometry", "dq", "io", "skims", "runs", "db", "conditions", "engine", "fit"},
    "qa": _BASE
    | {"_lazy", "_extras", "geometry", "dq", "physics", "io", "skims", "runs", "db"}
    | {"engine", "fit"},
    "detectors": _BASE
    | {"_lazy", "_extras", "geometry", "dq", "physics", "io", "skims", "runs", "db"}
    | {"conditions", "engine", "fit", "calibration", "qa"},
    "prompt": _BASE
    | {"_lazy", "_extras", "geometry", "dq", "io", "skims", "runs", "db", "conditions"}
    | {"engine", "fit", "calibration", "qa"},
    "review": {"exceptions", "_lazy", "_extras", "geometry", "db", "conditions", "calibration"}
    | {"qa", "prompt", "detectors"},
    "sizereport": {"exceptions", "io"},
    "summary": {"exceptions", "io", "runs"},
}
#: the command line is the top of the library (it serves the dashboards); the dashboards use
#: every package of the library but the command line
LAYERS["cli"] = set(LAYERS) | {"b2calib_apps"}
LAYERS["b2calib_apps"] = set(LAYERS) - {"cli", "b2calib_apps"}
#: what the package ``b2calib`` itself (its __init__) re-exports from
TOP = {"_lazy", "_version", "geometry", "conditions", "exceptions", "io", "runs", "sizereport"}
TOP |= {"skims"}


def _package(module: str) -> str:
    """The layer of a module: ``b2calib.qa.store`` -> ``qa``."""
    if module == "b2calib_apps" or module.startswith("b2calib_apps."):
        return "b2calib_apps"
    return module.split(".")[1] if module.startswith("b2calib.") else ""


def _modules() -> list[tuple[str, Path]]:
    found = []
    for root, name in ((LIBRARY, "b2calib"), (APPS, "b2calib_apps")):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [name, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(parts), path))
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """Every b2calib module ``module`` imports (at module level or in a function), with the
    line."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target))
    return [(line, t) for line, t in out if t.split(".")[0] in ("b2calib", "b2calib_apps")]


def test_layer_map_is_acyclic_and_names_every_package() -> None:
    graphlib.TopologicalSorter(LAYERS).prepare()  # raises CycleError
    packages = {_package(m) for m, _ in _modules() if m != "b2calib"}
    assert packages == set(LAYERS)
    doc = (LIBRARY / "__init__.py").read_text().split('"""')[1]
    named = {p for p in LAYERS if f"``{p}``" in doc}
    private = {"_version", "exceptions", "_lazy", "_extras", "_workers"}
    assert named >= set(LAYERS) - private, (
        f"b2calib/__init__.py's layer map does not name {sorted(set(LAYERS) - named - private)}"
    )


def test_no_upward_import() -> None:
    """Every import of the library and the dashboards follows the layer map."""
    wrong = []
    for module, path in _modules():
        layer = _package(module)
        for line, target in _imports(module, path):
            dep = _package(target)
            allowed = TOP if module == "b2calib" else LAYERS[layer]
            if dep in ("", layer) or dep in allowed:
                continue
            wrong.append(f"{path.relative_to(REPO)}:{line}: {layer} imports {target} ({dep})")
    assert not wrong, "imports against the layer map:\n" + "\n".join(wrong)


# -------------------------------------------------------------------------- optional stacks
#: The optional stacks (extras) and the test tools: the core must work with none of them.
OPTIONAL = (
    "panel",
    "holoviews",
    "bokeh",
    "param",
    "pandas",
    "tornado",
    "distributed",
    "dask",
    "dask_jobqueue",
    "jupyterlab",
    "psycopg",
    "b2calib_apps",
    "ROOT",
    "playwright",
    "matplotlib",
    "b2luigi",
    "luigi",
)

_HIDE = f"""
import importlib.abc, sys
HIDDEN = {OPTIONAL!r}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
        return None

sys.meta_path.insert(0, Hide())
"""


def _run_without_extras(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter where the optional stacks cannot be imported;
    return what it printed (standard output and error)."""
    env = {**os.environ, "B2CALIB_DB": str(tmp_path / "conditions.sqlite")}
    env["B2CALIB_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", _HIDE + textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_every_core_module_imports_without_the_extras(tmp_path: Path) -> None:
    """Each module of the library imports with none of the optional stacks installed, and
    ``import b2calib`` loads neither the database nor the plotting stacks."""
    modules = [
        m for m, p in _modules() if m.split(".")[0] == "b2calib" and "migrations" not in p.parts
    ]
    out = _run_without_extras(
        f"""
        import importlib, sys
        import b2calib
        heavy = sorted(m for m in ("sqlalchemy", "holoviews", "panel", "bokeh", "iminuit",
                                   "numba", "scipy") if m in sys.modules)
        print("after import b2calib:", heavy)
        for m in {modules!r}:
            importlib.import_module(m)
        print("imported", len({modules!r}))
        """,
        tmp_path,
    )
    assert "after import b2calib: []" in out
    assert f"imported {len(modules)}" in out


def test_core_works_without_the_extras_and_names_them(tmp_path: Path) -> None:
    """Read, collect, fit, store conditions and QA, calibrate from the command line with no
    optional stack; what needs one says which extra installs it."""
    out = _run_without_extras(
        f"""
        import hist, numpy as np
        from b2calib import fit
        from b2calib.conditions import ConditionsDB
        from b2calib.engine import ChannelValueCollector, Dataset, collect
        from b2calib.exceptions import MissingExtraError
        from b2calib.qa.store import QADatabase

        sample = {str(REPO / "data-samples" / "bucket")!r}
        data = Dataset.select(sample, skims="hlt_bhabha", runs=[1, 2])
        c = ChannelValueCollector("ECLCalDigits_m_CellId", "ECLCalDigits_m_Energy",
                                  n_channels=8736, value_bins=(50, 0.0, 6.0), first_channel=1)
        result = collect(c, data, executor="inprocess", cache=False, progress=False)
        print("digits", int(result.output.merged()["channel_value"].sum()))

        rng = np.random.default_rng(1)
        h = hist.Hist.new.Reg(40, -3, 3).Int64()
        h.fill(rng.normal(0, 1, 2000))
        r = fit.fit_hist(h, fit.gauss.on(-3, 3))
        print("fit", r.valid)
        try:
            fit.plot_fit(h, fit.gauss.on(-3, 3), r)
        except MissingExtraError as err:
            print("plot:", err)
        try:
            collect(c, data, executor="tcp://127.0.0.1:1", cache=False, progress=False)
        except MissingExtraError as err:
            print("dask:", err)

        db = ConditionsDB("conditions.sqlite", author="test")
        db.import_local(sample + "/truth", "sim_truth")
        print("lookup", len(db.lookup(12, 7, ["sim_truth"])))
        QADatabase("conditions.sqlite")
        try:
            ConditionsDB("postgresql+psycopg://nobody@localhost/none")
        except MissingExtraError as err:
            print("postgres:", err)

        from b2calib.cli import main
        import sys
        for args in (["calibrate", "cdc-dedx-run-gain", "--data", sample, "--runs", "1-11",
                      "--gt", "sim_truth", "--staging", "s", "--quiet",
                      "--db", "conditions.sqlite"],
                     ["serve", "--db", "conditions.sqlite"],
                     ["prompt", "--data", sample, "--bucket", "1", "--db", "conditions.sqlite"]):
            sys.argv = ["b2calib", *args]
            try:
                main()
            except SystemExit as e:
                print(args[0], "exit", e.code)
        """,
        tmp_path,
    )
    assert "digits " in out
    assert "fit True" in out
    assert (
        "plot: plot_fit needs holoviews, which is not installed: pip install 'b2calib[dashb" in out
    )
    assert (
        "dask: the Dask executor needs distributed, which is not installed: pip install 'b2" in out
    )
    assert "lookup " in out
    assert "calibrate exit 0" in out
    assert "serve exit 1" in out
    assert "prompt exit 1" in out
    assert (
        "b2calib prompt needs b2luigi, which is not installed: pip install 'b2calib[prompt]'" in out
    )
    assert (
        "b2calib serve needs panel, which is not installed: pip install 'b2calib[dashboards]'"
        in out
    )
