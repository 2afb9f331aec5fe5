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
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from b2calib.conditions import ConditionsDB, IoV, LocalDatabase, Payload, PayloadFile
from b2calib.exceptions import ConditionsError, ConfigError, PayloadError
from tests.test_cli_conditions import error
from tests.test_conditions_db import db, db_url  # noqa: F401  (fixtures: both backends)

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


def cli_env(db_url: str) -> dict[str, str]:  # noqa: F811
    return {"B2CALIB_DB": db_url, "B2CALIB_USER": "tester"}


def write_raw_payload(path: Path, meta: dict[str, Any], columns: dict[str, Any]) -> None:
    """A payload file with any metadata (a ``metadata`` string and a tree ``X``)."""
    with uproot.recreate(path) as f:
        f["metadata"] = json.dumps(meta)
        f["X"] = columns


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


def test_non_utf8_database_txt_is_one_line(db_url: str, tmp_path: Path) -> None:  # noqa: F811
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
    db_url: str,  # noqa: F811
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
