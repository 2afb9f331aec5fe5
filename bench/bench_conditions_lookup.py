"""Payload lookup through a stack of global tags: 10^4 runs x 30 payload names x 3 tags, in the
embedded SQLite database; writes the "Payload lookup" section of bench/RESULTS_conditions.md.

Builds (once, into ``bench/out/lookup/conditions.sqlite``) a database with three global tags in
priority order, ``prompt`` (OPEN), ``staging`` (VALIDATED) and ``release`` (PUBLISHED), holding
30 payload names in the shapes real tags have:

- open-ended: one IoV ``0,0,-1,-1`` in ``release``, replaced for an experiment (``e,0,e,-1``) or
  from a run on (``22,r,-1,-1``) by the higher tags;
- per bucket: closed IoVs of 50-500 runs, the last of an experiment ending at its end (``-1``),
  with other boundaries in each tag (the tags overlap, the higher one wins);
- per run: one IoV per run (``e,r,e,r``) of the newest experiment in ``prompt`` and of the one
  before in ``staging``, some runs missing, an open default in ``release`` for half the names;
- per experiment: ``e,0,e,-1``, the newest experiment missing in ``release``;
- sparse: a few closed ranges in one tag only, across experiment boundaries; most runs have no
  payload of these names.

The IoVs are written in one transaction per tag (the API's per-IoV overlap check is quadratic in
the IoVs of a name: the generator makes them disjoint and checks it), with one audit-log entry
per tag; the payloads go through the API (8 revisions per name).

Then it times, side by side in one process, interleaved, best of ``--repeat``: the lookup as
b2calib did it before issue 20 (every tag's IoVs as :class:`IovEntry` objects, then
:func:`b2calib.conditions.tagops.resolve`), and :meth:`ConditionsDB.lookup_many` now (first call
and repeated call, whose tags' IoVs are cached until a tag changes); each answer is checked equal
to the old one.

Usage: python bench/bench_conditions_lookup.py [--repeat 5] [--rebuild]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_sim import machine  # noqa: E402

from b2calib.conditions import ConditionsDB, IoV, Payload  # noqa: E402
from b2calib.conditions import tables as s  # noqa: E402
from b2calib.conditions.tagops import resolve  # noqa: E402
from b2calib.db import now  # noqa: E402

SECTION = "## Payload lookup"
#: experiments and their number of runs (10^4 runs in all)
EXPERIMENTS = {20: 4000, 21: 3000, 22: 3000}
TAGS = ("prompt", "staging", "release")
STATES = {
    "prompt": [],
    "staging": ["TESTING", "VALIDATED"],
    "release": ["TESTING", "VALIDATED", "PUBLISHED"],
}
REVISIONS = 8


def names() -> list[str]:
    """The 30 payload names, by shape."""
    shapes = {"Open": 6, "Bucket": 8, "PerRun": 6, "PerExp": 5, "Sparse": 5}
    return [f"Bench{shape}{i}" for shape, n in shapes.items() for i in range(n)]


def _buckets(rnd: random.Random, exp: int, lo: int, hi: int) -> list[IoV]:
    """Closed IoVs of 50-500 runs covering runs lo..hi of ``exp``, the last ending at -1 when
    ``hi`` is the experiment's last run."""
    out, start = [], lo
    while start <= hi:
        end = min(start + rnd.randint(50, 500) - 1, hi)
        last = end == hi and hi == EXPERIMENTS[exp] - 1
        out.append(IoV(exp, start, exp, -1 if last else end))
        start = end + 1
    return out


def layout(seed: int = 20) -> dict[str, dict[str, list[IoV]]]:
    """The IoVs of every tag, by tag then payload name (disjoint within a tag and name)."""
    rnd = random.Random(seed)
    tags: dict[str, dict[str, list[IoV]]] = {t: {} for t in TAGS}
    last = max(EXPERIMENTS)
    for name in names():
        put = {t: tags[t].setdefault(name, []) for t in TAGS}
        if name.startswith("BenchOpen"):
            put["release"].append(IoV(0, 0, -1, -1))
            if rnd.random() < 0.6:
                put["staging"].append(IoV(21, 0, 21, -1))
            if rnd.random() < 0.6:
                put["prompt"].append(IoV(last, rnd.randrange(EXPERIMENTS[last]), -1, -1))
        elif name.startswith("BenchBucket"):
            for e, n in EXPERIMENTS.items():
                put["release"] += _buckets(rnd, e, 0, n - 1)
                if e >= 21:
                    put["staging"] += _buckets(rnd, e, rnd.randrange(200), n - 1)
            put["prompt"] += [
                iov for iov in _buckets(rnd, last, 0, EXPERIMENTS[last] - 1) if rnd.random() < 0.7
            ]
        elif name.startswith("BenchPerRun"):
            for tag, e in (("prompt", last), ("staging", last - 1)):
                put[tag] += [IoV.run(e, r) for r in range(EXPERIMENTS[e]) if rnd.random() < 0.95]
            if int(name[-1]) % 2 == 0:
                put["release"].append(IoV(0, 0, -1, -1))
        elif name.startswith("BenchPerExp"):
            put["release"] += [IoV(e, 0, e, -1) for e in EXPERIMENTS if e != last]
            if rnd.random() < 0.5:
                put["staging"].append(IoV(last, 0, last, -1))
        else:  # sparse: a few ranges in one tag, some across an experiment boundary
            tag = rnd.choice(TAGS)
            put[tag] += [
                IoV(20, 3900 + rnd.randrange(50), 21, rnd.randrange(100)),
                IoV(21, 1000 + rnd.randrange(500), 21, 1600 + rnd.randrange(500)),
                IoV(22, 2999, -1, -1),
            ]
    for tag in tags.values():
        for iovs in tag.values():
            iovs.sort(key=lambda iov: iov.start)
            assert all(a.end < b.start for a, b in itertools.pairwise(iovs))
    return tags


def build(path: Path, seed: int = 20) -> ConditionsDB:
    """The benchmark database at ``path`` (made when missing)."""
    exists = path.exists()
    db = ConditionsDB(f"sqlite:///{path}", author="bench")
    if exists:
        return db
    tags = layout(seed)
    revisions: dict[str, list[Any]] = {}
    for i, name in enumerate(names()):
        revisions[name] = [
            db.upload(
                Payload(
                    name,
                    keys={"channel": np.arange(4, dtype=np.int32)},
                    values={"value": np.full(4, 100.0 * i + k)},
                )
            )
            for k in range(REVISIONS)
        ]
    for tag, by_name in tags.items():
        db.create_tag(tag)
        with db.write() as conn:
            gid = conn.execute(s.globaltags.select().where(s.globaltags.c.name == tag)).one().id
            when = now()
            rows = [
                dict(
                    globaltag_id=gid,
                    payload_id=revisions[name][k % REVISIONS].id,
                    created=when,
                    author="bench",
                    first_exp=iov.first_exp,
                    first_run=iov.first_run,
                    final_exp=iov.final_exp,
                    final_run=iov.final_run,
                )
                for name, iovs in by_name.items()
                for k, iov in enumerate(iovs)
            ]
            conn.execute(s.iovs.insert(), rows)
            db.log(conn, "bench_fill", tag, iovs=len(rows))
        for state in STATES[tag]:
            db.set_state(tag, state)
    return db


def runs() -> list[tuple[int, int]]:
    """The 10^4 runs looked up."""
    return [(e, r) for e, n in EXPERIMENTS.items() for r in range(n)]


def old_lookup(
    db: ConditionsDB, run_list: Sequence[tuple[int, int]], tags: Sequence[str]
) -> dict[tuple[int, int], dict[str, Any]]:
    """The lookup before issue 20: every IoV of every tag as an :class:`IovEntry`, then the
    sorted search per tag and name of :func:`resolve`."""
    return resolve(run_list, [[(e.name, e.iov, e) for e in db.iovs(t)] for t in tags])


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls and the last answer."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def write_section(path: Path, lines: list[str]) -> None:
    """Replace (or add) this bench's section of ``path``, keeping the rest."""
    text = path.read_text() if path.exists() else ""
    head = text.split(f"\n{SECTION}\n")[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--db", default=str(HERE / "out" / "lookup" / "conditions.sqlite"))
    ap.add_argument("--out", default=str(HERE / "RESULTS_conditions.md"))
    args = ap.parse_args()
    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild and path.exists():
        for p in path.parent.glob(path.name + "*"):
            p.unlink()
    t0 = time.perf_counter()
    made = not path.exists()
    db = build(path)
    built = (
        f"built by the script in {time.perf_counter() - t0:.0f} s"
        if made
        else "built once by the script"
    )
    sizes = db.tag_sizes()
    run_list = runs()
    load_before = os.getloadavg()[0]
    url = f"sqlite:///{path}"
    fresh = [ConditionsDB(url, author="bench") for _ in range(args.repeat)]
    times: dict[str, list[float]] = {k: [] for k in ("old", "cold", "warm", "dicts", "one")}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    want: dict[tuple[int, int], dict[str, Any]] = {}
    got: Any = None
    every: dict[tuple[int, int], dict[str, Any]] = {}

    def timed(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        times[what].append(time.perf_counter() - t0)
        cpu[what].append(time.process_time() - c0)
        return out

    for i in range(args.repeat):  # interleaved: old path, new path cold, warm, every dict
        want = timed("old", old_lookup, db, run_list, TAGS)
        timed("cold", fresh[i].lookup_many, run_list, TAGS)  # a new ConditionsDB
        got = timed("warm", db.lookup_many, run_list, TAGS)
        every = timed("dicts", dict, got)  # every run's dictionary made
        timed("one", db.lookup, 22, 1234, TAGS)
        print({k: f"{v[-1] * 1e3:.1f} ms" for k, v in times.items()}, flush=True)
    load = (load_before + os.getloadavg()[0]) / 2
    assert every == want, "the new lookup differs from the old one"
    found = sum(len(v) for v in want.values())
    ms = {k: min(v) * 1e3 for k, v in times.items()}
    cms = {k: min(v) * 1e3 for k, v in cpu.items()}
    iovs = ", ".join(f"{t} {sizes[t].iovs} IoVs of {sizes[t].payloads} names" for t in TAGS)
    lines = [
        SECTION,
        "",
        f"`python bench/bench_conditions_lookup.py` on {machine()}; best of {args.repeat}, "
        f"interleaved; load average of the machine about {load:.1f} while measured.",
        "",
        f"Database: `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}` ({built}): "
        f"the stack {' > '.join(TAGS)} ({iovs}); "
        f"{len(run_list)} runs of experiments {', '.join(map(str, EXPERIMENTS))} x 30 names: "
        f"{found} payloads found, {len(run_list) * 30 - found} (run, name) pairs without one. "
        "Every answer of the new path equals the old one.",
        "",
        "| what | wall ms | CPU ms | issue's limit |",
        "|---|---:|---:|---|",
        f"| old path (before issue 20: every IoV as an IovEntry, then `tagops.resolve`) | "
        f"{ms['old']:.1f} | {cms['old']:.1f} | - |",
        f"| `lookup_many`, first call (reads and indexes the 3 tags) | {ms['cold']:.1f} "
        f"| {cms['cold']:.1f} | - |",
        f"| `lookup_many`, tags unchanged (stamps query + resolution of every pair) | "
        f"{ms['warm']:.1f} | {cms['warm']:.1f} | 50 |",
        f"| making all {len(run_list)} runs' `{{name: IovEntry}}` from it | {ms['dicts']:.1f} "
        f"| {cms['dicts']:.1f} | - |",
        f"| `lookup` of one run, tags unchanged | {ms['one']:.2f} | {cms['one']:.2f} | - |",
        "",
        f"Old path / warm lookup: {ms['old'] / ms['warm']:.0f}x; old / cold: "
        f"{ms['old'] / ms['cold']:.1f}x; old / (warm + every dictionary made): "
        f"{ms['old'] / (ms['warm'] + ms['dicts']):.1f}x (wall times, best of each). CPU time is "
        "the process's (the load of the machine stretches wall times).",
    ]
    write_section(Path(args.out), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
