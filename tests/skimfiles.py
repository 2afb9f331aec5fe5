"""Damaging and rewriting skim files for the integrity tests: copies of the sample bucket with a
file corrupted, copied twice, moved to the wrong run, or with NaN values written into it.

Nothing here imports the integrity code under test: the catalogue is read and written as plain
JSON (its format: ``{"format": ..., "checksum": "adler32", "files": {relative path: {"size",
"adler32"}}}``), so that each test fails for its own reason before the feature exists.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

CATALOGUE = "catalogue.json"


def copy_bucket(sample: Path, dest: Path, runs: Iterable[int] | None = None) -> Path:
    """A copy of the sample bucket's registry, catalogue and skim files (of ``runs`` only)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("runs.json", CATALOGUE):
        if (sample / name).exists():
            shutil.copy(sample / name, dest / name)
    wanted = None if runs is None else {f"r{r:05d}" for r in runs}
    for run_dir in sorted((sample / "e0012").iterdir()):
        if wanted is None or run_dir.name in wanted:
            shutil.copytree(run_dir, dest / "e0012" / run_dir.name)
    return dest


def skim_file(folder: Path, run: int, skim: str = "hlt_bhabha", exp: int = 12) -> Path:
    """The simulator's path of (exp, run, skim) below ``folder``."""
    return folder / f"e{exp:04d}" / f"r{run:05d}" / f"cdst_{skim}_e{exp:04d}_r{run:05d}.root"


def adler32(path: Path) -> str:
    """The file's Adler-32, as 8 hex digits."""
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def recatalogue(folder: Path, path: Path) -> None:
    """Record ``path``'s new size and checksum in ``folder``'s catalogue, as the producer of a
    rewritten file would (nothing when the folder has no catalogue)."""
    cat = folder / CATALOGUE
    if not cat.exists():
        return
    data = json.loads(cat.read_text())
    data["files"][path.relative_to(folder).as_posix()] = {
        "size": path.stat().st_size,
        "adler32": adler32(path),
    }
    cat.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def overwrite(path: Path, offset: int, n: int, seed: int = 1) -> None:
    """Overwrite ``n`` bytes at ``offset`` with random bytes (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    data[offset : offset + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def basket_range(path: Path, branch: str, basket: int = 0) -> tuple[int, int]:
    """(byte offset, bytes) of one basket of a branch of the event tree."""
    with uproot.open(path) as f:
        b = f["tree"][branch]
        return int(b.member("fBasketSeek")[basket]), int(b.member("fBasketBytes")[basket])


def read_skim(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event tree as the simulator writes it (collections as records of jagged fields,
    flat branches as numpy) and the FileMetaData as a dict."""
    with uproot.open(path) as f:
        arrays = f["tree"].arrays(library="ak")
        meta = json.loads(str(f["FileMetaData"]))
    fields = arrays.fields
    collections = [
        x[1:]
        for x in fields
        if x.startswith("n") and any(y.startswith(x[1:] + "_") for y in fields)
    ]
    data: dict[str, Any] = {}
    for y in fields:
        if y.startswith("n") and y[1:] in collections:
            name = y[1:]
            data[name] = ak.zip(
                {z[len(name) + 1 :]: arrays[z] for z in fields if z.startswith(name + "_")}
            )
        elif not any(y.startswith(c + "_") for c in collections):
            data[y] = ak.to_numpy(arrays[y])
    return data, meta


def write_skim(path: Path, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write a skim file as the simulator does (ZSTD, tree ``tree``, ``FileMetaData``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path, compression=uproot.ZSTD(5)) as out:
        out["Software"] = json.dumps({"generator": "tests.skimfiles"})
        types = {
            k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()
        }
        out.mktree("tree", types)
        out["tree"].extend(data)
        out["FileMetaData"] = json.dumps(meta, sort_keys=True)


def rewrite(
    src: Path,
    dst: Path,
    change: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    **meta: Any,
) -> None:
    """Rewrite a skim file with its arrays changed by ``change`` and metadata keys replaced."""
    data, old = read_skim(src)
    if change is not None:
        data = change(data)
    write_skim(dst, data, {**old, **meta})


def twice(data: dict[str, Any]) -> dict[str, Any]:
    """Every event written twice (as a writer that flushed a buffer twice would)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = ak.concatenate([v, v]) if isinstance(v, ak.Array) else np.concatenate([v, v])
    return out


def with_nonfinite(
    collection: str, field: str, fraction: float, seed: int = 0
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A ``change`` that sets ``fraction`` of one field's values to NaN (and every tenth of
    those to +Inf)."""

    def change(data: dict[str, Any]) -> dict[str, Any]:
        rec = data[collection]
        values = ak.to_numpy(ak.flatten(rec[field])).copy()
        rng = np.random.default_rng(seed)
        hit = np.flatnonzero(rng.random(values.size) < fraction)
        values[hit] = np.nan
        values[hit[::10]] = np.inf
        data[collection] = ak.with_field(rec, ak.unflatten(values, ak.num(rec[field])), field)
        return data

    return change


def names(skipped: Iterable[Any]) -> list[tuple[str, str]]:
    """(file name, reason) of skipped files, sorted."""
    return sorted((Path(s.path).name, s.reason) for s in skipped)


def branch_values(path: Path, branch: str) -> np.ndarray:
    """A branch of the event tree as numpy (jagged: an object array)."""
    with uproot.open(path) as f:
        return f["tree"][branch].array(library="np")


def entries(path: Path) -> int:
    """Events in the event tree."""
    with uproot.open(path) as f:
        return int(f["tree"].num_entries)


def corrupt_silently(path: Path, branch: str) -> None:
    """Overwrite a few bytes inside a compressed basket of ``branch`` such that the basket still
    decompresses, to different values: the garbage the issue found (no error at all)."""
    before = branch_values(path, branch)
    start, n = basket_range(path, branch)
    original = path.read_bytes()
    for k in range(40):
        path.write_bytes(original)
        overwrite(path, start + n // 2 + (16 * k) % max(1, n // 2 - 8), 8, seed=k)
        try:
            after = branch_values(path, branch)
        except Exception:
            continue
        if not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
            return
    raise AssertionError(f"no silent corruption of {branch} found")
