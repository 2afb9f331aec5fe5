"""Planted outliers: channels whose constants changed between the previous bucket and this one.

A planted channel is a dict in :attr:`b2calib.sim.SimConfig.planted`::

    {"payload": "ECLCrystalTimeOffset", "channel": 1234, "shift": 4.0}

It stands for a hardware change between the previous bucket and the simulated one (a crystal's
electronics replaced): the simulated data follow the truth, as always, and the simulator writes,
beside ``truth/``, a second basf2 local database ``previous/``: the truth with the planted
channels at their values before the change, ``truth - shift``, in every IoV of the payload (the
same IoVs and the same payload files as ``truth/`` otherwise). Used as the input tag of a
calibration (the constants the previous bucket left), it is what the calibration replaces: a
calibration that recovers the truth makes a new payload that differs from ``previous`` by
``shift`` in exactly that channel, many times its uncertainty, and the validation
(:class:`~b2calib.calibration.validation.PayloadComparison`) names it among the outliers.

``payload``
    A payload of the truth (:func:`~b2calib.sim.conditions.truth_payloads`) with key columns.
``channel``
    The value of the payload's first key column (``cellID`` of ECLCrystalTimeOffset, ``crate``
    of ECLCrateTimeOffset, ``bin`` of CDCDedxCosineCor, ...): the channel id the payload
    validation shows.
``shift``
    truth - previous, in the column's unit: what the calibration should find the constant moved
    by. Finite and not 0.
``column``
    The value column (default ``"value"``).

Choose a payload whose calibration measures the constant itself, not a correction to the
constants applied when the data were collected: ``ecl-time`` measures the total time offset as
the applied one plus the fitted residual, so its result does not depend on the previous value
(the ECL crystal and crate time offsets are planted in the demo and the test sample). The
planted channels change nothing in the simulated events: every branch keeps its values.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from b2calib.conditions.localdb import LocalDatabase
from b2calib.conditions.payload import Payload
from b2calib.exceptions import ConfigError

__all__ = ["PlantedChannel", "check_planted", "plant", "planted_channels", "write_previous"]

_FIELDS = {"payload", "channel", "shift", "column"}


@dataclass(frozen=True)
class PlantedChannel:
    """One planted channel (see the module's description)."""

    payload: str
    channel: int
    shift: float
    column: str = "value"

    def as_dict(self) -> dict[str, Any]:
        """The configuration entry (``column`` only when not ``"value"``)."""
        d: dict[str, Any] = {"payload": self.payload, "channel": self.channel, "shift": self.shift}
        if self.column != "value":
            d["column"] = self.column
        return d


def planted_channels(entries: Iterable[Mapping[str, Any]]) -> list[PlantedChannel]:
    """The planted channels of a configuration; :class:`ConfigError` naming the entry at fault.

    Each entry needs ``payload`` (a name), ``channel`` (an integer) and ``shift`` (finite, not
    0); ``column`` is optional. A (payload, column, channel) may be planted once.
    """
    out: list[PlantedChannel] = []
    for i, e in enumerate(entries):
        where = f"planted[{i}] {dict(e)}"
        if not isinstance(e, Mapping):
            raise ConfigError(f"planted[{i}]: a table with payload, channel and shift, got {e!r}")
        unknown = set(e) - _FIELDS
        missing = {"payload", "channel", "shift"} - set(e)
        if unknown or missing:
            raise ConfigError(
                f"{where}: needs payload, channel and shift (optional column); "
                + (f"unknown {sorted(unknown)}" if unknown else f"missing {sorted(missing)}")
            )
        name, channel, shift = e["payload"], e["channel"], e["shift"]
        column = e.get("column", "value")
        if not isinstance(name, str) or not name or not isinstance(column, str):
            raise ConfigError(f"{where}: payload and column must be names")
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ConfigError(f"{where}: channel must be an integer, got {channel!r}")
        if (
            isinstance(shift, bool)
            or not isinstance(shift, (int, float))
            or not math.isfinite(shift)
            or shift == 0
        ):
            raise ConfigError(f"{where}: shift must be a finite number other than 0")
        p = PlantedChannel(name, int(channel), float(shift), column)
        if any((q.payload, q.column, q.channel) == (p.payload, p.column, p.channel) for q in out):
            raise ConfigError(f"{where}: channel {channel} of {name} is planted twice")
        out.append(p)
    return out


def _rows(payload: Payload, p: PlantedChannel) -> np.ndarray:
    """Rows of ``payload`` that hold the planted channel (its first key column)."""
    if not payload.keys:
        raise ConfigError(
            f"planted {p.as_dict()}: payload {payload.name} has no key column: no channel to plant"
        )
    key, ids = next(iter(payload.keys.items()))
    if p.column not in payload.values:
        raise ConfigError(
            f"planted {p.as_dict()}: payload {payload.name} has no value column {p.column!r} "
            f"(it has {', '.join(payload.values)})"
        )
    rows = np.flatnonzero(np.asarray(ids) == p.channel)
    if not len(rows):
        raise ConfigError(
            f"planted {p.as_dict()}: payload {payload.name} has no {key} {p.channel} "
            f"({key} {int(np.min(ids))}-{int(np.max(ids))})"
        )
    return rows


def check_planted(planted: Sequence[PlantedChannel], payloads: Sequence[Payload]) -> None:
    """:class:`ConfigError` unless every planted channel is a channel of one of ``payloads`` (the
    truth of a run) with that value column."""
    by_name = {p.name: p for p in payloads}
    for p in planted:
        if p.payload not in by_name:
            raise ConfigError(
                f"planted {p.as_dict()}: the simulator writes no payload {p.payload!r} "
                f"(it writes {', '.join(sorted(by_name))})"
            )
        _rows(by_name[p.payload], p)


def plant(payload: Payload, planted: Sequence[PlantedChannel]) -> Payload:
    """``payload`` as the previous bucket left it: the planted channels of its name at
    ``value - shift`` (the payload itself when none is planted in it)."""
    mine = [p for p in planted if p.payload == payload.name]
    if not mine:
        return payload
    values = {k: np.array(v, copy=True) for k, v in payload.values.items()}
    for p in mine:
        rows = _rows(payload, p)
        col = values[p.column]
        if col.dtype.kind != "f":
            col = values[p.column] = col.astype(np.float64)
        previous = col[rows].astype(np.float64) - p.shift
        if col.dtype != np.float64 and not np.array_equal(
            previous.astype(col.dtype).astype(np.float64), previous
        ):
            col = values[p.column] = col.astype(np.float64)
        col[rows] = previous
    meta = dict(payload.metadata)
    meta["provenance"] = {
        **dict(meta.get("provenance", {})),
        "source": "b2calib.sim previous",
        "planted": [p.as_dict() for p in mine],
    }
    return Payload(
        name=payload.name,
        keys=payload.keys,
        values=values,
        errors=payload.errors,
        status=payload.status,
        metadata=meta,
    )


def write_previous(
    truth: str | os.PathLike[str],
    out: str | os.PathLike[str],
    planted: Sequence[PlantedChannel],
) -> LocalDatabase:
    """The previous bucket's constants as a basf2 local database in ``out`` (replaced): the
    entries of the local database ``truth`` in its order, the payloads of the planted names
    planted (:func:`plant`), every other payload file copied byte for byte (so a repository
    stores it once); :class:`ConfigError` when a planted payload is not in ``truth``."""
    src = LocalDatabase(truth)
    entries = src.entries()
    names = {e.name for e in entries}
    missing = sorted({p.payload for p in planted} - names)
    if missing:
        raise ConfigError(f"planted payloads {missing} are not in {src.index}")
    if Path(out).exists():
        shutil.rmtree(out)
    dst = LocalDatabase(out)
    for e in entries:
        if any(p.payload == e.name for p in planted):
            written = dst.add(plant(src.read(e), planted), e.iov)
            if written != e:  # the same revisions in the same order
                raise ConfigError(f"{dst.index}: {written.line()} written for {e.line()}")
        else:
            dst.add_files([(e, (src.folder / e.filename).read_bytes())])
    return dst


def __dir__() -> list[str]:
    return __all__
