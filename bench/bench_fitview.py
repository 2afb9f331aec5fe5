"""What the drill-down of a payload channel costs (:func:`b2calib.calibration.fitview.fit_view`);
writes bench/RESULTS_fitview.md.

On a conditions database holding calibration jobs (by default the one the last ``make demo``
left, build/demo/conditions.sqlite), for every payload name of a tag: the kind of view
its calibration declares (fit, counting, none), the first call after the caches were emptied
(the job look-up, the payload's and the diagnostics' decoding: what the first click on a
payload costs) and the following calls on other channels of the same payload (what every
further click costs), median and maximum over up to 40 channels spread over the payload.

Usage: python bench/bench_fitview.py [DATABASE] [--tag TAG] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sim import machine  # noqa: E402

from b2calib.calibration.fitview import clear_cache, fit_view, payload_channels  # noqa: E402
from b2calib.conditions import ConditionsDB  # noqa: E402

CHANNELS = 40


def measure(db: ConditionsDB, tag: str, name: str) -> dict[str, object]:
    """Kinds of view, first call (caches empty) and further calls (ms) of one payload name."""
    entry = db.iovs(tag, name)[0]
    ids = payload_channels(db.payload(name, entry.payload.revision))
    picked = ids[:: max(1, len(ids) // CHANNELS)][:CHANNELS].tolist()
    clear_cache()
    kinds: dict[str, int] = {}
    times = []
    calibration = ""
    for ch in picked:
        t = time.perf_counter()
        v = fit_view(db, tag, name, int(ch))
        times.append(1000.0 * (time.perf_counter() - t))
        kinds[v.kind] = kinds.get(v.kind, 0) + 1
        calibration = v.calibration
    warm = times[1:] or [float("nan")]
    return {
        "name": name,
        "calibration": calibration,
        "channels": len(ids),
        "kinds": ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        "first": times[0],
        "median": statistics.median(warm),
        "max": max(warm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", nargs="?", default="build/demo/conditions.sqlite")
    parser.add_argument("--tag", default="prompt_bucket1")
    parser.add_argument("--out", default=str(HERE / "RESULTS_fitview.md"))
    args = parser.parse_args()
    db = ConditionsDB(f"sqlite:///{Path(args.database).resolve()}")
    names = sorted({e.name for e in db.iovs(args.tag)})
    t = time.perf_counter()
    fit_view(db, args.tag, names[0], int(payload_channels(db.payload(names[0]))[0]))
    imports = time.perf_counter() - t  # the calibration registry and the detectors imported
    rows = [measure(db, args.tag, n) for n in names]
    lines = [
        "# What the drill-down of a payload channel costs",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `python bench/bench_fitview.py {args.database} --tag {args.tag}`",
        f"- the first call in the process (the calibrations registered, the detectors imported): "
        f"{imports:.2f} s",
        "",
        "first = the first channel of the payload with the caches emptied (the job found, the "
        "payload and the execution's diagnostics decoded); then = the next channels (up to "
        f"{CHANNELS - 1}, spread over the payload), median and maximum. The machine is "
        "shared: single calls vary.",
        "",
        "| payload | calibration | channels | views | first (ms) | then median (ms) | max (ms) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['calibration']} | {r['channels']} | {r['kinds']} | "
            f"{r['first']:.0f} | {r['median']:.1f} | {r['max']:.1f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
