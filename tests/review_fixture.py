"""The database the payload-validation and conditions browser tests review: the committed sample
bucket's prompt loop with its planted outlier, left TESTING for the manager.

:func:`prepare_review_database` writes a SQLite database (conditions and data quality in one
file, as ``make demo`` does) holding

* ``previous_e12``: ``data-samples/bucket/previous`` (the truth but for the planted outlier,
  :data:`PLANTED`: crate 28's ECL time offset 4 ns lower than this bucket's truth);
* ``prompt_bucket1``, TESTING: the prompt loop over bucket 1 (exp 12, runs 1-11) of the
  calibrations :data:`CALIBRATIONS` (CDC and ECL) with ``previous_e12`` as input tag, their job
  records, validations and diagnostics; ecl-time's validation names crate 28 as the one outlier
  of ECLCrateTimeOffset;
* the sample's runs, monitoring variables and QA histograms
  (:func:`tests.browser_server.prepare_database`, references run 12/1, evaluated);
* the users :data:`REVIEW_USERS`: manager ``boss``, CDC expert ``alice``, ECL expert ``erin``,
  viewer ``vic``.

It is built once for a given content of the sample and of the code (a cache file under
``build/test-cache``, keyed by their digest) and copied for each caller, who may write to
the copy (approve, reject).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest

from b2calib.conditions import ConditionsDB
from b2calib.prompt import run_prompt
from b2calib.qa.store import QADatabase
from tests.browser_server import USERS, prepare_database
from tests.conftest import REPO

with warnings.catch_warnings():  # luigi warns on its import (as pytest.importorskip hides it)
    warnings.simplefilter("ignore", DeprecationWarning)
    import b2luigi  # noqa: F401

SAMPLE = REPO / "data-samples" / "bucket"
CACHE = REPO / "build" / "test-cache"
#: The input tag (the previous bucket's constants) and the staging tag.
PREVIOUS_TAG = "previous_e12"
STAGING_TAG = "prompt_bucket1"
#: The cheap calibrations of the README's prompt session (CDC dE/dx, ECL time: the planted one).
CALIBRATIONS = ("cdc-dedx-run-gain", "cdc-dedx-cosine", "ecl-time")
#: The planted outlier of the sample (data-samples/bucket.toml) and where the loop finds it.
PLANTED: dict[str, Any] = {
    "payload": "ECLCrateTimeOffset",
    "channel": 28,
    "shift": 4.0,
    "calibration": "ecl-time",
    "iov": "12,1,12,6",
}
#: The users of the review tests: name -> (password, role, detectors).
REVIEW_USERS = {**USERS, "erin": ("erin-secret-1", "expert", ("ECL",))}


def _digest() -> str:
    """Digest of what the database is made from: the sample (its runs, catalogue, both local
    databases) and the code (b2calib and these helpers)."""
    h = hashlib.sha256()
    files = [
        SAMPLE / "runs.json",
        SAMPLE / "catalogue.json",
        *sorted((SAMPLE / "truth").iterdir()),
        *sorted((SAMPLE / "previous").iterdir()),
        *sorted((REPO / "b2calib").rglob("*.py")),
        Path(__file__),
        REPO / "tests" / "browser_server.py",
    ]
    for f in files:
        h.update(f.relative_to(REPO).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _build(path: Path) -> None:
    url = f"sqlite:///{path}"
    db = ConditionsDB(url, author="boss")
    db.import_local(SAMPLE / "previous", PREVIOUS_TAG, description="the previous bucket")
    prepare_database(SAMPLE, path)  # runs, QA variables and histograms, USERS
    QADatabase(url).users.add("erin", *REVIEW_USERS["erin"][:2], REVIEW_USERS["erin"][2])
    run_prompt(
        SAMPLE,
        db=db,
        bucket=1,
        input_tags=(PREVIOUS_TAG,),
        calibrations=CALIBRATIONS,
        workers=1,
        progress=False,
    )
    state = db.tag(STAGING_TAG).state
    if state != "TESTING":
        raise RuntimeError(f"the review database's {STAGING_TAG} is {state}, not TESTING")
    db.engine.dispose()
    with sqlite3.connect(path) as conn:  # everything in the one file that is copied
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def prepare_review_database(path: str | os.PathLike[str]) -> str:
    """Write the review database (see the module's description) to ``path`` and return its
    URL; built once per content of the sample and the code, then copied."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"review-{_digest()}.sqlite"
    if not cached.exists():
        for old in CACHE.glob("review-*.sqlite"):
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=CACHE, prefix=".review-", suffix=".sqlite")
        os.close(fd)
        os.unlink(tmp)
        try:
            _build(Path(tmp))
            os.replace(tmp, cached)  # concurrent builders: the last one wins, both complete
        finally:
            for leftover in Path(tmp).parent.glob(Path(tmp).name + "*"):
                leftover.unlink(missing_ok=True)
    target = Path(path)
    shutil.copyfile(cached, target)
    return f"sqlite:///{target.resolve()}"


@pytest.fixture
def review_db(tmp_path: Path) -> str:
    """URL of a copy of the review database for one test (import it into a test module:
    ``from tests.review_fixture import review_db  # noqa: F401``)."""
    return prepare_review_database(tmp_path / "review.sqlite")
