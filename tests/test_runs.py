"""Run registry: storage, queries, data-quality tags and prompt buckets."""

from pathlib import Path

import pytest

from b2calib.exceptions import ConfigError, RunNotFoundError
from b2calib.runs import Run, RunRegistry, make_buckets


def run(exp: int, number: int, lumi: float, rtype: str = "physics", **kw: object) -> Run:
    base: dict[str, object] = dict(
        exp=exp,
        run=number,
        run_type=rtype,
        beam_energy="4S" if rtype == "physics" else "No Beam",
        start=1000.0 * number,
        stop=1000.0 * number + 3600.0,
        lumi_pb=lumi,
        l1_triggers=10,
        detectors=("SVD", "CDC", "ECL"),
        magnet_on=True,
    )
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


def test_buckets_reach_minimum_and_never_cross_experiments() -> None:
    runs = [run(10, r, 3000.0) for r in range(1, 8)] + [run(12, r, 5000.0) for r in range(1, 4)]
    runs.insert(2, run(10, 100, 0.0, "cosmic"))
    buckets = make_buckets(runs, min_lumi_fb=9.0)
    assert [(b.exp, b.first_run, b.last_run, b.complete) for b in buckets] == [
        (10, 1, 3, True),
        (10, 4, 6, True),
        (10, 7, 100, False),  # exp 10 ends below 9 fb^-1: open, not merged into exp 12
        (12, 1, 2, True),
        (12, 3, 3, False),
    ]
    assert buckets[0].lumi_fb == pytest.approx(9.0)
    assert all(len({r.exp for r in b.runs}) == 1 for b in buckets)
    assert buckets[0].name == "bucket01"
    with pytest.raises(ConfigError):
        make_buckets(runs, min_lumi_fb=0)


def test_registry_roundtrip_and_queries(tmp_path: Path) -> None:
    reg = RunRegistry([run(1, 2, 10.0), run(1, 1, 5.0, magnet_on=False), run(1, 3, 0.0, "cosmic")])
    assert [r.run for r in reg] == [1, 2, 3]
    reg.save(tmp_path / "runs.json")
    back = RunRegistry.load(tmp_path / "runs.json")
    assert list(back) == list(reg)
    assert [r.run for r in back.select(run_type="physics")] == [1, 2]
    assert [r.run for r in back.select(run_type=["cosmic"], magnet_on=True)] == [3]
    assert [r.run for r in back.select(runs=range(2, 4))] == [2, 3]
    assert back.total_lumi_pb() == 15.0
    with pytest.raises(ConfigError, match="unknown run type"):
        back.select(run_type="physic")
    with pytest.raises(RunNotFoundError, match=r"run \(1, 9\)"):
        back.get(1, 9)
    with pytest.raises(ConfigError, match="not a run registry"):
        RunRegistry.load(tmp_path / "missing.json")


def test_data_quality_tags() -> None:
    reg = RunRegistry([run(1, 1, 10.0), run(1, 2, 10.0, stop=2000.0 + 600)])
    assert reg.select(dq="Good") == []
    for det in ("SVD", "CDC", "ECL"):
        reg.set_flag(1, 1, det, "GOOD")
    reg.set_flag(1, 2, "SVD", "RECOVERABLE")
    reg.set_flag(1, 2, "CDC", "GOOD")
    reg.set_flag(1, 2, "ECL", "GOOD")
    assert [r.run for r in reg.select(dq="Good")] == [1]
    assert [r.run for r in reg.select(dq="Good Or Recoverable")] == [1, 2]
    assert [r.run for r in reg.select(dq=">=30 Minute Run")] == [1]
    with pytest.raises(ConfigError, match="bad flag"):
        reg.set_flag(1, 1, "CDC", "OK")
    with pytest.raises(ConfigError, match="unknown data-quality tag"):
        reg.select(dq="Great")


def test_run_validation() -> None:
    with pytest.raises(ConfigError, match="unknown beam energy"):
        run(1, 1, 1.0, beam_energy="5S")
    with pytest.raises(ConfigError, match="stops before it starts"):
        run(1, 1, 1.0, stop=0.0)
