"""The payload file format: one ROOT file per payload, readable by ROOT and uproot.

A payload holds the constants of one kind (``ECLCrystalEnergy``, ``CDCTimeZeros`` ...) as a table
with one row per channel or key. The file contains

* a TTree named after the payload with one branch per column: key columns (channel ids),
  value columns, uncertainty columns (``<value>_err``) where meaningful, and a ``status``
  column (:class:`ChannelStatus`) where channels can fail or be masked;
* a ``TObjString`` named ``metadata`` with a JSON object: the payload name, which columns are
  keys / values / errors / status, units, a description and free-form provenance.

The checksum of a payload is the MD5 of its file, as in basf2.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import uproot

from b2calib.conditions.names import check_payload_name
from b2calib.conditions.status import ChannelStatus
from b2calib.exceptions import FileFormatError, PayloadError
from b2calib.io import check_root_bytes, write_root_bytes

__all__ = [
    "ChannelStatus",
    "Payload",
    "bytes_md5",
    "channel_ids",
    "file_md5",
    "read_payload_file",
    "verify_checksum",
]

FORMAT_VERSION = 1

#: The compression of the ROOT files b2calib writes for payloads and for the diagnostics of an
#: algorithm's execution: ZSTD level 3. They are written at every step of every job; a per-strip
#: SVD payload (224k rows, 8.7 MB of columns) took 102 ms of CPU for 0.75 MB at level 5, and
#: 43 ms for 0.86 MB at level 3.
FILE_COMPRESSION = uproot.ZSTD(3)


def channel_ids(keys: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.int64] | None:
    """One int64 channel id per row from a payload's key columns (time keys left out by the
    caller): the key column itself when there is one; several packed in decimal, each column
    after the first taking max(3, its number of digits) digits (TOP module 3 pixel 17 ->
    3017, PXD sensor 8480 u 12 v 700 -> 8480012700); ``None`` without key columns."""
    cols = [np.asarray(v).astype(np.int64) for v in keys.values()]
    if not cols:
        return None
    out = cols[0].copy()
    for c in cols[1:]:
        top = int(np.abs(c).max()) if len(c) else 0
        out = out * 10 ** max(3, len(str(top))) + c
    return out


def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 hex digest of a file's bytes (the basf2 payload checksum)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bytes_md5(data: bytes) -> str:
    """MD5 hex digest of a payload file's bytes."""
    return hashlib.md5(data).hexdigest()


def read_payload_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a payload file; :class:`PayloadError` naming it when it cannot be read
    (missing, a directory, not permitted)."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise PayloadError(
            f"{path}: cannot read payload file ({err.strerror or type(err).__name__})"
        ) from err


def verify_checksum(data: bytes, expected: str, label: str) -> None:
    """Raise :class:`PayloadError` naming ``label`` when ``data`` does not have MD5 ``expected``."""
    actual = bytes_md5(data)
    if actual != expected:
        raise PayloadError(
            f"{label}: checksum mismatch (expected {expected}, content has {actual}); "
            "the payload is corrupted or was replaced"
        )


@dataclass
class Payload:
    """A table of constants with its metadata.

    Parameters
    ----------
    name
        Payload name, e.g. ``"ECLCrystalEnergy"``; also the TTree name. An ASCII identifier of
        at most 200 characters, as basf2 and the conditions database take it
        (:mod:`b2calib.conditions.names`).
    keys
        Key columns (channel identifiers), all of one length.
    values
        Value columns.
    errors
        Uncertainty columns, keyed by the value column they belong to.
    status
        Per-row :class:`ChannelStatus` codes, or ``None`` when channels cannot fail.
    metadata
        JSON-serialisable extras: ``units`` (column -> unit), ``description``, ``provenance``.
    """

    name: str
    keys: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    values: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    errors: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    status: npt.NDArray[np.int8] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_payload_name(self.name)
        if not self.values:
            raise PayloadError(f"payload {self.name}: no value columns")
        self.keys = {k: np.asarray(v) for k, v in self.keys.items()}
        self.values = {k: np.asarray(v) for k, v in self.values.items()}
        self.errors = {k: np.asarray(v) for k, v in self.errors.items()}
        if self.status is not None:
            self.status = np.asarray(self.status, dtype=np.int8)
        lengths = {len(a) for a in self._columns().values()}
        if len(lengths) != 1:
            raise PayloadError(f"payload {self.name}: columns have different lengths {lengths}")
        for k in self.errors:
            if k not in self.values:
                raise PayloadError(f"payload {self.name}: error column for unknown value {k!r}")
        names = list(self._columns())
        if len(set(names)) != len(names):
            raise PayloadError(f"payload {self.name}: duplicate column names {names}")
        json.dumps(self.metadata)  # fail early on non-serialisable metadata

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def _columns(self) -> dict[str, npt.NDArray[Any]]:
        cols: dict[str, npt.NDArray[Any]] = {}
        cols.update(self.keys)
        cols.update(self.values)
        cols.update({f"{k}_err": v for k, v in self.errors.items()})
        if self.status is not None:
            cols["status"] = self.status
        return cols

    @property
    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """All columns in file order: keys, values, errors (``<value>_err``), status."""
        return self._columns()

    def value(self, column: str | None = None) -> npt.NDArray[Any]:
        """The value column ``column`` (the only one when ``None``)."""
        if column is None:
            if len(self.values) != 1:
                raise PayloadError(f"payload {self.name} has several values: {list(self.values)}")
            column = next(iter(self.values))
        try:
            return self.values[column]
        except KeyError:
            raise PayloadError(f"payload {self.name} has no value column {column!r}") from None

    def same_content(self, other: Payload) -> bool:
        """True when both payloads hold identical columns (metadata is not compared)."""
        a, b = self._columns(), other._columns()
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    def _schema(self) -> dict[str, Any]:
        return {
            "format": "b2calib-payload",
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "keys": list(self.keys),
            "values": list(self.values),
            "errors": list(self.errors),
            "status": self.status is not None,
        }

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write the payload to ``path`` (ROOT file) and return its MD5 checksum."""
        self._write(Path(path))
        return file_md5(path)

    def _write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".part")
        with uproot.recreate(tmp, compression=FILE_COMPRESSION) as f:
            self._fill(f)
        os.replace(tmp, path)

    def _fill(self, f: Any) -> None:
        """Write the payload into the uproot directory ``f`` of a new file."""
        meta = {**self._schema(), **self.metadata}
        # the string first: adding a class later makes uproot rewrite its streamer record,
        # leaving ~20 kB of dead space in the file
        f["metadata"] = json.dumps(meta, sort_keys=True)
        f.mktree(
            self.name,
            {k: v.dtype for k, v in self._columns().items()},
            initial_basket_capacity=2,
        )
        if len(self):
            f[self.name].extend(self._columns())

    def content_hash(self) -> str:
        """SHA-256 of the payload's content: schema, metadata and every column's type and bytes.

        Two payloads with the same content hash hold the same constants, whatever the bytes of
        the ROOT files they were written to (which carry creation times); the conditions
        database uses it to make uploads idempotent.
        """
        h = hashlib.sha256()
        h.update(json.dumps({**self._schema(), **self.metadata}, sort_keys=True).encode())
        for name, col in self._columns().items():
            arr = np.ascontiguousarray(col)
            h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    def to_bytes(self) -> tuple[bytes, str]:
        """The payload file's bytes and their MD5 checksum (the file made in memory)."""
        data = write_root_bytes(self._fill, compression=FILE_COMPRESSION)
        return data, bytes_md5(data)

    @classmethod
    def read(cls, path: str | os.PathLike[str], checksum: str | None = None) -> Payload:
        """Read a payload file.

        Parameters
        ----------
        path
            The payload ROOT file.
        checksum
            Expected MD5; when given, a mismatch raises :class:`PayloadError` before anything
            is parsed, so a corrupted payload never yields constants.
        """
        return cls.from_bytes(read_payload_file(path), checksum, str(path))

    @classmethod
    def from_bytes(
        cls, data: bytes, checksum: str | None = None, source: str = "payload"
    ) -> Payload:
        """Read a payload from the bytes of its file (as stored in the conditions database).

        ``checksum`` is verified first, as in :meth:`read`; a file cut short is refused from its
        ROOT header (uproot would read it as long as the payload's tree is intact); ``source``
        names the payload in error messages (e.g. ``"ECLCrystalEnergy rev 3"``).
        """
        if checksum is not None:
            verify_checksum(data, checksum, source)
        try:
            check_root_bytes(data, source)
        except FileFormatError as err:
            raise PayloadError(f"{source}: not a readable b2calib payload ({err})") from err
        return cls._parse(io.BytesIO(data), source)

    @classmethod
    def _parse(cls, source: io.BytesIO, label: str) -> Payload:
        try:
            with uproot.open(source, **_SERIAL) as f:
                meta = json.loads(f["metadata"])
                name, columns = _schema(meta, label)
                arrays = f[name].arrays(library="np")
        except PayloadError:
            raise
        except Exception as err:  # uproot raises many types for damaged files
            detail = " ".join(str(err).split())  # uproot's messages span lines
            raise PayloadError(f"{label}: not a readable b2calib payload ({detail})") from err
        extra = {k: v for k, v in meta.items() if k not in _SCHEMA_KEYS}
        try:
            return cls(
                name=name,
                keys={k: arrays[k] for k in columns["keys"]},
                values={k: arrays[k] for k in columns["values"]},
                errors={k: arrays[f"{k}_err"] for k in columns["errors"]},
                status=arrays["status"] if meta["status"] else None,
                metadata=extra,
            )
        except KeyError as err:
            raise PayloadError(f"{label}: column {err} named in metadata is missing") from err
        except PayloadError as err:
            raise PayloadError(f"{label}: {err}") from err


#: A payload file is small and read whole: decompressed and interpreted in the calling thread
#: (uproot's thread pools cost more than they save here, and wait on a loaded machine).
_SERIAL = {
    "decompression_executor": uproot.TrivialExecutor(),
    "interpretation_executor": uproot.TrivialExecutor(),
}

_SCHEMA_KEYS = frozenset({"format", "format_version", "name", "keys", "values", "errors", "status"})


def _schema(meta: Any, label: str) -> tuple[str, dict[str, list[str]]]:
    """The payload name and the key, value and error column names of a file's metadata,
    checked: :class:`PayloadError` naming ``label`` for a malformed entry."""
    if not isinstance(meta, dict):
        raise PayloadError(
            f"{label}: not a readable b2calib payload (its metadata is a JSON "
            f"{type(meta).__name__}, not an object)"
        )
    if meta.get("format") != "b2calib-payload":
        raise PayloadError(f"{label}: metadata does not describe a b2calib payload")
    name = meta.get("name")
    if not isinstance(name, str):
        raise PayloadError(f"{label}: metadata 'name' must be a string, not {name!r}")
    try:
        check_payload_name(name)
    except PayloadError as err:
        raise PayloadError(f"{label}: {err}") from None
    columns: dict[str, list[str]] = {}
    for kind in ("keys", "values", "errors"):
        names = meta.get(kind)
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise PayloadError(
                f"{label}: metadata {kind!r} must be a list of column names, not {names!r}"
            )
        columns[kind] = names
    if not isinstance(meta.get("status"), bool):
        raise PayloadError(
            f"{label}: metadata 'status' must be true or false, not {meta.get('status')!r}"
        )
    return name, columns
