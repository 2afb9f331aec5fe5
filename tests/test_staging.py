"""Staging payloads of several calibrations into one tag: a calibration replaces its own earlier
IoVs; where two calibrations write one payload name for the same runs, the one declared to
prevail keeps those runs whatever the order they were staged in, and without a declaration the
second staging is refused, writing nothing."""

from __future__ import annotations

import numpy as np
import pytest

from b2calib.conditions import ConditionsDB, IoV
from b2calib.conditions.database import PayloadFile
from b2calib.conditions.payload import Payload
from b2calib.exceptions import ConditionsError


def _mask(made_by: str, value: float) -> PayloadFile:
    return PayloadFile.of(
        Payload(
            "TestMasks",
            keys={"pixel": np.arange(3)},
            values={"hot": np.full(3, value)},
            metadata={"provenance": {"calibration": made_by}},
        )
    )


def _stage(db: ConditionsDB, owner: str, iovs: list[str], value: float, **rules: object) -> None:
    with db.write() as conn:
        db.stage(
            conn,
            "staging",
            [(IoV.parse(i), _mask(owner, value)) for i in iovs],
            description="test",
            owner=owner,
            **rules,  # type: ignore[arg-type]
        )


def _content(db: ConditionsDB) -> list[tuple[str, str]]:
    return sorted(
        (str(e.iov), e.payload.provenance["calibration"]) for e in db.iovs("staging", "TestMasks")
    )


PHYSICS, COSMIC = ("physics", ["12,1,-1,-1"]), ("cosmic", ["12,4,12,4", "12,6,12,6"])
EXPECTED = [
    ("12,1,12,3", "physics"),
    ("12,4,12,4", "cosmic"),
    ("12,5,12,5", "physics"),
    ("12,6,12,6", "cosmic"),
    ("12,7,-1,-1", "physics"),
]


@pytest.mark.parametrize("cosmic_first", [False, True])
def test_the_prevailing_calibration_keeps_its_runs_in_either_order(tmp_path, cosmic_first):
    db = ConditionsDB(tmp_path / "c.sqlite")
    physics = lambda: _stage(db, *PHYSICS, 1.0, yields_to={"cosmic"})  # noqa: E731
    cosmic = lambda: _stage(db, *COSMIC, 2.0, prevails_over={"physics"})  # noqa: E731
    for step in (cosmic, physics) if cosmic_first else (physics, cosmic):
        step()
    assert _content(db) == EXPECTED
    actions = {h.action for h in db.history("staging")}
    assert ("carve_iov" in actions) is not cosmic_first


def test_a_calibration_replaces_its_own_earlier_iovs(tmp_path):
    db = ConditionsDB(tmp_path / "c.sqlite")
    _stage(db, "physics", ["12,1,12,5"], 1.0)
    _stage(db, "physics", ["12,3,-1,-1"], 3.0)
    assert _content(db) == [("12,3,-1,-1", "physics")]


def test_two_calibrations_without_a_declaration_are_refused_and_nothing_is_written(tmp_path):
    db = ConditionsDB(tmp_path / "c.sqlite")
    _stage(db, *PHYSICS, 1.0)
    before = (_content(db), len(db.history()), len(db.payloads("TestMasks")))
    with pytest.raises(ConditionsError, match=r"cosmic stages TestMasks .* calibration physics"):
        _stage(db, *COSMIC, 2.0)
    assert (_content(db), len(db.history()), len(db.payloads("TestMasks"))) == before


def test_the_pxd_masks_of_cosmic_runs_prevail_over_the_physics_runs_masks():
    from b2calib.calibration import get_calibration

    assert get_calibration("pxd-hot-dead-cosmic").prevails_over == ("pxd-hot-dead",)
