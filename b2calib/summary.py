"""Plain-text summaries of a simulated (or real) data set: runs, buckets, skim retention."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from b2calib.io import FileMetadata, read_metadata
from b2calib.runs import Bucket, Run

__all__ = [
    "SkimCount",
    "bucket_table",
    "retention_table",
    "run_table",
    "skim_counts",
]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:5.2f}h"


def run_table(runs: Iterable[Run]) -> str:
    """The run summary: one line per run."""
    head = (
        f"{'exp':>4} {'run':>5} {'type':<8} {'beam':<9} {'start (UTC)':<19} {'stop (UTC)':<19} "
        f"{'length':>6} {'L1 trig':>10} {'lumi/pb':>9} {'B':>3} detectors"
    )
    lines = [head, "-" * len(head)]
    total = 0.0
    for r in runs:
        total += r.lumi_pb
        dets = ",".join(r.detectors) if len(r.detectors) < 7 else "all"
        lines.append(
            f"{r.exp:>4} {r.run:>5} {r.run_type:<8} {r.beam_energy:<9} {r.start_iso:<19} "
            f"{r.stop_iso:<19} {_hours(r.duration_s):>6} {r.l1_triggers:>10} {r.lumi_pb:>9.1f} "
            f"{'on' if r.magnet_on else 'off':>3} {dets}"
        )
    lines.append(f"total recorded luminosity: {total / 1000:.3f} fb^-1")
    return "\n".join(lines)


def bucket_table(buckets: Iterable[Bucket]) -> str:
    """Prompt-processing buckets: run range, runs, luminosity, complete or waiting."""
    lines = [f"{'bucket':<9} {'exp':>4} {'runs':>11} {'n':>3} {'lumi/fb':>8}  state"]
    for b in buckets:
        state = "complete" if b.complete else "open (below the minimum luminosity)"
        lines.append(
            f"{b.name:<9} {b.exp:>4} {b.first_run:>5}-{b.last_run:<5} {len(b.runs):>3} "
            f"{b.lumi_fb:>8.3f}  {state}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class SkimCount:
    """Events of one skim in one run, and the events the run's files were selected from."""

    exp: int
    run: int
    skim: str
    events: int
    generated: int


def skim_counts(files: Iterable[str | os.PathLike[str]]) -> list[SkimCount]:
    """Events per (run, skim) from the files' metadata (no event data is read)."""
    out = []
    for f in files:
        m: FileMetadata = read_metadata(f)
        gen = int(sum(m.extra.get("generated_events", {}).values()))
        out.append(SkimCount(m.exp, m.run, m.skim, m.n_events, gen))
    return sorted(out, key=lambda c: (c.exp, c.run, c.skim))


def retention_table(counts: Iterable[SkimCount]) -> str:
    """Retention of each skim per run: events kept / events the simulator produced."""
    by_run: dict[tuple[int, int], dict[str, SkimCount]] = defaultdict(dict)
    skims: list[str] = []
    for c in counts:
        by_run[(c.exp, c.run)][c.skim] = c
        if c.skim not in skims:
            skims.append(c.skim)
    width = max((len(s) for s in skims), default=8)
    lines = [f"{'exp':>4} {'run':>5} {'produced':>9} " + " ".join(f"{s:>{width}}" for s in skims)]
    totals: dict[str, int] = defaultdict(int)
    tot_gen = 0
    for (exp, run), row in sorted(by_run.items()):
        gen = next(iter(row.values())).generated
        tot_gen += gen
        cells = []
        for s in skims:
            cnt = row.get(s)
            if cnt is None:
                cells.append(f"{'-':>{width}}")
            else:
                totals[s] += cnt.events
                pct = 100.0 * cnt.events / gen if gen else 0.0
                cells.append(f"{f'{cnt.events} ({pct:.1f}%)':>{width}}")
        lines.append(f"{exp:>4} {run:>5} {gen:>9} " + " ".join(cells))
    all_cells = [
        f"{f'{totals[s]} ({100.0 * totals[s] / tot_gen:.1f}%)' if tot_gen else '-':>{width}}"
        for s in skims
    ]
    lines.append(f"{'all':>10} {tot_gen:>9} " + " ".join(all_cells))
    return "\n".join(lines)
