"""Payload files and basf2 local databases: round trips, ROOT readability, corruption."""

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from b2calib.conditions.iov import IoV
from b2calib.conditions.localdb import LocalDatabase, LocalDbEntry
from b2calib.conditions.payload import ChannelStatus, Payload, file_md5
from b2calib.exceptions import PayloadError


def make_payload(n: int = 100) -> Payload:
    rng = np.random.default_rng(1)
    return Payload(
        name="ECLCrystalEnergy",
        keys={"cellID": np.arange(1, n + 1, dtype=np.int32)},
        values={"value": rng.normal(1, 0.03, n)},
        errors={"value": np.full(n, 0.01)},
        status=np.where(np.arange(n) % 10 == 0, ChannelStatus.NOT_ENOUGH_DATA, ChannelStatus.OK),
        metadata={"units": {"value": "1"}, "provenance": {"runs": [1, 2]}},
    )


def test_roundtrip_and_checksum(tmp_path: Path) -> None:
    p = make_payload()
    md5 = p.write(tmp_path / "a.root")
    assert md5 == file_md5(tmp_path / "a.root")
    back = Payload.read(tmp_path / "a.root", checksum=md5)
    assert back.same_content(p)
    assert back.metadata["provenance"] == {"runs": [1, 2]}
    assert list(back.columns) == ["cellID", "value", "value_err", "status"]
    assert back.status is not None
    assert int((back.status == ChannelStatus.NOT_ENOUGH_DATA).sum()) == 10


def test_bytes_are_made_in_memory_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from b2calib.calibration.algorithm import Diagnostics

    def no_temporary_folder(*args: object, **kwargs: object) -> None:
        raise AssertionError("a temporary folder")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_temporary_folder)
    p = make_payload()
    data, md5 = p.to_bytes()
    back = Payload.from_bytes(data, md5)
    assert back.same_content(p)
    assert back.metadata["provenance"] == {"runs": [1, 2]}
    diag = Diagnostics(tables={"t": {"a": np.arange(5), "b": np.linspace(0.0, 1.0, 5)}})
    table = Diagnostics.from_bytes(diag.to_bytes()).tables["t"]
    assert table["a"].tolist() == list(range(5))
    assert table["b"].tolist() == np.linspace(0.0, 1.0, 5).tolist()


def test_corruption_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.root"
    md5 = make_payload().write(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PayloadError, match="checksum mismatch"):
        Payload.read(path, checksum=md5)
    path.write_bytes(b"not root at all")
    with pytest.raises(PayloadError, match="not a readable b2calib payload"):
        Payload.read(path)


def test_invalid_payloads() -> None:
    with pytest.raises(PayloadError, match="different lengths"):
        Payload("X", keys={"ch": np.arange(3)}, values={"value": np.zeros(4)})
    with pytest.raises(PayloadError, match="no value columns"):
        Payload("X", keys={"ch": np.arange(3)})
    with pytest.raises(PayloadError, match="not a valid identifier"):
        Payload("bad name", values={"value": np.zeros(1)})
    with pytest.raises(PayloadError, match="unknown value"):
        Payload("X", values={"value": np.zeros(1)}, errors={"gain": np.zeros(1)})


def test_payload_opens_in_root(tmp_path: Path, root: ModuleType) -> None:
    import json

    ROOT = root

    p = make_payload(50)
    p.write(tmp_path / "a.root")
    f = ROOT.TFile.Open(str(tmp_path / "a.root"))
    tree = f.Get("ECLCrystalEnergy")
    assert tree.GetEntries() == 50
    meta = json.loads(str(f.Get("metadata").GetString()))
    assert meta["name"] == "ECLCrystalEnergy"
    cols = ROOT.RDataFrame("ECLCrystalEnergy", str(tmp_path / "a.root")).AsNumpy(
        ["cellID", "value"]
    )
    assert np.array_equal(cols["cellID"], p.keys["cellID"])
    assert np.array_equal(cols["value"], p.values["value"])
    f.Close()
    # the bytes made in memory (as the database stores them) open too
    (tmp_path / "b.root").write_bytes(p.to_bytes()[0])
    f = ROOT.TFile.Open(str(tmp_path / "b.root"))
    assert f.Get("ECLCrystalEnergy").GetEntries() == 50
    f.Close()


def test_local_database(tmp_path: Path) -> None:
    db = LocalDatabase(tmp_path / "db")
    a, b = make_payload(), make_payload()
    b.values["value"] = b.values["value"] * 1.1
    e1 = db.add(a, (12, 1, 12, 6))
    e2 = db.add(b, (12, 7, -1, -1))
    assert (e1.revision, e2.revision) == (1, 2)
    lines = (tmp_path / "db" / "database.txt").read_text().splitlines()
    assert lines == [
        "dbstore/ECLCrystalEnergy 1 12,1,12,6",
        "dbstore/ECLCrystalEnergy 2 12,7,-1,-1",
    ]
    assert (tmp_path / "db" / "dbstore_ECLCrystalEnergy_rev_2.root").exists()
    assert db.lookup("ECLCrystalEnergy", 12, 6).same_content(a)
    assert db.lookup("ECLCrystalEnergy", 12, 7).same_content(b)
    assert db.lookup("ECLCrystalEnergy", 13, 1).same_content(b)
    with pytest.raises(
        PayloadError, match="no payload 'ECLCrystalEnergy' valid for run \\(11, 5\\)"
    ):
        db.lookup("ECLCrystalEnergy", 11, 5)


def test_local_database_parsing(tmp_path: Path) -> None:
    (tmp_path / "database.txt").write_text(
        "# comment\n\ndbstore/BeamSpot 3 0,0,-1,-1  # all runs\ndbstore/Bad line\n"
    )
    db = LocalDatabase(tmp_path)
    with pytest.raises(PayloadError, match=r"database.txt:4: not a database.txt line"):
        db.entries()
    (tmp_path / "database.txt").write_text("dbstore/BeamSpot 3 0,0,-1,-1  # all runs\n")
    assert db.entries() == [LocalDbEntry("BeamSpot", 3, IoV(0, 0, -1, -1))]
    entry = db.entries()[0]
    assert entry.contains(0, 0)
    assert entry.contains(99, 12345)
    assert not LocalDbEntry("X", 1, IoV(12, 5, 12, 9)).contains(12, 10)
    assert LocalDbEntry("X", 1, IoV(12, 5, 13, -1)).contains(13, 99999)
    assert not LocalDbEntry("X", 1, IoV(12, 5, 13, -1)).contains(14, 0)
