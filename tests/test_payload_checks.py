"""Payloads are checked on their way into the conditions database (issue 13): keys in their
detector's range and unique, the row count of the payload type, values finite unless the row's
status flags the channel, no payload of NaN; malformed payload files and local databases give one
line naming the file, not a traceback; payload and global tag names are what basf2 and the
columns allow.

Every test taking ``db`` runs on SQLite and on PostgreSQL (the fixtures of
``tests/test_conditions_db.py``); the command line runs against both too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from b2calib.conditions import ConditionsDB, IoV, LocalDatabase, Payload, PayloadFile
from b2calib.conditions.eventdep import time_dependent
from b2calib.conditions.payload import ChannelStatus
from b2calib.exceptions import ConditionsError, ConfigError, PayloadError
from tests.test_cli_conditions import error, run
from tests.test_conditions_db import db  # noqa: F401  (fixture: both backends)

NAN = float("nan")


def truth(sample: Path, name: str, revision: int = 1) -> Path:
    """A payload file of the committed sample bucket's truth."""
    return sample / "truth" / f"dbstore_{name}_rev_{revision}.root"


def attacked(data: bytes, seed: int) -> bytes:
    """``data`` with 2048 random bytes overwritten in the middle (the issue's attack)."""
    out = bytearray(data)
    mid = len(out) // 2 - 1024
    out[mid : mid + 2048] = np.random.default_rng(seed).bytes(2048)
    return bytes(out)


def parses(data: bytes) -> bool:
    try:
        Payload.from_bytes(data)
    except PayloadError:
        return False
    return True


def cli_env(db_url: str) -> dict[str, str]:
    return {"B2CALIB_DB": db_url, "B2CALIB_USER": "tester"}


def write_raw_payload(path: Path, meta: dict[str, Any], columns: dict[str, Any]) -> None:
    """A payload file with any metadata (a ``metadata`` string and a tree ``X``)."""
    with uproot.recreate(path) as f:
        f["metadata"] = json.dumps(meta)
        f["X"] = columns


# -- the attack ------------------------------------------------------------------------


def test_attacked_payload_file_is_refused_by_upload(
    db: ConditionsDB,  # noqa: F811
    sample: Path,
    tmp_path: Path,
) -> None:
    source = truth(sample, "ECLCrystalEnergy")
    db.upload_file(source)  # the untouched file passes
    original = Payload.read(source)
    readable = 0
    for seed in range(12):
        data = attacked(source.read_bytes(), seed)
        path = tmp_path / f"attacked{seed}.root"
        path.write_bytes(data)
        if not parses(data) or Payload.from_bytes(data).same_content(original):
            continue  # refused as unreadable already, or the bytes were not read
        readable += 1
        with pytest.raises(PayloadError, match=rf"^{path}: payload ECLCrystalEnergy: ") as info:
            db.upload_file(path)
        assert "\n" not in str(info.value)
        with pytest.raises(PayloadError, match=rf"^{path}: payload ECLCrystalEnergy: "):
            db.upload_and_add("T", [(path, IoV(0, 0))])
    assert readable >= 3, "the attack never gave a readable payload: the test proves nothing"
    assert [p.revision for p in db.payloads()] == [1]
    assert db.tags() == []


def test_attacked_payload_is_refused_by_the_command_line(
    db_url: str,
    sample: Path,
    tmp_path: Path,
) -> None:
    env = cli_env(db_url)
    data = attacked(truth(sample, "ECLCrystalEnergy").read_bytes(), 0)
    assert parses(data)
    path = tmp_path / "ECLCrystalEnergy.root"
    path.write_bytes(data)
    message = error(env, "payload", "upload", path)
    assert message.startswith(f"{path}: payload ECLCrystalEnergy: ")
    assert "cellID keys outside the ECL range 1..8736" in message
    message = error(env, "payload", "upload", path, "--gt", "T", "--iov", "0,0,-1,-1")
    assert message.startswith(f"{path}: payload ECLCrystalEnergy: ")
    # a basf2 local database with the attacked file
    folder = tmp_path / "localdb"
    shutil.copytree(sample / "truth", folder)
    (folder / "dbstore_ECLCrystalEnergy_rev_1.root").write_bytes(data)
    message = error(env, "db", "import-local", folder, "--gt", "imported")
    assert message.startswith(f"{folder / 'dbstore_ECLCrystalEnergy_rev_1.root'}: payload ")
    assert "payloads" in run(env, "db", "info")
    assert "no payloads" in run(env, "payload", "list")


def test_sample_truth_imports_and_an_attacked_file_stops_the_import(
    db: ConditionsDB,  # noqa: F811
    sample: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "localdb"
    shutil.copytree(sample / "truth", folder)
    entries = LocalDatabase(folder).entries()
    target = folder / "dbstore_CDCTimeZeros_rev_1.root"
    target.write_bytes(attacked(target.read_bytes(), 1))
    assert parses(target.read_bytes())
    with pytest.raises(PayloadError, match=rf"^{target}: payload CDCTimeZeros: "):
        db.import_local(folder, "truth")
    assert db.payloads() == []
    assert db.tags() == []
    added = db.import_local(sample / "truth", "truth")  # the committed truth passes every check
    assert {e.name for e in added} == {e.name for e in entries}


# -- what a payload must hold ------------------------------------------------------------------


def ecl_energy(**change: Any) -> Payload:
    """A complete ECLCrystalEnergy payload with errors and status, changed by ``change``."""
    n = 8736
    cols: dict[str, Any] = dict(
        keys={"cellID": np.arange(1, n + 1, dtype=np.int32)},
        values={"value": np.full(n, 1.0)},
        errors={"value": np.full(n, 0.01)},
        status=np.full(n, ChannelStatus.OK, dtype=np.int8),
    )
    cols.update(change)
    return Payload("ECLCrystalEnergy", **cols)


def with_row(array: Any, row: int, value: Any) -> Any:
    out = np.array(array, copy=True)
    out[row] = value
    return out


def top_mask(module: Any = None, pixel: Any = None) -> Payload:
    mod = np.repeat(np.arange(1, 17, dtype=np.int16), 512)
    pix = np.tile(np.arange(1, 513, dtype=np.int16), 16)
    return Payload(
        "TOPCalChannelMask",
        keys={
            "module": mod if module is None else module,
            "pixel": pix if pixel is None else pixel,
        },
        values={"value": np.zeros(8192)},
        status=np.zeros(8192, dtype=np.int8),
    )


def svd_strips(ladder: list[int], strip: list[int]) -> Payload:
    """Strips of layer 3, sensor 1, side 0 (one row each) on the ladders ``ladder``."""
    n = len(ladder)
    return Payload(
        "SVDHotStripsCalibrations",
        keys={
            "layer": np.full(n, 3, dtype=np.int8),
            "ladder": np.array(ladder, dtype=np.int8),  # layer 3 has 7 ladders
            "sensor": np.ones(n, dtype=np.int8),
            "side": np.zeros(n, dtype=np.int8),
            "strip": np.array(strip, dtype=np.int16),
        },
        values={"value": np.full(n, 0.3)},
    )


CELLS = np.arange(1, 8737, dtype=np.int32)
STATUS_OK = np.zeros(8736, dtype=np.int8)
REFUSED: list[tuple[str, Callable[[], Payload], str]] = [
    (
        "key above its range",
        lambda: ecl_energy(keys={"cellID": with_row(CELLS, 5, 1376376)}),
        r"1 cellID keys outside the ECL range 1\.\.8736 \(e\.g\. 1376376\)",
    ),
    (
        "key below its range",
        lambda: ecl_energy(keys={"cellID": with_row(CELLS, 0, 0)}),
        r"1 cellID keys outside the ECL range 1\.\.8736 \(e\.g\. 0\)",
    ),
    (
        "duplicate key",
        lambda: ecl_energy(keys={"cellID": with_row(CELLS, 5, 5)}),
        r"1 rows repeat the key of another row \(e\.g\. cellID=5\)",
    ),
    (
        "a row missing",
        lambda: Payload(
            "ECLCrystalEnergy", keys={"cellID": CELLS[:-1]}, values={"value": np.ones(8735)}
        ),
        r"8735 rows, expected 8736 \(one per ECL crystal\)",
    ),
    (
        "other key columns",
        lambda: ecl_energy(keys={"cell": CELLS}),
        r"key columns \['cell'\], expected \['cellID'\]",
    ),
    (
        "float keys",
        lambda: ecl_energy(keys={"cellID": CELLS.astype(np.float64)}),
        "key column cellID holds float64, not integers",
    ),
    (
        "NaN value, status OK",
        lambda: ecl_energy(values={"value": with_row(np.ones(8736), 9, NAN)}),
        r"value is nan in 1 rows whose status is OK \(e\.g\. cellID=10\)",
    ),
    (
        "infinite value, status OK",
        lambda: ecl_energy(values={"value": with_row(np.ones(8736), 9, np.inf)}),
        r"value is inf in 1 rows whose status is OK",
    ),
    (
        "NaN error, status OK",
        lambda: ecl_energy(errors={"value": with_row(np.full(8736, 0.1), 3, NAN)}),
        r"value_err is nan in 1 rows whose status is OK \(e\.g\. cellID=4\)",
    ),
    (
        "NaN value, no status column",
        lambda: ecl_energy(values={"value": with_row(np.ones(8736), 0, NAN)}, status=None),
        r"value is nan in 1 rows \(e\.g\. cellID=1\)",
    ),
    (
        "a payload of NaN",
        lambda: ecl_energy(values={"value": np.full(8736, NAN)}, errors={}),
        r"no value is finite \(a payload of NaN\)",
    ),
    (
        "a payload of NaN, a few channels flagged",
        lambda: ecl_energy(
            values={"value": np.full(8736, NAN)},
            status=with_row(STATUS_OK, 0, ChannelStatus.FAILED),
        ),
        r"no value is finite \(a payload of NaN\)",
    ),
    (
        "a status code that is no ChannelStatus",
        lambda: ecl_energy(status=with_row(STATUS_OK, 2, 9)),
        r"1 rows have a status that is no ChannelStatus \(9\)",
    ),
    (
        "TOP module 17",
        lambda: top_mask(module=np.repeat(np.arange(2, 18, dtype=np.int16), 512)),
        r"512 module keys outside the TOP range 1\.\.16",
    ),
    (
        "TOP (module, pixel) twice",
        lambda: top_mask(pixel=np.tile(with_row(np.arange(1, 513), 1, 1).astype(np.int16), 16)),
        r"16 rows repeat the key of another row \(e\.g\. module=1, pixel=1\)",
    ),
    (
        "a single-row payload with two rows",
        lambda: Payload("CDCDedxRunGain", values={"value": np.ones(2)}),
        r"2 rows, expected 1 \(one per run\)",
    ),
    (
        "time intervals that overlap",
        lambda: time_dependent(
            "CollisionInvariantMass",
            [0, 5 * 10**9],
            [6 * 10**9, 9 * 10**9],
            values={"mass": [10.58, 10.579], "spread": [5e-3, 5e-3]},
        ),
        r"1 time intervals overlap the previous one, e\.g\. \[0, 6000000000\) and "
        r"\[5000000000, 9000000000\) ns",
    ),
    (
        "an SVD sensor that does not exist",
        lambda: Payload(
            "SVDHotStripsCalibrations",
            keys={
                "layer": np.array([3, 3], dtype=np.int8),
                "ladder": np.array([1, 8], dtype=np.int8),  # layer 3 has 7 ladders
                "sensor": np.array([1, 1], dtype=np.int8),
                "side": np.array([0, 0], dtype=np.int8),
                "strip": np.array([5, 5], dtype=np.int16),
            },
            values={"value": np.array([0.3, 0.4])},
        ),
        r"1 rows' \(layer, ladder, sensor\) are not SVD sensors \(e\.g\. layer=3, ladder=8, "
        r"sensor=1\)",
    ),
    (
        "SVD strips of a sensor that does not exist, rows out of order",
        lambda: svd_strips(ladder=[8, 1, 8], strip=[6, 5, 5]),
        r"2 rows' \(layer, ladder, sensor\) are not SVD sensors \(e\.g\. layer=3, ladder=8, "
        r"sensor=1\)",
    ),
    (
        "SVD strips of a sensor that does not exist, rows in order",
        lambda: svd_strips(ladder=[1, 8, 8], strip=[5, 5, 6]),
        r"2 rows' \(layer, ladder, sensor\) are not SVD sensors \(e\.g\. layer=3, ladder=8, "
        r"sensor=1\)",
    ),
    (
        "SVD strip twice, rows out of order",
        lambda: svd_strips(ladder=[2, 1, 2], strip=[6, 5, 6]),
        r"1 rows repeat the key of another row \(e\.g\. layer=3, ladder=2, sensor=1, side=0, "
        r"strip=6\)",
    ),
    (
        "a PXD sensor id that is no VxdID",
        lambda: Payload(
            "PXDDeadPixelPar",
            keys={
                "sensorID": np.array([8512 + 1], dtype=np.int32),
                "u": np.array([3], dtype=np.int16),
                "v": np.array([4], dtype=np.int16),
            },
            values={"value": np.zeros(1)},
        ),
        r"1 rows' \(sensorID\) are not PXD sensors \(VxdID\)",
    ),
    (
        "unknown payload: duplicate key",
        lambda: Payload("MyConstants", keys={"ch": np.array([1, 2, 2])}, values={"v": np.ones(3)}),
        r"1 rows repeat the key of another row \(e\.g\. ch=2\)",
    ),
    (
        "unknown payload: duplicate key, keys too far apart to pack into one integer",
        lambda: Payload(
            "MyConstants",
            keys={"a": np.array([0, 2**62, 0]), "b": np.array([1, 1, 1])},
            values={"v": np.ones(3)},
        ),
        r"1 rows repeat the key of another row \(e\.g\. a=0, b=1\)",
    ),
    (
        "unknown payload: duplicate unsigned key beyond the int64 range",
        lambda: Payload(
            "MyConstants",
            keys={"a": np.array([2**63 + 5, 2**63 + 7, 2**63 + 5], dtype=np.uint64)},
            values={"v": np.ones(3)},
        ),
        r"1 rows repeat the key of another row",
    ),
    (
        "unknown payload: NaN where OK",
        lambda: Payload(
            "MyConstants",
            keys={"ch": np.arange(3)},
            values={"v": np.array([1.0, NAN, NAN])},
            status=np.array([0, 3, 0]),
        ),
        r"v is nan in 1 rows whose status is OK \(e\.g\. ch=2\)",
    ),
    (
        "unknown payload: a payload of NaN",
        lambda: Payload("MyConstants", values={"v": np.full(4, NAN)}),
        r"no value is finite \(a payload of NaN\)",
    ),
]


def test_every_refused_payload_says_why(db: ConditionsDB) -> None:  # noqa: F811
    """Each case is refused by every way in, with one line naming the payload and the fault;
    nothing is stored."""
    for case, make, message in REFUSED:
        bad = make()
        pattern = rf"^payload {bad.name}: {message}"
        with pytest.raises(PayloadError, match=pattern) as info:
            db.upload(bad)
        assert "\n" not in str(info.value), case
        with pytest.raises(PayloadError, match=pattern):
            db.upload_and_add("T", [(bad, IoV(0, 0))])
        with pytest.raises(PayloadError, match=pattern), db.write() as conn:
            db.stage(conn, "staging", [(IoV(0, 0), PayloadFile.of(bad))], description="")
        data, md5 = bad.to_bytes()
        with pytest.raises(PayloadError, match=pattern):
            PayloadFile(bad, data, md5)
    assert db.payloads() == []
    assert db.tags() == []


def test_flagged_channels_and_unknown_payloads_pass(db: ConditionsDB) -> None:  # noqa: F811
    flagged = with_row(with_row(STATUS_OK, 9, ChannelStatus.DEAD), 10, ChannelStatus.FAILED)
    nan = with_row(with_row(np.ones(8736), 9, NAN), 10, np.inf)
    ok = ecl_energy(values={"value": nan}, errors={"value": nan * 0.01}, status=flagged)
    assert db.upload(ok).revision == 1
    assert np.isnan(db.payload("ECLCrystalEnergy").value()[9])
    # every channel flagged: a calibration that could calibrate none says so in the status
    none = ecl_energy(
        values={"value": np.full(8736, NAN)},
        errors={"value": np.full(8736, NAN)},
        status=np.full(8736, ChannelStatus.NOT_ENOUGH_DATA, dtype=np.int8),
    )
    assert db.upload(none).revision == 2
    # a name outside the table: any keys and rows, one value per row that is OK
    free = Payload(
        "MyConstants",
        keys={"ch": np.array([-5, 10**9, 7])},
        values={"v": np.array([1.0, NAN, 2.0]), "n": np.array([1, 2, 3])},
        status=np.array([0, ChannelStatus.HOT, 0]),
    )
    assert db.upload(free).revision == 1
    # a list of some channels (no row count) may be empty
    empty = Payload(
        "PXDDeadPixelPar",
        keys={"sensorID": np.zeros(0, np.int32), "u": np.zeros(0, np.int16), "v": np.zeros(0)},
        values={"value": np.zeros(0)},
    )
    with pytest.raises(PayloadError, match="key column v holds float64, not integers"):
        db.upload(empty)
    empty.keys["v"] = np.zeros(0, np.int16)
    assert db.upload(empty).revision == 1


# -- one line instead of a traceback ------------------------------------------------------------

SCHEMA = {"format": "b2calib-payload", "format_version": 1, "name": "X"}
GOOD_META = {**SCHEMA, "keys": [], "values": ["value"], "errors": [], "status": False}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keys": 5}, r"metadata 'keys' must be a list of column names, not 5"),
        ({"values": "value"}, r"metadata 'values' must be a list of column names, not 'value'"),
        ({"errors": [1]}, r"metadata 'errors' must be a list of column names, not \[1\]"),
        ({"status": "yes"}, r"metadata 'status' must be true or false, not 'yes'"),
        ({"name": 5}, r"metadata 'name' must be a string, not 5"),
        ({"name": "X Y"}, r"payload name 'X Y' is not a valid identifier"),
    ],
)
def test_malformed_payload_metadata_is_one_line(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.root"
    write_raw_payload(path, {**GOOD_META, **change}, {"value": np.zeros(3)})
    with pytest.raises(PayloadError, match=rf"^{path}: {message}"):
        Payload.read(path)
    with pytest.raises(PayloadError, match=rf"^{path}: {message}"):
        PayloadFile.of(path)
    env = {"B2CALIB_DB": str(tmp_path / "c.sqlite"), "B2CALIB_USER": "tester"}
    assert error(env, "payload", "upload", path).startswith(f"{path}: ")


def test_metadata_that_is_no_object_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.root"
    with uproot.recreate(path) as f:
        f["metadata"] = json.dumps([1, 2])
    with pytest.raises(PayloadError, match=rf"^{path}: not a readable b2calib payload"):
        Payload.read(path)


def test_non_utf8_database_txt_is_one_line(db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "localdb"
    folder.mkdir()
    index = folder / "database.txt"
    index.write_bytes(b"dbstore/X 1 0,0,-1,-1\n# caf\xff\n")
    with pytest.raises(PayloadError, match=rf"^{index}:2: not UTF-8 text \(byte 0xff\)"):
        LocalDatabase(folder).entries()
    assert error(cli_env(db_url), "db", "import-local", folder, "--gt", "T").startswith(
        f"{index}:2: not UTF-8 text"
    )


def test_payload_path_that_is_a_directory_is_one_line(
    db: ConditionsDB,  # noqa: F811
    db_url: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "localdb"
    folder.mkdir()
    (folder / "database.txt").write_text("dbstore/X 1 0,0,-1,-1\n")
    payload_dir = folder / "dbstore_X_rev_1.root"
    payload_dir.mkdir()
    with pytest.raises(PayloadError, match=rf"^{payload_dir}: cannot read payload file"):
        db.upload_file(payload_dir)
    with pytest.raises(PayloadError, match=rf"^{payload_dir}: cannot read payload file"):
        db.import_local(folder, "T")
    with pytest.raises(PayloadError, match=rf"^{payload_dir}: cannot read payload file"):
        LocalDatabase(folder).read(LocalDatabase(folder).entries()[0])
    env = cli_env(db_url)
    assert error(env, "payload", "upload", payload_dir).startswith(
        f"{payload_dir}: cannot read payload file"
    )
    assert error(env, "db", "import-local", folder, "--gt", "T").startswith(
        f"{payload_dir}: cannot read payload file"
    )
    # database.txt itself a directory
    other = tmp_path / "other"
    (other / "database.txt").mkdir(parents=True)
    with pytest.raises(PayloadError, match=rf"^{other / 'database.txt'}: cannot read"):
        LocalDatabase(other).entries()
    assert db.payloads() == []
    assert db.tags() == []


def test_run_numbers_beyond_the_database_integers_are_one_line(
    db: ConditionsDB,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "localdb"
    LocalDatabase(folder).add(Payload("X", values={"v": np.ones(1)}), IoV(0, 0))
    (folder / "database.txt").write_text("dbstore/X 1 0,0,3000000000,-1\n")
    with pytest.raises(PayloadError, match=r"database.txt:1: IoV 0,0,3000000000,-1: .* 2147483647"):
        db.import_local(folder, "T")
    with pytest.raises(ConfigError, match=r"IoV 0,0,3000000000,-1: .* 2147483647"):
        IoV(0, 0, 3_000_000_000, -1)
    assert db.tags() == []


# -- names -------------------------------------------------------------------------------------


def test_payload_names_are_what_basf2_and_the_column_allow(
    db: ConditionsDB,  # noqa: F811
    tmp_path: Path,
) -> None:
    longest = "P" * 200
    assert db.upload(Payload(longest, values={"v": np.ones(1)})).name == longest
    assert db.payload(longest).name == longest
    for bad, message in [
        ("P" * 201, r"'PPPP.*\.\.\. \(201 characters\) is too long: at most 200 characters"),
        ("P" * 300, r"\(300 characters\) is too long"),
        ("Größe", "is not a valid identifier: use ASCII letters, digits and _"),
        ("a-b", "is not a valid identifier"),
        ("a/b", "is not a valid identifier"),
        ("1X", "is not a valid identifier"),
        ("a\nb", "is not a valid identifier"),
    ]:
        with pytest.raises(PayloadError, match=rf"payload name .*{message}"):
            Payload(bad, values={"v": np.ones(1)})
    # a file whose metadata names a payload basf2 could not store
    path = tmp_path / "long.root"
    write_raw_payload(
        path,
        {**GOOD_META, "name": "P" * 300, "values": ["value"]},
        {"value": np.zeros(1)},
    )
    with pytest.raises(PayloadError, match=rf"^{path}: payload name .* is too long"):
        db.upload_file(path)
    # and a database.txt line
    folder = tmp_path / "localdb"
    folder.mkdir()
    (folder / "database.txt").write_text(f"dbstore/{'P' * 201} 1 0,0,-1,-1\n")
    with pytest.raises(PayloadError, match=r"database.txt:1: payload name .* is too long"):
        LocalDatabase(folder).entries()
    (folder / "database.txt").write_text("dbstore/Größe 1 0,0,-1,-1\n")
    with pytest.raises(PayloadError, match=r"database.txt:1: payload name 'Größe' is not a valid"):
        LocalDatabase(folder).entries()
    assert [p.name for p in db.payloads()] == [longest]


def test_global_tag_names_are_what_basf2_and_the_column_allow(
    db: ConditionsDB,  # noqa: F811
    tmp_path: Path,
) -> None:
    longest = "t" * 200
    assert db.create_tag(longest).name == longest
    assert db.create_tag("main:2026+x-y_1.0").name == "main:2026+x-y_1.0"  # basf2 allows ':'
    refused = ["t" * 201, "t" * 300, "a b", "a/b", "a,b", "täg", "a\tb", "a\nb", ""]
    for bad in refused:
        with pytest.raises(ConditionsError, match=r"global tag name .*(use letters|too long)"):
            db.create_tag(bad)
    with pytest.raises(ConditionsError, match=r"\(201 characters\) is too long: at most 200"):
        db.clone_tag(longest, "t" * 201)
    with pytest.raises(ConditionsError, match="too long"):
        db.merge("t" * 201, [longest])
    folder = tmp_path / "localdb"
    LocalDatabase(folder).add(Payload("X", values={"v": np.ones(1)}), IoV(0, 0))
    with pytest.raises(ConditionsError, match="too long"):
        db.import_local(folder, "t" * 201)
    with pytest.raises(ConditionsError, match="too long"), db.write() as conn:
        db.stage(conn, "t" * 201, [], description="")
    assert sorted(t.name for t in db.tags()) == sorted([longest, "main:2026+x-y_1.0"])
    assert [p.name for p in db.payloads()] == []


# -- the table of payload types ------------------------------------------------------------------


def test_the_table_covers_every_payload_the_truth_and_the_calibrations_write(sample: Path) -> None:
    from b2calib.conditions.payloadtypes import PAYLOAD_TYPES, check_payload
    from b2calib.detectors import calibrations
    from b2calib.runs import RunRegistry
    from b2calib.sim import conditions_for_run, truth_payloads
    from b2calib.sim.config import SimConfig

    calibrated = {name for c in calibrations() for name in c.payloads}
    registry = RunRegistry.load(sample / "runs.json")
    run = next(iter(registry))
    written = truth_payloads(conditions_for_run(SimConfig(exp=run.exp), run))
    assert calibrated | {p.name for p in written} == set(PAYLOAD_TYPES)
    for p in written:
        check_payload(p)
        assert list(p.keys) == list(PAYLOAD_TYPES[p.name].keys), p.name
    # every payload file of the committed sample bucket's truth
    local = LocalDatabase(sample / "truth")
    for entry in local.entries():
        check_payload(local.read(entry), str(local.folder / entry.filename))


def test_the_table_is_the_detectors_numbering() -> None:
    from b2calib.conditions.payloadtypes import DEDX_COS_BINS, PAYLOAD_TYPES
    from b2calib.detectors.cdc import dedx
    from b2calib.sim import conditions as sim_conditions

    energy = PAYLOAD_TYPES["ECLCrystalEnergy"]
    assert (energy.detector, dict(energy.keys), energy.rows) == ("ECL", {"cellID": (1, 8736)}, 8736)
    assert PAYLOAD_TYPES["CDCTimeZeros"].keys == {"wire": (0, 14335)}
    assert PAYLOAD_TYPES["TOPCalChannelMask"].rows == 16 * 512
    assert PAYLOAD_TYPES["ARICHChannelMask"].rows == 420 * 144
    assert PAYLOAD_TYPES["SVDCoGTimeCalibrations"].rows == 2 * 172
    assert PAYLOAD_TYPES["PXDGainMapPar"].rows == 40 * 4 * 6
    assert PAYLOAD_TYPES["PXDMaskedPixelPar"].rows is None
    assert DEDX_COS_BINS == dedx.N_COS == len(sim_conditions.COS_EDGES) - 1
