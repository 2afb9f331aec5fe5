"""The closure helpers themselves: they refuse what no pull can judge."""

from __future__ import annotations

import numpy as np
import pytest

from b2calib.conditions import ChannelStatus, Payload
from tests.closure import ClosureError, assert_closure, check_quoted, ok_channels, pulls

OK, NED = ChannelStatus.OK, ChannelStatus.NOT_ENOUGH_DATA


def test_pulls_of_honest_constants() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 1, 4000)
    errors = rng.uniform(0.5, 2.0, 4000)
    fitted = truth + errors * rng.normal(0, 1, 4000)
    s = assert_closure(fitted, errors, truth, "toy")
    assert s.n == 4000
    assert abs(s.mean) < 0.05
    assert s.width == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (0.0, "uncertainty <= 0"),
        (-0.1, "uncertainty <= 0"),
        (np.nan, "uncertainty that is not finite"),
        (np.inf, "uncertainty that is not finite"),
    ],
)
def test_an_ok_channel_needs_a_positive_uncertainty(error: float, message: str) -> None:
    """Issue 14: an ECL crystal came out OK with value 0 and error exactly 0."""
    fitted, errors, truth = np.zeros(10), np.ones(10), np.zeros(10)
    errors[7] = error
    with pytest.raises(ClosureError, match=f"crystal t0: 1 channel.*{message}: 7 "):
        assert_closure(fitted, errors, truth, "crystal t0")
    with pytest.raises(ClosureError, match=message):
        pulls(fitted, errors, truth)
    with pytest.raises(ClosureError, match="1 channel"):
        check_quoted(fitted, errors)
    fitted[7], errors[7] = np.nan, 1.0
    with pytest.raises(ClosureError, match="value that is not finite"):
        pulls(fitted, errors, truth)


def test_ok_channels_checks_the_payload() -> None:
    cells = np.arange(1, 9, dtype=np.int32)
    value = np.array([0.1, -0.2, 0.0, np.nan, 0.3, 0.0, 0.2, -0.1])
    error = np.array([0.1, 0.1, np.nan, np.nan, 0.1, 0.0, 0.1, 0.1])
    status = np.array([OK, OK, NED, NED, OK, OK, OK, OK], dtype=np.int8)
    payload = Payload(
        "T", keys={"cellID": cells}, values={"value": value}, errors={"value": error}, status=status
    )
    # cell 6: OK with value 0 and error exactly 0
    with pytest.raises(ClosureError, match=r"T: 1 channel.*<= 0: 6 \(value 0, error 0\)"):
        ok_channels(payload)
    status[5] = NED  # flagged, it may have no uncertainty
    ok = ok_channels(payload)
    np.testing.assert_array_equal(cells[ok], [1, 2, 5, 7, 8])
