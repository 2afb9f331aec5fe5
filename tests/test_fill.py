"""The engine's compiled fills give what ``Hist.fill`` gives, bit for bit."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from b2calib.engine.fill import _channel_axis, fill_1d, fill_2d


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8", "uint16", "uint32", "int64"])
@pytest.mark.parametrize("first", [0, 1, -3, 200])
def test_channel_fill_is_hist_fill(dtype: str, first: int) -> None:
    """Integer ids on a one-bin-per-id axis (binned in integers for ids of up to 32 bits),
    ids below, inside and above the axis, NaN and out-of-range values."""
    rng = np.random.default_rng(abs(first) + len(dtype))
    info = np.iinfo(dtype)
    n = 50
    if first > info.max:
        pytest.skip("no id of this type on the axis")
    ids = np.concatenate(
        [
            rng.integers(max(info.min, first - 5), min(info.max, first + n + 5), 5000),
            [info.min, info.max, max(info.min, first - 1), min(info.max, first + n)],
        ]
    ).astype(dtype)
    values = rng.normal(0.5, 0.4, ids.size).astype(np.float32)
    values[:7] = [np.nan, np.inf, -np.inf, 0.0, 1.0, -0.0, 0.9999999]
    axis = (n, first - 0.5, first + n - 0.5)
    assert (_channel_axis(ids, axis) is not None) == (np.dtype(dtype).itemsize <= 4)
    h = hist.Hist(hist.axis.Regular(*axis), hist.axis.Regular(10, 0.0, 1.0), storage="int64")
    fill_2d(h.view(flow=True), ids, values, axis, (10, 0.0, 1.0))
    ref = hist.Hist(hist.axis.Regular(*axis), hist.axis.Regular(10, 0.0, 1.0), storage="int64")
    ref.fill(ids.astype(np.float64), values)
    assert np.array_equal(h.view(flow=True), ref.view(flow=True))


def test_other_axes_are_binned_as_floats() -> None:
    ids = np.arange(-3, 40, dtype=np.int16)
    assert _channel_axis(ids, (20, 0.0, 40.0)) is None  # two ids per bin
    assert _channel_axis(ids, (40, 0.0, 40.0)) is None  # edges at integers
    assert _channel_axis(ids.astype(np.float32), (40, -0.5, 39.5)) is None
    for axis in [(20, 0.0, 40.0), (40, 0.0, 40.0), (7, -0.25, 33.1)]:
        h = hist.Hist(hist.axis.Regular(*axis), hist.axis.Regular(2, 0.0, 1.0), storage="int64")
        fill_2d(h.view(flow=True), ids, np.full(ids.size, 0.7), axis, (2, 0.0, 1.0))
        ref = hist.Hist(hist.axis.Regular(*axis), hist.axis.Regular(2, 0.0, 1.0), storage="int64")
        ref.fill(ids.astype(np.float64), np.full(ids.size, 0.7))
        assert np.array_equal(h.view(flow=True), ref.view(flow=True))
        one = hist.Hist(hist.axis.Regular(*axis), storage="int64")
        fill_1d(one.view(flow=True), ids, axis)
        assert np.array_equal(one.view(flow=True), ref.project(0).view(flow=True))
