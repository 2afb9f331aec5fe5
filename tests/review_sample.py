"""A synthetic staging tag for the payload validation page (browser tests and bench): one
``ecl-time`` calibration job staged ECLCrystalTimeOffset for the 8736 ECL crystals in 100 IoVs
(one a run), and ECLCrateTimeOffset for its 52 crates in one IoV, with its diagnostics (the
crystal-time histogram and the per-crystal Gaussian fits the drill-down shows); the crystals'
offsets replace the one IoV of tag ``review_previous``, and crystal :data:`PLANTED` is an
outlier planted 10 ns off (in its fitted histogram, so in every IoV)."""

from __future__ import annotations

from pathlib import Path

import hist
import numpy as np

from b2calib.calibration.jobs import JobStore
from b2calib.conditions import ConditionsDB, IoV, Payload
from b2calib.qa.store import QADatabase

__all__ = ["NAME", "N_CRYSTALS", "N_IOVS", "PLANTED", "PREVIOUS", "TAG", "USERS", "build_database"]

N_CRYSTALS = 8736
N_IOVS = 100
EXP = 20
TAG, PREVIOUS, NAME = "review_staging", "review_previous", "ECLCrystalTimeOffset"
#: The tag's other payload name (first in its summary: the page opens on it).
CRATE_NAME, N_CRATES = "ECLCrateTimeOffset", 52
#: The crystal planted 10 ns off in the last IoV (the worst outlier by far).
PLANTED = 4242
#: Users: name -> (password, role, detectors).
USERS = {
    "boss": ("boss-secret-1", "manager", ()),
    "ecl-expert": ("ecl-secret-1", "expert", ("ECL",)),
    "alice": ("alice-secret-1", "expert", ("CDC",)),
    "vic": ("vic-secret-1", "viewer", ()),
}


def _payload(values: np.ndarray, errors: np.ndarray, status: np.ndarray, note: str) -> Payload:
    return Payload(
        NAME,
        keys={"cellID": np.arange(1, N_CRYSTALS + 1, dtype=np.int32)},
        values={"value": values},
        errors={"value": errors},
        status=status.astype(np.int8),
        metadata={"units": {"value": "ns"}, "description": f"review sample: {note}"},
    )


def build_database(path: Path, seed: int = 18) -> str:
    """The synthetic database (see the module's description) in SQLite file ``path``; returns
    its URL."""
    from b2calib.calibration.algorithm import Diagnostics
    from b2calib.detectors.ecl.time import DEFAULT_CONFIG, RESIDUAL_BINS
    from b2calib.fit.batched import ChannelFits

    rng = np.random.default_rng(seed)
    url = f"sqlite:///{path}"
    db = ConditionsDB(url, author="review-sample")
    offsets = rng.normal(0.0, 1.0, N_CRYSTALS)
    ok = np.zeros(N_CRYSTALS, np.int8)
    db.create_tag(PREVIOUS, description="review sample: the constants the staging tag replaces")
    before = _payload(offsets, np.full(N_CRYSTALS, 0.05), ok, "previous")
    db.upload_and_add(PREVIOUS, [(before, IoV(EXP, 0, -1, -1))])

    # the job's diagnostics: crystal x residual histogram and the per-crystal Gaussian fits
    n, lo, hi = RESIDUAL_BINS
    edges = np.linspace(lo, hi, n + 1)
    entries = rng.poisson(400.0, N_CRYSTALS).astype(float)
    entries[:40] = rng.integers(0, 15, 40)  # too few to fit
    mu = rng.normal(0.0, 0.02, N_CRYSTALS)  # converged: small residuals of the applied offsets
    mu[PLANTED - 1] += 10.0  # but this crystal's timing jumped
    sigma = np.full(N_CRYSTALS, 1.5)
    from scipy.special import ndtr

    cdf = ndtr((edges[None, :] - mu[:, None]) / sigma[:, None])
    counts = rng.poisson(entries[:, None] * np.diff(cdf, axis=1)).astype(float)
    h = hist.Hist(
        hist.axis.Integer(1, N_CRYSTALS + 1, name="cell", label="cellID", flow=False),
        hist.axis.Regular(n, lo, hi, name="residual", label="t - T0 - tof - offsets (ns)"),
        storage=hist.storage.Double(),
    )
    h.view()[...] = counts
    fit_status = np.where(entries >= DEFAULT_CONFIG["min_entries"], 0, 1).astype(np.int8)
    errs = sigma / np.sqrt(np.maximum(entries, 1.0))
    fits = ChannelFits(
        parameters=("n", "mu", "sigma"),
        values={"n": entries, "mu": mu, "sigma": sigma},
        errors={"n": np.sqrt(np.maximum(entries, 1.0)), "mu": errs, "sigma": errs / np.sqrt(2)},
        status=fit_status,
        reason=[""] * N_CRYSTALS,
        entries=entries,
        nll=np.zeros(N_CRYSTALS),
        iterations=np.ones(N_CRYSTALS, np.int64),
        method="bench",
    )
    diag = Diagnostics(histograms={"time_crystal": h})
    diag.add_fits("crystal_fits", fits, np.arange(1, N_CRYSTALS + 1))

    store = JobStore(db)
    runs = [(EXP, r) for r in range(1, N_IOVS + 1)]
    job = store.open(
        "review-ecl-time",
        "ecl-time",
        TAG,
        {"input_tags": [PREVIOUS], "config": dict(DEFAULT_CONFIG), "runs": runs},
    )
    step = store.record_step(
        job, 0, "ecl_time", runs, "OK", "review sample: synthetic fits", [], diag.to_bytes()
    )
    status = np.where(fit_status == 0, 0, 1).astype(np.int8)  # ChannelStatus OK / NOT_ENOUGH_DATA
    items = []
    for r in range(1, N_IOVS + 1):
        drift = 0.02 * np.sin(r / 9.0)
        values = offsets + mu + drift + rng.normal(0.0, 0.01, N_CRYSTALS)
        values[status != 0] = offsets[status != 0]
        items.append((IoV(EXP, r, EXP, r), _payload(values, errs, status, f"run {r}")))
    # the crates' offsets: one payload for the whole job (the tag's second payload name)
    crates = Payload(
        CRATE_NAME,
        keys={"crate": np.arange(1, N_CRATES + 1, dtype=np.int32)},
        values={"value": rng.normal(0.0, 0.05, N_CRATES)},
        errors={"value": np.full(N_CRATES, 0.05)},
        status=np.zeros(N_CRATES, np.int8),
        metadata={"units": {"value": "ns"}, "description": "review sample: crate offsets"},
    )
    items.append((IoV(EXP, 1, EXP, N_IOVS), crates))
    iov = f"{EXP},1,{EXP},{N_IOVS}"
    summary = {
        "executions": [
            {"algorithm": "ecl_time", "iov": iov, "message": "review sample",
             "payloads": [NAME, CRATE_NAME], "runs": runs, "status": "OK", "step": step}
        ],
        "channels": {"OK": int((status == 0).sum()), "NOT_ENOUGH_DATA": int((status != 0).sum())},
    }  # fmt: skip
    summary["runs"] = runs
    summary["wall_time"] = 95.0
    store.complete(job, items, summary)
    from b2calib.calibration.validation import ValidationResult, Verdict

    reason = f"{NAME}: 1 of {N_CRYSTALS} crystals beyond 5 sigma (cellID {PLANTED}, +10 ns)"
    store.record_validation(job, ValidationResult(Verdict.WARNING, reason))
    db.set_state(TAG, "TESTING")
    users = QADatabase(url).users
    for name, (password, role, detectors) in USERS.items():
        users.add(name, password, role, detectors)
    return url
