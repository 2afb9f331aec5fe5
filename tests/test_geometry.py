"""Channel maps have the real detector's channel counts and consistent numberings."""

import numpy as np
import pytest

from b2calib.geometry import arich, cdc, ecl, klm, top, vxd


def test_ecl_counts_and_crates() -> None:
    cells = np.arange(1, ecl.N_CRYSTALS + 1)
    assert ecl.N_CRYSTALS == 8736
    assert ecl.N_RINGS == 69
    crates = ecl.crate_of(cells)
    assert sorted(set(crates.tolist())) == list(range(1, 53))
    counts = np.bincount(crates)[1:]
    assert counts[:36].tolist() == [184] * 36  # barrel: 46 rings x 4 phi columns
    assert counts[36:44].tolist() == [144] * 8  # forward endcap: 1152 / 8
    assert counts[44:].tolist() == [120] * 8  # backward endcap: 960 / 8
    assert np.array_equal(ecl.cell_id(ecl.ring_of(cells), ecl.iphi_of(cells)), cells)


def test_ecl_neighbours_contain_centre_and_stay_in_range() -> None:
    nb = ecl.neighbours(5)
    cells = np.arange(1, ecl.N_CRYSTALS + 1)
    assert np.array_equal(nb[:, 12], cells)
    assert nb.min() >= 0
    assert nb.max() <= ecl.N_CRYSTALS
    # a barrel crystal has a full 5x5 window of distinct crystals
    barrel = cells[ecl.RING_REGION[ecl.ring_of(cells)] == 1][500]
    assert len(set(nb[barrel - 1].tolist())) == 25


def test_ecl_ring_lookup() -> None:
    assert ecl.find_ring(np.radians([10.0, 90.0, 160.0])).tolist()[0] == -1
    assert ecl.find_ring(np.radians([90.0]))[0] in range(13, 59)
    assert ecl.find_ring(np.radians([31.8]))[0] == -1  # the forward gap


def test_cdc_counts() -> None:
    assert cdc.LAYER_NWIRES.sum() == 14336
    assert len(cdc.LAYER_NWIRES) == 56
    boards = cdc.board_of(np.arange(cdc.N_WIRES))
    assert boards.max() + 1 == 300
    assert np.bincount(boards).max() == 48
    gw = np.arange(cdc.N_WIRES)
    layer = cdc.layer_of(gw)
    assert np.array_equal(cdc.global_wire(layer, gw - cdc.LAYER_FIRST[layer]), gw)
    assert 16.0 < cdc.LAYER_RADIUS[0] < 17.0
    assert 110.0 < cdc.LAYER_RADIUS[-1] < 112.0


def test_top_arich_counts() -> None:
    assert top.N_CHANNELS == 16 * 512
    assert top.module_of_phi(np.linspace(-np.pi, np.pi, 1000)).min() == 1
    assert top.module_of_phi(np.linspace(-np.pi, np.pi, 1000)).max() == 16
    assert arich.N_CHANNELS == 420 * 144
    assert arich.RING_NMODULES.sum() == 420


def test_klm_channel_roundtrip() -> None:
    ch = np.arange(1, klm.N_CHANNELS + 1)
    d = klm.decode(ch)
    back = klm.channel(
        d["subdetector"], d["section"], d["sector"], d["layer"], d["plane"], d["strip"]
    )
    assert np.array_equal(back, ch)
    with pytest.raises(ValueError, match="KLM channel"):
        klm.decode([0])


def test_vxd_ids() -> None:
    assert vxd.N_SVD_SENSORS == 7 * 2 + 10 * 3 + 12 * 4 + 16 * 5
    assert vxd.N_PXD_SENSORS == 40
    layer, ladder, sensor = vxd.decode_vxd_id(vxd.SVD_IDS)
    assert np.array_equal(np.stack([layer, ladder, sensor], 1), vxd.SVD_SENSOR_TABLE)
    assert np.array_equal(vxd.sensor_index(vxd.PXD_IDS, "PXD"), np.arange(40))
    with pytest.raises(ValueError, match="unknown SVD"):
        vxd.sensor_index([vxd.vxd_id(3, 8, 1)], "SVD")
