"""Broken runs for the tests: a copy of a data folder in which one run's skim files miss
branches, carry a mistyped branch, hold an empty tree, or are absent."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from b2calib.io import METADATA_KEY, TREE_NAME
from tests.skimfiles import CATALOGUE, recatalogue

#: How a run can be broken (see :func:`break_run`).
DAMAGES = ("missing-branch", "wrong-type", "empty-tree", "empty-file", "absent")
#: Branches no collector can do without: the CDC and ECL collectors read the run number, the
#: TOP collectors the module of each digit.
ESSENTIAL = ("EventMetaData_m_run", "TOPDigits_m_moduleID")


def rewrite_skim(
    path: Path,
    *,
    drop: Iterable[str] = (),
    retype: Mapping[str, str] | None = None,
    empty: bool = False,
    n_events: int | None = None,
    replace: Mapping[str, ak.Array] | None = None,
) -> None:
    """Write ``path`` again as the simulator would (a TTree with its ``n<Object>`` counters),
    without the branches ``drop``, with the branches of ``retype`` cast to another type
    (``{"EventMetaData_m_run": "float64"}``), the branches of ``replace`` holding other values
    (of the same structure and type), without events when ``empty``, and with ``n_events`` in
    its metadata when given."""
    with uproot.open(path) as f:
        tree = f[TREE_NAME]
        arrays = tree.arrays(library="ak")
        meta = json.loads(str(f[METADATA_KEY]))
    for name, values in (replace or {}).items():
        arrays = ak.with_field(arrays, values, name)
    retype = dict(retype or {})
    dropped = set(drop)
    fields = list(arrays.fields)
    objects = [
        n[1:]
        for n in fields
        if n.startswith("n") and any(m.startswith(f"{n[1:]}_") for m in fields)
    ]
    members = {o: [n for n in fields if n.startswith(f"{o}_")] for o in objects}
    grouped = {n for ms in members.values() for n in ms} | {f"n{o}" for o in objects}
    data: dict[str, ak.Array] = {}
    for name in fields:
        if name not in grouped and name not in dropped:
            data[name] = _cast(arrays[name], retype.get(name))
    for obj, names in members.items():
        kept = [n for n in names if n not in dropped]
        if kept:  # written as the simulator writes collections: n<obj> and <obj>_<member>
            flat = {n[len(obj) + 1 :]: ak.flatten(_cast(arrays[n], retype.get(n))) for n in kept}
            data[obj] = ak.unflatten(ak.zip(flat, depth_limit=1), ak.num(arrays[kept[0]]))
    if empty:
        data = {k: v[:0] for k, v in data.items()}
    if n_events is not None:
        meta["n_events"] = n_events
    tmp = path.with_name(path.name + ".part")
    with uproot.recreate(tmp) as out:
        out["Software"] = json.dumps({"release": meta.get("release", ""), "generator": "tests"})
        types = {k: v.type.content if v.ndim > 1 else _dtype(v) for k, v in data.items()}
        out.mktree(TREE_NAME, types)
        out[TREE_NAME].extend(data)
        out[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    tmp.replace(path)
    # written by its producer: the file catalogue above it holds the new file's checksum (a
    # corrupt file is another test's business)
    for folder in path.parents:
        if (folder / CATALOGUE).exists():
            recatalogue(folder, path)
            break


def _cast(a: ak.Array, dtype: str | None) -> ak.Array:
    return a if dtype is None else ak.values_astype(a, np.dtype(dtype))


def _dtype(a: ak.Array) -> np.dtype:
    return ak.to_numpy(a).dtype


def break_run(folder: Path, exp: int, run: int, damage: str) -> list[Path]:
    """Break every skim file of run (exp, run) below ``folder``; return the files.

    ``damage`` is one of :data:`DAMAGES`: ``missing-branch`` (without the :data:`ESSENTIAL`
    branches), ``wrong-type`` (the :data:`ESSENTIAL` branches as float64), ``empty-tree`` (no
    events, the metadata still promising them), ``empty-file`` (no events, the metadata
    saying so), ``absent`` (the files deleted).
    """
    files = sorted((folder / f"e{exp:04d}" / f"r{run:05d}").glob("cdst_*.root"))
    assert files, f"no files of run ({exp}, {run}) below {folder}"
    for path in files:
        if damage == "missing-branch":
            rewrite_skim(path, drop=ESSENTIAL)
        elif damage == "wrong-type":
            rewrite_skim(path, retype=dict.fromkeys(ESSENTIAL, "float64"))
        elif damage == "empty-tree":
            rewrite_skim(path, empty=True)
        elif damage == "empty-file":
            rewrite_skim(path, empty=True, n_events=0)
        elif damage == "absent":
            path.unlink()
        else:
            raise ValueError(f"unknown damage {damage!r}; one of {DAMAGES}")
    return files


def broken_copy(source: Path, dest: Path, exp: int, run: int, damage: str) -> Path:
    """A copy of the data folder ``source`` at ``dest`` with run (exp, run) broken."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("truth"))
    break_run(dest, exp, run, damage)
    return dest
