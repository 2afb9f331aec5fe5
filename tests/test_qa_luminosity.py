"""The runs' luminosity by source (issue 19): recorded (run registry), Bhabha and
gamma-gamma side by side under the same names everywhere, with totals that say what they sum;
a missing measurement stays missing (the run summary used to put the recorded value in its
place and call the sum Bhabha)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from b2calib.qa.grl import LUMINOSITY
from b2calib.qa.monitoring import MonitoringValue, RunQA
from b2calib.qa.store import LUMINOSITY_COLUMNS, QADatabase, RunLuminosity
from tests.test_qa_store import MONA, _runs

#: (bhabha, error, gamma-gamma, error) measured per run, pb^-1; runs 2 and 9 have none, run 6
#: Bhabha alone, run 7 gamma-gamma alone.
MEASURED: dict[int, tuple[float | None, float | None, float | None, float | None]] = {
    1: (98.0, 0.5, 102.0, 1.0),
    3: (101.5, 0.6, 104.0, 1.2),
    4: (100.0, 0.5, 105.0, 1.1),
    5: (106.0, 0.7, 103.0, 1.0),
    6: (107.0, 0.7, None, None),
    7: (None, None, 108.0, 1.0),
    8: (110.0, 0.8, 109.0, 1.3),
}


@pytest.fixture
def db(db_url: str) -> Iterator[QADatabase]:
    qa = QADatabase(db_url, author="admin")
    qa.runs.import_runs(_runs())  # recorded: 100 + run pb^-1; run 9 a cosmic run, 0
    qa.users.add("mona", "m-secret", "manager")
    for run, (b, be, g, ge) in MEASURED.items():
        values = []
        if b is not None and be is not None:
            values.append(MonitoringValue("bhabha.lumi_pb", "BEAM", b, be, "pb^-1"))
        if g is not None and ge is not None:
            values.append(MonitoringValue("gamma_gamma.lumi_pb", "BEAM", g, ge, "pb^-1"))
        qa.histograms.store_run(RunQA(3, run, values, {}))
    yield qa
    qa.close()


def test_the_names_are_fixed() -> None:
    assert LUMINOSITY_COLUMNS == ("recorded (run registry)", "Bhabha", "gamma-gamma")
    assert LUMINOSITY_COLUMNS[0] == LUMINOSITY  # the good-run lists sum the recorded one


def test_each_run_has_its_three_luminosities(db: QADatabase) -> None:
    table = db.luminosity(exp=3)
    assert [r.run for r in table] == list(range(1, 10))
    assert table.get(3, 1) == RunLuminosity(3, 1, "physics", "4S", 101.0, 98.0, 0.5, 102.0, 1.0)
    two = table.get(3, 2)
    assert two is not None
    # regression: not measured is None, never the recorded 102 pb^-1 in its place
    assert (two.recorded, two.bhabha, two.gamma_gamma) == (102.0, None, None)
    six, seven = table.get(3, 6), table.get(3, 7)
    assert six is not None
    assert seven is not None
    assert (six.bhabha, six.gamma_gamma, six.gamma_gamma_error) == (107.0, None, None)
    assert (seven.bhabha, seven.bhabha_error, seven.gamma_gamma) == (None, None, 108.0)
    assert [six.value(c) for c in LUMINOSITY_COLUMNS] == [106.0, 107.0, None]
    assert [six.error(c) for c in LUMINOSITY_COLUMNS] == [None, 0.7, None]
    assert table.get(3, 99) is None
    with pytest.raises(KeyError, match="no luminosity 'L Bhabha'"):
        six.value("L Bhabha")


def test_totals_sum_what_was_measured_and_name_the_rest(db: QADatabase) -> None:
    totals = db.luminosity(exp=3).totals()
    assert list(totals) == list(LUMINOSITY_COLUMNS)
    rec, bhabha, gg = totals.values()
    assert rec.lumi_pb == sum(100.0 + r for r in range(1, 9))  # the cosmic run recorded 0
    assert (rec.runs, rec.missing, rec.error_pb) == (9, (), 0.0)
    assert bhabha.lumi_pb == pytest.approx(98.0 + 101.5 + 100.0 + 106.0 + 107.0 + 110.0)
    assert bhabha.runs == 6
    assert bhabha.missing == ((3, 2), (3, 7), (3, 9))
    assert bhabha.error_pb == pytest.approx(math.sqrt(0.25 + 0.36 + 0.25 + 0.49 + 0.49 + 0.64))
    assert gg.missing == ((3, 2), (3, 6), (3, 9))
    assert gg.lumi_pb == pytest.approx(102.0 + 104.0 + 105.0 + 103.0 + 108.0 + 109.0)
    assert str(rec) == "recorded (run registry): 0.836 fb^-1"
    assert str(bhabha) == "Bhabha: 0.623 +- 0.002 fb^-1 (3 runs not measured)"
    assert bhabha.lumi_fb == pytest.approx(bhabha.lumi_pb / 1000)


def test_selection_by_range_and_run_type(db: QADatabase) -> None:
    assert [r.run for r in db.luminosity(exp=3, first=3, last=5)] == [3, 4, 5]
    assert [r.run for r in db.luminosity(run_type="cosmic")] == [9]
    assert len(db.luminosity(exp=4)) == 0
    assert db.luminosity(exp=4).total("Bhabha").lumi_pb == 0.0
    physics = db.luminosity(exp=3, run_type="physics").totals()
    assert physics["recorded (run registry)"].runs == 8


def test_frame_has_the_named_columns(db: QADatabase) -> None:
    frame = db.luminosity(exp=3).to_frame()
    assert list(frame.columns) == [
        "exp",
        "run",
        "run type",
        "beam energy",
        "recorded (run registry)",
        "Bhabha",
        "Bhabha error",
        "gamma-gamma",
        "gamma-gamma error",
    ]
    row = frame.set_index("run").loc[2]
    assert row["recorded (run registry)"] == 102.0
    assert math.isnan(row["Bhabha"])
    assert math.isnan(row["gamma-gamma"])
    assert frame["Bhabha"].sum() == pytest.approx(db.luminosity(exp=3).total("Bhabha").lumi_pb)


def test_the_good_run_list_sums_the_recorded_luminosity(db: QADatabase) -> None:
    grl = db.grls.make("physics", "run_type == physics", user=MONA)
    table = db.luminosity(exp=3, run_type="physics")
    assert grl.lumi_pb == table.total("recorded (run registry)").lumi_pb
    assert grl.lumi_pb != pytest.approx(table.total("Bhabha").lumi_pb)
