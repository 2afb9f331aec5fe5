"""Pool workers end with their parent (issue 13: kill -9 of `b2calib calibrate` left its pool
workers alive, adopted by PID 1, for minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def slow_data(tmp_path: Path) -> Path:
    from tests.example_calibration import write_runs

    folder = tmp_path / "slow"
    write_runs(folder, {(1, r): 0.0 for r in (1, 2, 3)}, {(1, r): 50 for r in (1, 2, 3)})
    return folder


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_pool_workers_exit_when_calibrate_is_killed(slow_data: Path, tmp_path: Path) -> None:
    """The issue: kill -9 of `b2calib calibrate` left its pool workers alive, for minutes."""
    env = {**os.environ, "B2CALIB_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "tests.slow_calibration", "calibrate", "test-slow"]
    cmd += ["--data", str(slow_data), "--db", str(tmp_path / "c.sqlite"), "--quiet"]
    cmd += ["--executor", "processes", "--workers", "2", "--no-cache"]
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()
            workers = {p for p in _children(job.pid) if _alive(p)}
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool did not start"
        time.sleep(1.0)  # the workers are inside the collector now
        os.kill(job.pid, signal.SIGKILL)
        job.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "pool workers outlived the killed job"
    finally:
        if job.poll() is None:
            job.kill()
        for p in workers:  # what this test started, by id
            if _alive(p):
                os.kill(p, signal.SIGKILL)


_COMPILER_IN_WORKER = """
import sys
import b2calib.engine  # imports numba (the compiled fills), does not initialise its compiler
from b2calib import _workers

if sys.argv[1] == "without":
    _workers.compiler_ready = lambda: None


def loaded_by_numba() -> int:
    from numba.core.registry import cpu_target

    before = len(sys.modules)
    cpu_target.target_context.refresh()  # what a first compiled call does
    return len(sys.modules) - before


print(_workers.shared_pool(1).submit(loaded_by_numba).result())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers")
def test_pool_workers_inherit_numbas_compiler() -> None:
    """The kept pool's workers are forked after their parent initialised numba's compiler, so
    that their first compiled call does not load its registries (some 600 modules: 1.0-1.6 s per
    worker at load 10, issue 20); without it, the worker loads them."""
    counts = {}
    for case in ("with", "without"):
        out = subprocess.run(
            [sys.executable, "-c", _COMPILER_IN_WORKER, case],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        counts[case] = int(out.stdout.split()[-1])
    assert counts["with"] == 0
    assert counts["without"] > 100


def _worker_gc() -> tuple[int, int]:
    """In a pool worker: objects frozen, and cyclic garbage made here that a collection frees."""
    import gc

    class Node:
        pass

    for _ in range(100):
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    return gc.get_freeze_count(), gc.collect()


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers")
def test_pool_workers_freeze_what_they_inherit() -> None:
    """A kept pool's worker leaves the objects it was forked with out of the garbage collector's
    full collections (their traversal was 0-0.5 s of the workers' 0.8-1.4 s CPU on
    arich-channel-mask's 33 files, issue 20); what it makes itself is still collected."""
    from b2calib import _workers

    _workers.shutdown_pool()
    try:
        frozen, collected = _workers.shared_pool(1).submit(_worker_gc).result()
    finally:
        _workers.shutdown_pool()
    assert frozen > 1000  # the parent's imports at least
    assert collected >= 200  # the worker's own cycles
