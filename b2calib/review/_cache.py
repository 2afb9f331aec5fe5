"""Decoded payloads, cached by (name, revision, checksum): a stored revision never changes (the
database refuses it), and the checksum tells two databases' revisions apart. The cache is a
bounded LRU (entries and bytes), shared by the views of a process."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from b2calib.conditions.payload import Payload
from b2calib.conditions.tables import payload_files
from b2calib.exceptions import PayloadError

if TYPE_CHECKING:
    from b2calib.conditions.database import ConditionsDB, PayloadInfo

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "cached_payload", "cached_payloads", "clear"]

#: At most this many decoded payloads are kept ...
MAX_ENTRIES = 512
#: ... and at most this many bytes of their columns.
MAX_BYTES = 512 * 2**20

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, int, str], tuple[Payload, int]] = OrderedDict()
_size = 0


def _nbytes(p: Payload) -> int:
    arrays = [*p.keys.values(), *p.values.values(), *p.errors.values()]
    if p.status is not None:
        arrays.append(p.status)
    return int(sum(a.nbytes for a in arrays))


def cached_payload(db: ConditionsDB, info: PayloadInfo) -> Payload:
    """The content of revision ``info`` (decoded once, then from the cache). The payload is
    shared: do not modify its arrays."""
    key = (info.name, info.revision, info.checksum)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[0]
    payload = db.payload(info)
    _keep(key, payload)
    return payload


def _keep(key: tuple[str, int, str], payload: Payload) -> None:
    global _size
    size = _nbytes(payload)
    with _lock:
        if key not in _cache:
            _cache[key] = (payload, size)
            _size += size
        while len(_cache) > MAX_ENTRIES or (_size > MAX_BYTES and len(_cache) > 1):
            _, (_, n) = _cache.popitem(last=False)
            _size -= n


def cached_payloads(db: ConditionsDB, infos: Sequence[PayloadInfo]) -> list[Payload]:
    """:func:`cached_payload` of several revisions, the files not in the cache read in one
    query (each verified against its checksum)."""
    keys = [(i.name, i.revision, i.checksum) for i in infos]
    with _lock:
        missing = {i.id: i for i, k in zip(infos, keys, strict=True) if k not in _cache}
    if missing:
        f = payload_files
        with db.read() as conn:
            rows = conn.execute(
                sa.select(f.c.payload_id, f.c.content).where(f.c.payload_id.in_(list(missing)))
            )
            files = {int(r.payload_id): bytes(r.content) for r in rows}
        for pid, info in missing.items():
            if pid not in files:
                raise PayloadError(f"payload {info}: its file is missing from the database")
            payload = Payload.from_bytes(files[pid], info.checksum, f"payload {info}")
            _keep((info.name, info.revision, info.checksum), payload)
    return [cached_payload(db, i) for i in infos]


def clear() -> None:
    """Empty the cache."""
    global _size
    with _lock:
        _cache.clear()
        _size = 0


def __dir__() -> list[str]:
    return __all__
