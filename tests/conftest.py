"""Shared fixtures: small simulated experiments generated once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from b2calib.sim import SimConfig, SimulationResult, simulate

# fixtures of the conditions-database tests: a PostgreSQL server and a database per test
from tests.browser_server import browser, page  # noqa: F401 (the browser tests' fixtures)
from tests.postgres import postgres_server, postgres_url  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
#: What a bare `pytest` leaves out (pyproject's addopts); `make test` runs everything (-m "").
FAST = "not slow and not ui and not postgres and not root"
#: Fixtures that make a test need ROOT or a PostgreSQL server, and the marker that says so.
_NEEDS = {"root": "root", "postgres_server": "postgres", "postgres_url": "postgres"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by what its fixtures need (before -m selects), so no test that needs
    ROOT or PostgreSQL can be left unmarked."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _NEEDS:
                item.add_marker(_NEEDS[fixture])


_CACHE_ENV = "B2CALIB_CACHE_DIR"
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Point the engine's collector-output cache at a directory of this test session (removed
    at its end), unless the caller chose one: the tests must not fill the user's cache
    (``~/.cache/b2calib``); it had grown to 35 GB over many test sessions."""
    if _CACHE_ENV not in os.environ:
        path = tempfile.mkdtemp(prefix="b2calib-test-cache-")
        os.environ[_CACHE_ENV] = path
        config.stash[_CACHE_KEY] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_CACHE_KEY, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.option.markexpr == FAST:
        return (
            "fast suite: slow, ui, postgres and root tests are deselected "
            "(`make test` or `pytest -m ''` runs every test)"
        )
    return None


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


#: The database backends of the tests that take ``db_url``; the PostgreSQL ones are marked
#: ``postgres`` (a private server, tests/postgres.py).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a new, empty b2calib database: an SQLite file, or a PostgreSQL database of the
    tests' private server. A test taking it runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'b2calib.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


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
