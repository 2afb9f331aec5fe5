"""The shifted-template fit of top-channel-t0 alone: 8192 TOP-shaped channels (photon-PDF
templates of 26 components with their periodic copies, 48 bins of one RF period); writes
bench/RESULTS_template_fit.md.

Side by side in one run: the compiled fit (numba) on one thread (its CPU cost) and on two, the
first call in a fresh interpreter (numba's start-up and its cache), and the numpy path (the
reference: the fits must agree to 1e-9 sigma, statuses identical). ``--before DIR`` also times
the compiled fit of another checkout of the package (``git archive <commit> b2calib`` unpacked in
DIR, put first on ``PYTHONPATH``) on the same inputs, interleaved with this one, and compares
its fits.

Usage: python bench/bench_template_fit.py [--repeat 3] [--before DIR --before-label TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sim import machine  # noqa: E402

from b2calib.conditions.status import ChannelStatus  # noqa: E402

F = npt.NDArray[np.float64]
OUT = HERE / "out" / "template_fit"


def inputs(seed: int = 20) -> tuple[F, F, F, F, F, float]:
    """Counts (8192, 48), edges and templates as top-channel-t0 fits them: the photon PDF of
    each pixel's path factor and its module's track crossings, shifted by a random channel T0
    inside the window, 300-2000 signal photons and 10 % flat background per channel (none in
    one channel of 8: backgrounds at their bound 0)."""
    from b2calib.detectors.top.photons import PDF_CONFIG, Z_BINS, PhotonPDF
    from b2calib.fit.template_shift import _model, _periodic
    from b2calib.geometry import top

    rng = np.random.default_rng(seed)
    nm, npix, period = top.N_MODULES, top.N_PIXELS, top.RF_PERIOD_NS
    edges = np.arange(49) * (period / 48)
    zw = rng.uniform(0.2, 1.0, (nm, Z_BINS[0]))
    pf = top.path_factor(np.tile(np.arange(1, npix + 1), nm))
    w, m, s = PhotonPDF.from_config(PDF_CONFIG).components(pf, zw[np.repeat(np.arange(nm), npix)])
    w = w / w.sum(axis=1, keepdims=True)
    n = rng.uniform(300, 2000, len(w))
    bkg = np.where(np.arange(len(w)) % 8 == 0, 0.0, 0.1 * n / period)  # 1 in 8: none
    theta = np.stack([n, rng.uniform(0.5, 1.5, len(w)), bkg], axis=1)
    w3, m3, s3 = _periodic(w, m, s, period)
    lam = np.concatenate(
        [
            _model(theta[b : b + 512], edges, w3[b : b + 512], m3[b : b + 512], s3[b : b + 512])[0]
            for b in range(0, len(w), 512)
        ]
    )
    counts = rng.poisson(lam).astype(np.float64)
    counts[:40] = rng.poisson(0.5, (40, 48))  # channels without enough photons
    return counts, edges, w, m, s, period


def child(repeat: int) -> dict[str, Any]:
    """Timings of this interpreter's b2calib (the first call included), and its fits."""
    from b2calib.fit.template_shift import fit_template_shift

    counts, edges, w, m, s, period = inputs()
    t0 = time.perf_counter()
    sub = slice(40, 440)  # 400 channels: compiled
    small = fit_template_shift(  # the first compiled call: numba's start-up and its cache
        counts[sub], edges, w[sub], m[sub], s[sub], period=period, threads=1
    )
    first = time.perf_counter() - t0
    one, two = [], []
    for _ in range(repeat):
        c0 = time.process_time()
        fits = fit_template_shift(counts, edges, w, m, s, period=period, threads=1)
        one.append(time.process_time() - c0)
        t1 = time.perf_counter()
        fit_template_shift(counts, edges, w, m, s, period=period, threads=2)
        two.append(time.perf_counter() - t1)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"fits_{os.getpid()}.npz"
    np.savez(
        path,
        status=fits.status,
        iterations=fits.iterations,
        **{f"v_{p}": fits.values[p] for p in fits.parameters},
        **{f"e_{p}": fits.errors[p] for p in fits.parameters},
    )
    return {
        "first_call": first,
        "cpu_1_thread": min(one),
        "wall_2_threads": min(two),
        "fits": str(path),
        "ok": int(small.ok.sum()),
    }


def run_child(pythonpath: str | None, repeat: int) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--repeat", str(repeat)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare(a: str, b: str) -> str:
    """How the fits of ``a`` differ from those of ``b`` (the reference): the channels the
    Levenberg-Marquardt fitted, and those it left to the iminuit fallback (60 iterations)."""
    x, y = np.load(a), np.load(b)
    same = np.array_equal(x["status"], y["status"])
    ok = y["status"] == int(ChannelStatus.OK)
    fallback = y["iterations"] >= 60

    def worst(sel: npt.NDArray[np.bool_]) -> float:
        if not sel.any():
            return 0.0
        return max(
            float(np.nanmax(np.abs(x[f"v_{p}"][sel] - y[f"v_{p}"][sel]) / y[f"e_{p}"][sel]))
            for p in ("n", "mu", "b")
        )

    return (
        f"statuses {'identical' if same else 'DIFFER'}; within {worst(ok & ~fallback):.1e} "
        f"sigma ({int((ok & fallback).sum())} iminuit fallbacks: {worst(ok & fallback):.1e})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--before", help="another checkout's directory (put first on PYTHONPATH)")
    ap.add_argument("--before-label", default="before")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.repeat)))
        return
    here = str(HERE.parent)
    rows: dict[str, list[dict[str, Any]]] = {"this checkout": []}
    if args.before:
        rows[args.before_label] = []
    for _ in range(2):  # interleaved: both see the same load
        rows["this checkout"].append(run_child(here, args.repeat))
        if args.before:
            rows[args.before_label].append(run_child(args.before, args.repeat))
    # the numpy path (the reference), once
    from b2calib.fit import template_shift

    counts, edges, w, m, s, period = inputs()
    template_shift._compiled = lambda: None  # type: ignore[assignment]
    t0 = time.process_time()
    ref = template_shift.fit_template_shift(counts, edges, w, m, s, period=period)
    t_numpy = time.process_time() - t0
    ref_path = OUT / "fits_numpy.npz"
    np.savez(
        ref_path,
        status=ref.status,
        iterations=ref.iterations,
        **{f"v_{p}": ref.values[p] for p in ref.parameters},
        **{f"e_{p}": ref.errors[p] for p in ref.parameters},
    )
    loadavg = Path("/proc/loadavg")
    load = loadavg.read_text().split()[:3] if loadavg.exists() else []
    lines = [
        "# The template fit of top-channel-t0 alone (8192 TOP-shaped channels)",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; load {' '.join(load)}",
        "- command: `python bench/bench_template_fit.py"
        + (
            f" --before {args.before} --before-label '{args.before_label}'`" if args.before else "`"
        ),
        f"- fits: {int((ref.status == 0).sum())} OK of {len(ref.status)} (numpy reference), "
        "the iminuit fallback included",
        "",
        "Each checkout in a fresh interpreter, twice, interleaved; best of "
        f"{args.repeat} within each. first call = a 400-channel fit, the first in the "
        "interpreter (numba's start-up and its cache). Agreement: against the numpy path "
        "(scipy's erfc), this run.",
        "",
        "| checkout | first call | fit CPU, 1 thread | fit wall, 2 threads | agreement |",
        "|---|---:|---:|---:|---|",
    ]
    for label, runs in rows.items():
        lines.append(
            f"| {label} | {min(r['first_call'] for r in runs):.2f} s "
            f"| {min(r['cpu_1_thread'] for r in runs):.2f} s "
            f"| {min(r['wall_2_threads'] for r in runs):.2f} s "
            f"| {compare(runs[-1]['fits'], str(ref_path))} |"
        )
    lines.append(f"| numpy path (reference) | | {t_numpy:.2f} s | | |")
    text = "\n".join(lines) + "\n"
    (HERE / "RESULTS_template_fit.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
