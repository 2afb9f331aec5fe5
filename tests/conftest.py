"""Shared fixtures: small simulated experiments generated once per test session."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import pytest

from b2calib.sim import SimConfig, SimulationResult, simulate

# fixtures of the conditions-database tests: a PostgreSQL server and a database per test
from tests.postgres import postgres_server, postgres_url  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data-samples" / "bucket"


def small_config(**kw: object) -> SimConfig:
    """Six runs with physics (4S and continuum) and cosmic runs, a few thousand events."""
    base: dict[str, object] = dict(
        exp=7,
        n_runs=6,
        seed=11,
        events_per_run=1500,
        run_types={"physics": 0.7, "cosmic": 0.3, "beam": 0.0, "debug": 0.0},
        continuum_fraction=0.35,
        inst_lumi_1e34=3.0,
    )
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimConfig, SimulationResult]:
    """A simulated experiment shared by the read-only tests."""
    cfg = small_config()
    out = tmp_path_factory.mktemp("exp7")
    return cfg, simulate(cfg, out, jobs=2)


@pytest.fixture(scope="session")
def sample() -> Path:
    """The committed sample bucket."""
    assert (SAMPLE / "runs.json").exists(), "data-samples/bucket is missing: run `make sample`"
    return SAMPLE


@pytest.fixture(scope="session")
def root() -> ModuleType:
    """ROOT from the pip package ``root`` (a test dependency: its absence is a failure)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*This distribution of ROOT is in alpha")
        import ROOT

    ROOT.gROOT.SetBatch(True)
    return ROOT
