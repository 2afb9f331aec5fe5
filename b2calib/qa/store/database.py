"""The quality-assurance database: runs, monitoring variables, QA histograms and their
references, certification flags, run sign-off, good-run lists and the users who write them.

It lives in the same database as the conditions (same URL, ``$B2CALIB_DB``, SQLite by default
or PostgreSQL), in the ``qa_`` tables created by the Alembic migrations. Every public write is
one transaction.

Certification is append-only: a flag or run-state change is a new row, the database refuses
to update or delete one (triggers), and the current value is the newest row. Writes that
certify take the authenticated :class:`User` and check what that user may do; the user's name
is recorded as the author.

The automatic status of a (run, detector) is evidence for the shifter, never a flag: it is the
worst of the run's histogram comparisons with their references and of its monitoring variables'
deviations from their trend (see :meth:`QADatabase.trend`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import hist
import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from uhi.io import json as uhi_json

from b2calib.db import Database, as_utc, now
from b2calib.dq import DQ_FLAGS
from b2calib.exceptions import ConfigError, PermissionDenied, QAError, RunNotFoundError
from b2calib.geometry import DETECTORS
from b2calib.qa.compare import Comparison, Method, QAStatus, Thresholds, compare
from b2calib.qa.store import tables as s
from b2calib.runs import Run, RunRegistry

if TYPE_CHECKING:
    from b2calib.qa.grl import GoodRunList
    from b2calib.qa.monitoring import MonitoringValue, RunQA

__all__ = [
    "ROLES",
    "RUN_STATES",
    "FlagEntry",
    "QADatabase",
    "Reference",
    "RunState",
    "StoredComparison",
    "Trend",
    "User",
    "hash_password",
    "verify_password",
]

ROLES = s.ROLES
RUN_STATES = s.RUN_STATES
#: Allowed run-state moves and the roles allowed to make them.
RUN_MOVES: dict[tuple[str, str], tuple[str, ...]] = {
    ("OPEN", "SIGNOFF"): ("expert", "manager"),
    ("SIGNOFF", "OPEN"): ("expert", "manager"),
    ("SIGNOFF", "COMPLETED"): ("manager",),
    ("COMPLETED", "OPEN"): ("manager",),
}
#: Status of a detector with neither comparisons nor variables.
NO_STATUS = "NONE"
#: A monitoring variable this many combined sigma from its trend's centre is a WARNING / ERROR.
VARIABLE_WARNING_SIGMA = 3.0
VARIABLE_ERROR_SIGMA = 5.0

# scrypt parameters (RFC 7914's interactive setting: ~16 MB, tens of ms per check)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


# -- users -----------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, as stored: ``scrypt$n$r$p$salt$hash`` (hex)."""
    if not password:
        raise ConfigError("a password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant-time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so the answer takes as long."""
    return hash_password("b2calib: no such user")


@dataclass(frozen=True)
class User:
    """A dashboard user and what it may do.

    ``viewer`` reads; ``expert`` flags the detectors in ``detectors`` and moves runs to sign-off;
    ``manager`` flags every detector, completes and reopens runs and makes good-run lists.
    """

    name: str
    role: str
    detectors: tuple[str, ...] = ()

    @property
    def is_manager(self) -> bool:
        """Whether the user is a data-quality manager."""
        return self.role == "manager"

    def can_flag(self, detector: str) -> bool:
        """Whether the user may set ``detector``'s flag."""
        return self.role == "manager" or (self.role == "expert" and detector in self.detectors)

    def __str__(self) -> str:
        dets = f" of {', '.join(self.detectors)}" if self.role == "expert" else ""
        return f"{self.name} ({self.role}{dets})"


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagEntry:
    """One certification flag as set (a row of the append-only history)."""

    exp: int
    run: int
    detector: str
    flag: str
    comment: str
    author: str
    time: datetime


@dataclass(frozen=True)
class RunState:
    """A run's sign-off state as set (a row of the append-only history)."""

    exp: int
    run: int
    state: str
    comment: str
    author: str
    time: datetime | None


@dataclass(frozen=True)
class Reference:
    """The reference run of a QA histogram and how it is compared."""

    detector: str
    name: str
    exp: int
    run: int
    method: str
    options: str
    thresholds: Thresholds


@dataclass(frozen=True)
class StoredComparison:
    """A histogram's comparison with its reference, as last evaluated."""

    exp: int
    run: int
    detector: str
    name: str
    reference_exp: int
    reference_run: int
    comparison: Comparison

    @property
    def status(self) -> str:
        """The comparison's status name."""
        return self.comparison.status.name


@dataclass(frozen=True)
class Trend:
    """A monitoring variable against run, with its band and each run's status.

    ``centre`` is the variable's known reference value when it has one, else the median over
    the runs shown; ``width`` is the expected scatter of one run around it (its median error
    combined with the run-to-run spread the errors do not explain, from the median absolute
    deviation). A run is WARNING beyond 3 and ERROR beyond 5 of its own combined sigma.
    """

    name: str
    detector: str
    unit: str
    exp: npt.NDArray[np.int64]
    run: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    error: npt.NDArray[np.float64]
    status: npt.NDArray[np.str_]
    centre: float
    width: float
    reference: float | None

    def __len__(self) -> int:
        return len(self.run)

    @property
    def band(self) -> tuple[float, float]:
        """The GOOD band, centre +- 3 widths."""
        return (
            self.centre - VARIABLE_WARNING_SIGMA * self.width,
            self.centre + VARIABLE_WARNING_SIGMA * self.width,
        )

    def status_of(self, exp: int, run: int) -> str:
        """The status of one run (:data:`NO_STATUS` when the run has no value)."""
        hit = np.flatnonzero((self.exp == exp) & (self.run == run))
        return str(self.status[hit[0]]) if len(hit) else NO_STATUS


def _trend_status(
    value: npt.NDArray[np.float64], error: npt.NDArray[np.float64], reference: float | None
) -> tuple[npt.NDArray[np.str_], float, float]:
    finite = np.isfinite(value) & np.isfinite(error)
    if not finite.any():
        return np.full(len(value), NO_STATUS), float("nan"), float("nan")
    v, e = value[finite], error[finite]
    centre = float(np.median(v)) if reference is None else float(reference)
    spread = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if len(v) >= 5 else 0.0
    typical = float(np.median(e))
    extra = np.sqrt(max(spread**2 - typical**2, 0.0))
    sigma = np.sqrt(error**2 + extra**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a value quoted without error: exactly on the centre is GOOD, off it ERROR
        z = np.where(
            sigma > 0, np.abs(value - centre) / sigma, np.where(value == centre, 0, np.inf)
        )
    status = np.where(
        ~(np.isfinite(value) & np.isfinite(error)),
        NO_STATUS,
        np.where(
            z > VARIABLE_ERROR_SIGMA,
            QAStatus.ERROR.name,
            np.where(z > VARIABLE_WARNING_SIGMA, QAStatus.WARNING.name, QAStatus.GOOD.name),
        ),
    )
    return status, centre, float(np.sqrt(typical**2 + extra**2))


def _method(method: str) -> Method:
    if method not in ("chi2", "ks", "ad"):
        raise QAError(f"unknown comparison method {method!r}; known: chi2, ks, ad")
    return method  # type: ignore[return-value]


def _worst(statuses: Iterable[str]) -> str:
    ranked = [QAStatus[x] for x in statuses if x != NO_STATUS]
    return max(ranked).name if ranked else NO_STATUS


# -- histograms ------------------------------------------------------------------------------


def _hist_bytes(h: hist.Hist) -> bytes:
    from hist.serialization import to_uhi

    text = json.dumps(to_uhi(h), default=uhi_json.default, sort_keys=True)
    return zlib.compress(text.encode(), 6)


def _hist_from_bytes(data: bytes, where: str) -> hist.Hist:
    from hist.serialization import from_uhi

    try:
        d = json.loads(zlib.decompress(data), object_hook=uhi_json.object_hook)
        return hist.Hist(from_uhi(d))
    except (zlib.error, ValueError, KeyError, TypeError) as err:
        raise QAError(f"{where}: stored histogram is unreadable ({err})") from err


# -- the database ----------------------------------------------------------------------------


def _check_detector(detector: str) -> str:
    if detector not in DETECTORS:
        raise QAError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    return detector


def _run_filter(
    table: sa.Table, exp: int | None, first: int | None, last: int | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if exp is not None:
        where.append(table.c.exp == exp)
    if first is not None:
        where.append(table.c.run >= first)
    if last is not None:
        where.append(table.c.run <= last)
    return where


class QADatabase(Database):
    """The quality-assurance records of a b2calib database.

    Parameters
    ----------
    url
        As for :class:`~b2calib.conditions.ConditionsDB` (the same database holds both).
    author
        Recorded for administrative changes (users, references, imports) made through this
        object; certification records the :class:`User` passed to each call.
    """

    error = QAError
    label = "conditions database"  # the QA tables live in it (same URL, same file)

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: str, detectors: Sequence[str] = ()) -> User:
        """Add a user with a hashed password; ``detectors`` are an expert's detectors."""
        user = self._new_user(name, role, detectors)
        with self.write() as conn:
            if conn.execute(sa.select(s.qa_users.c.name).where(s.qa_users.c.name == name)).first():
                raise QAError(f"user {name!r} exists already")
            conn.execute(
                s.qa_users.insert().values(
                    name=name,
                    role=role,
                    detectors=",".join(user.detectors),
                    password=hash_password(password),
                    created=now(),
                    author=self.author,
                )
            )
            self.log(conn, "add_user", None, user=name, role=role, detectors=user.detectors)
        return user

    @staticmethod
    def _new_user(name: str, role: str, detectors: Sequence[str]) -> User:
        if not name or not name.strip() or name != name.strip() or ":" in name:
            raise QAError(f"bad user name {name!r} (no spaces around it, no ':')")
        if role not in ROLES:
            raise QAError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        dets = tuple(_check_detector(d) for d in detectors)
        if role == "expert" and not dets:
            raise QAError(f"expert {name!r} needs the detectors they certify")
        if role != "expert" and dets:
            raise QAError(f"only experts have detectors ({name!r} is a {role})")
        return User(name, role, dets)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password."""
        with self.write() as conn:
            done = conn.execute(
                s.qa_users.update()
                .where(s.qa_users.c.name == name)
                .values(password=hash_password(password))
            ).rowcount
            if not done:
                raise QAError(f"no user {name!r}")
            self.log(conn, "set_password", None, user=name)

    def remove_user(self, name: str) -> None:
        """Remove a user (what they certified stays, under their name)."""
        with self.write() as conn:
            if not conn.execute(s.qa_users.delete().where(s.qa_users.c.name == name)).rowcount:
                raise QAError(f"no user {name!r}")
            self.log(conn, "remove_user", None, user=name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else ``None`` (same work for unknown names)."""
        with self.read() as conn:
            row = conn.execute(sa.select(s.qa_users).where(s.qa_users.c.name == name)).first()
        if row is None:
            verify_password(password, _dummy_hash())
            return None
        return _user(row) if verify_password(password, row.password) else None

    def user(self, name: str) -> User:
        """The user called ``name``."""
        with self.read() as conn:
            row = conn.execute(sa.select(s.qa_users).where(s.qa_users.c.name == name)).first()
        if row is None:
            raise QAError(f"no user {name!r}")
        return _user(row)

    def users(self) -> list[User]:
        """Every user, by name."""
        with self.read() as conn:
            rows = conn.execute(sa.select(s.qa_users).order_by(s.qa_users.c.name)).all()
        return [_user(r) for r in rows]

    # -- runs --------------------------------------------------------------------------------

    def import_runs(self, registry: Iterable[Run]) -> int:
        """Add or update runs' metadata (flags are certified here, not imported); returns the
        number of runs written."""
        rows = [
            dict(
                exp=r.exp,
                run=r.run,
                run_type=r.run_type,
                beam_energy=r.beam_energy,
                start=r.start,
                stop=r.stop,
                lumi_pb=r.lumi_pb,
                l1_triggers=r.l1_triggers,
                detectors=",".join(r.detectors),
                magnet_on=r.magnet_on,
                ecms_nominal_gev=r.ecms_nominal_gev,
                notes=r.notes,
            )
            for r in registry
        ]
        t = s.qa_runs
        with self.write() as conn:
            for row in rows:
                key = (t.c.exp == row["exp"]) & (t.c.run == row["run"])
                if conn.execute(sa.select(t.c.run).where(key)).first():
                    conn.execute(t.update().where(key).values(**row))
                else:
                    conn.execute(t.insert().values(**row))
            self.log(conn, "import_runs", None, runs=len(rows))
        return len(rows)

    def runs(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> list[Run]:
        """Runs in (exp, run) order, each with its current flags in ``Run.dq``."""
        t = s.qa_runs
        where = _run_filter(t, exp, first, last)
        if run_type is not None:
            where.append(t.c.run_type == run_type)
        with self.read() as conn:
            rows = conn.execute(sa.select(t).where(*where).order_by(t.c.exp, t.c.run)).all()
            flags = self._grid(conn, exp, first, last)
        return [
            _run(r, {d: e.flag for d, e in flags.get((r.exp, r.run), {}).items()}) for r in rows
        ]

    def run(self, exp: int, run: int) -> Run:
        """One run with its current flags."""
        found = self.runs(exp=exp, first=run, last=run)
        if not found:
            raise RunNotFoundError(exp, run)
        return found[0]

    def registry(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = None,
    ) -> RunRegistry:
        """The run registry with the certified flags: what calibration input filters read
        (``RunRegistry.select(dq="Good")``)."""
        return RunRegistry(self.runs(exp=exp, first=first, last=last, run_type=run_type))

    def with_certified_flags(self, registry: Iterable[Run]) -> RunRegistry:
        """``registry`` with each run's flags replaced by those certified here, for the runs
        this database knows (the others keep theirs): what calibration input filters
        (``dq="Good"``) should read."""
        certified = {r.key: r.dq for r in self.runs()}
        return RunRegistry(replace(r, dq=certified.get(r.key, r.dq)) for r in registry)

    def _require_run(self, conn: Connection, exp: int, run: int) -> None:
        t = s.qa_runs
        if not conn.execute(sa.select(t.c.run).where(t.c.exp == exp, t.c.run == run)).first():
            raise RunNotFoundError(exp, run)

    # -- monitoring variables and histograms -------------------------------------------------

    def store_run_qa(self, qa: RunQA) -> None:
        """Store one run's monitoring variables and QA histograms, replacing the ones that run
        had (its earlier comparisons are dropped: evaluate it again)."""
        when = now()
        variables = [
            dict(
                exp=qa.exp,
                run=qa.run,
                name=v.name,
                detector=v.detector,
                value=float(v.value),
                error=float(v.error),
                unit=v.unit,
                computed=when,
            )
            for v in qa.variables
        ]
        histograms = [
            dict(
                exp=qa.exp,
                run=qa.run,
                detector=det,
                name=name,
                entries=float(np.sum(h.values(flow=True))),
                content=_hist_bytes(h),
                computed=when,
            )
            for (det, name), h in qa.histograms.items()
        ]
        with self.write() as conn:
            self._require_run(conn, qa.exp, qa.run)
            for t in (s.qa_variables, s.qa_histograms, s.qa_comparisons):
                conn.execute(t.delete().where(t.c.exp == qa.exp, t.c.run == qa.run))
            if variables:
                conn.execute(s.qa_variables.insert(), variables)
            if histograms:
                conn.execute(s.qa_histograms.insert(), histograms)

    def variable_names(self) -> list[str]:
        """Names of the stored monitoring variables."""
        t = s.qa_variables
        with self.read() as conn:
            return list(conn.execute(sa.select(t.c.name).distinct().order_by(t.c.name)).scalars())

    def variables(self, exp: int, run: int) -> list[MonitoringValue]:
        """One run's monitoring variables."""
        from b2calib.qa.monitoring import MonitoringValue

        t = s.qa_variables
        with self.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.name)
            ).all()
        return [MonitoringValue(r.name, r.detector, r.value, r.error, r.unit) for r in rows]

    def trend(
        self,
        name: str,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
        run_type: str | None = "physics",
    ) -> Trend:
        """A monitoring variable against run, one point per run, with band and statuses.

        The band is computed from the runs selected (by default the physics runs).
        """
        return self._trend(name, exp, first, last, run_type, strict=True)

    def _trend(
        self,
        name: str,
        exp: int | None,
        first: int | None,
        last: int | None,
        run_type: str | None,
        *,
        strict: bool,
    ) -> Trend:
        from b2calib.qa.monitoring import VARIABLES

        v, r = s.qa_variables, s.qa_runs
        where = [*_run_filter(v, exp, first, last), v.c.name == name]
        if run_type is not None:
            where.append(r.c.run_type == run_type)
        query = (
            sa.select(v.c.exp, v.c.run, v.c.value, v.c.error, v.c.detector, v.c.unit)
            .join(r, (r.c.exp == v.c.exp) & (r.c.run == v.c.run))
            .where(*where)
            .order_by(v.c.exp, v.c.run)
        )
        with self.read() as conn:
            rows = conn.execute(query).all()
        if strict and not rows and name not in VARIABLES:
            raise QAError(f"no monitoring variable {name!r} is stored")
        definition = VARIABLES.get(name)
        reference = definition.reference if definition is not None else None
        value = np.array([x.value for x in rows], dtype=np.float64)
        error = np.array([x.error for x in rows], dtype=np.float64)
        status, centre, width = _trend_status(value, error, reference)
        return Trend(
            name=name,
            detector=rows[0].detector if rows else (definition.detector if definition else ""),
            unit=rows[0].unit if rows else (definition.unit if definition else ""),
            exp=np.array([x.exp for x in rows], dtype=np.int64),
            run=np.array([x.run for x in rows], dtype=np.int64),
            value=value,
            error=error,
            status=status,
            centre=centre,
            width=width,
            reference=reference,
        )

    def histogram_keys(self, exp: int, run: int) -> list[tuple[str, str]]:
        """(detector, name) of one run's QA histograms."""
        t = s.qa_histograms
        with self.read() as conn:
            rows = conn.execute(
                sa.select(t.c.detector, t.c.name)
                .where(t.c.exp == exp, t.c.run == run)
                .order_by(t.c.detector, t.c.name)
            ).all()
        return [(r.detector, r.name) for r in rows]

    def histogram(self, exp: int, run: int, detector: str, name: str) -> hist.Hist:
        """One run's QA histogram."""
        with self.read() as conn:
            return self._histogram(conn, exp, run, detector, name)

    def _histogram(self, conn: Connection, exp: int, run: int, det: str, name: str) -> hist.Hist:
        t = s.qa_histograms
        data = conn.execute(
            sa.select(t.c.content).where(
                t.c.exp == exp, t.c.run == run, t.c.detector == det, t.c.name == name
            )
        ).scalar()
        where = f"QA histogram {det}/{name} of run ({exp}, {run})"
        if data is None:
            raise QAError(f"{where} is not stored")
        return _hist_from_bytes(data, where)

    # -- references and comparisons ----------------------------------------------------------

    def set_reference(
        self,
        detector: str,
        name: str,
        exp: int,
        run: int,
        *,
        method: str | None = None,
        options: str | None = None,
        thresholds: Thresholds | None = None,
    ) -> Reference:
        """Make run (exp, run) the reference of QA histogram ``detector/name``.

        ``method``, ``options`` and the minimum entry count default to the histogram's
        definition (see :data:`b2calib.qa.monitoring.QA_HISTOGRAMS`), else chi2 UU and
        :class:`~b2calib.qa.Thresholds`' defaults.
        """
        default_method, default_options, default_thresholds = self.reference_defaults(
            detector, name
        )
        method = method or default_method
        options = options or default_options
        thresholds = thresholds or default_thresholds
        t = s.qa_references
        row = dict(
            exp=exp,
            run=run,
            method=method,
            options=options,
            min_entries=thresholds.min_entries,
            p_warning=thresholds.p_warning,
            p_error=thresholds.p_error,
            author=self.author,
            time=now(),
        )
        with self.write() as conn:
            h = self._histogram(conn, exp, run, detector, name)
            compare(h, h, _method(method), options, thresholds)  # refuses bad options now
            key = (t.c.detector == detector) & (t.c.name == name)
            if conn.execute(sa.select(t.c.name).where(key)).first():
                conn.execute(t.update().where(key).values(**row))
            else:
                conn.execute(t.insert().values(detector=detector, name=name, **row))
            self.log(conn, "set_reference", None, histogram=f"{detector}/{name}", reference=row)
        return Reference(detector, name, exp, run, method, options, thresholds)

    @staticmethod
    def reference_defaults(detector: str, name: str) -> tuple[str, str, Thresholds]:
        """Method, options and thresholds of QA histogram ``detector/name`` as defined in
        :data:`b2calib.qa.monitoring.QA_HISTOGRAMS` (its minimum entry count), else chi2 UU
        and :class:`~b2calib.qa.Thresholds`' defaults."""
        from b2calib.qa.monitoring import QA_HISTOGRAMS

        d = QA_HISTOGRAMS.get((detector, name))
        if d is None:
            return "chi2", "UU", Thresholds()
        return d.method, d.options, Thresholds(min_entries=d.min_entries)

    def reference(self, detector: str, name: str) -> Reference | None:
        """The reference of QA histogram ``detector/name``, if one is set."""
        return self.references().get((detector, name))

    def references(self) -> dict[tuple[str, str], Reference]:
        """Every QA histogram's reference."""
        with self.read() as conn:
            rows = conn.execute(sa.select(s.qa_references)).all()
        return {(r.detector, r.name): _reference(r) for r in rows}

    def evaluate(self, exp: int, run: int) -> dict[str, str]:
        """Compare each QA histogram of a run with its reference, store the results and
        return the run's automatic status per detector (see :meth:`auto_status`)."""
        with self.read() as conn:
            self._require_run(conn, exp, run)
        self._compare_runs([(exp, run)])
        return self.auto_status(exp, run)

    def evaluate_all(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], dict[str, str]]:
        """:meth:`evaluate` every run selected that has QA histograms; returns the automatic
        status grid of the runs selected."""
        t = s.qa_histograms
        with self.read() as conn:
            keys = conn.execute(
                sa.select(t.c.exp, t.c.run)
                .where(*_run_filter(t, exp, first, last))
                .distinct()
                .order_by(t.c.exp, t.c.run)
            ).all()
        self._compare_runs([(k.exp, k.run) for k in keys])
        return self.auto_status_grid(exp=exp, first=first, last=last)

    def _compare_runs(self, keys: Sequence[tuple[int, int]]) -> None:
        """Compare the runs' histograms with their references (each reference decoded once)
        and replace each run's stored comparisons, one transaction per run."""
        refs = self.references()
        ref_hists: dict[tuple[str, str], hist.Hist] = {}
        t = s.qa_comparisons
        for exp, run in keys:
            results = []
            with self.read() as conn:
                for det, name in self.histogram_keys(exp, run):
                    ref = refs.get((det, name))
                    if ref is None:
                        continue
                    h = self._histogram(conn, exp, run, det, name)
                    if (det, name) not in ref_hists:
                        ref_hists[(det, name)] = self._histogram(conn, ref.exp, ref.run, det, name)
                    try:
                        c = compare(
                            h,
                            ref_hists[(det, name)],
                            _method(ref.method),
                            ref.options,
                            ref.thresholds,
                        )
                    except ConfigError as err:
                        raise QAError(
                            f"QA histogram {det}/{name} of run ({exp}, {run}) cannot be "
                            f"compared with its reference run ({ref.exp}, {ref.run}): {err}"
                        ) from err
                    results.append(
                        dict(
                            exp=exp,
                            run=run,
                            detector=det,
                            name=name,
                            reference_exp=ref.exp,
                            reference_run=ref.run,
                            result=json.dumps(c.as_dict(), sort_keys=True),
                            status=c.status.name,
                            evaluated=now(),
                        )
                    )
            with self.write() as conn:
                conn.execute(t.delete().where(t.c.exp == exp, t.c.run == run))
                if results:
                    conn.execute(t.insert(), results)

    def comparisons(self, exp: int, run: int) -> list[StoredComparison]:
        """One run's stored comparisons, by detector and histogram."""
        t = s.qa_comparisons
        with self.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.detector, t.c.name)
            ).all()
        return [
            StoredComparison(
                r.exp,
                r.run,
                r.detector,
                r.name,
                r.reference_exp,
                r.reference_run,
                Comparison.from_dict(json.loads(r.result)),
            )
            for r in rows
        ]

    def auto_status(self, exp: int, run: int) -> dict[str, str]:
        """The automatic status of each detector of a run: the worst of its histograms'
        comparisons and of its monitoring variables' trend statuses (the trend is taken over
        the runs of its experiment and run type). :data:`NO_STATUS` when there is no evidence."""
        return self.auto_status_grid(exp=exp, first=run, last=run).get(
            (exp, run), dict.fromkeys(DETECTORS, NO_STATUS)
        )

    def auto_status_grid(
        self,
        *,
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> dict[tuple[int, int], dict[str, str]]:
        """Automatic status per detector of every run selected (see :meth:`auto_status`).

        A variable is judged against its trend over the runs of the same experiment and run
        type (physics runs with physics runs, cosmics with cosmics), so a run's status does not
        depend on the range selected.
        """
        evidence: dict[tuple[int, int], dict[str, list[str]]] = {}
        runs = self.runs(exp=exp, first=first, last=last)
        for r in runs:
            evidence[r.key] = {d: [] for d in DETECTORS}
        c = s.qa_comparisons
        with self.read() as conn:
            for row in conn.execute(
                sa.select(c.c.exp, c.c.run, c.c.detector, c.c.status).where(
                    *_run_filter(c, exp, first, last)
                )
            ):
                if (row.exp, row.run) in evidence and row.detector in DETECTORS:
                    evidence[(row.exp, row.run)][row.detector].append(row.status)
        for det, keys, status in self._variable_statuses(sorted({r.exp for r in runs})).values():
            if det not in DETECTORS:
                continue
            for key, st in zip(keys, status, strict=True):
                if key in evidence:
                    evidence[key][det].append(str(st))
        return {k: {d: _worst(v) for d, v in per.items()} for k, per in evidence.items()}

    def _variable_statuses(
        self, exps: Sequence[int]
    ) -> dict[tuple[str, int, str], tuple[str, list[tuple[int, int]], npt.NDArray[np.str_]]]:
        """Each variable's trend statuses per (name, exp, run type) of the experiments given,
        read in one query: {(name, exp, run_type): (detector, run keys, statuses)}."""
        from b2calib.qa.monitoring import VARIABLES

        if not exps:
            return {}
        v, r = s.qa_variables, s.qa_runs
        query = (
            sa.select(v.c.name, v.c.detector, v.c.exp, v.c.run, v.c.value, v.c.error, r.c.run_type)
            .join(r, (r.c.exp == v.c.exp) & (r.c.run == v.c.run))
            .where(v.c.exp.in_(list(exps)))
            .order_by(v.c.name, v.c.exp, r.c.run_type, v.c.run)
        )
        groups: dict[tuple[str, int, str], list[Any]] = {}
        with self.read() as conn:
            for row in conn.execute(query):
                groups.setdefault((row.name, row.exp, row.run_type), []).append(row)
        out = {}
        for (name, e, run_type), rows in groups.items():
            definition = VARIABLES.get(name)
            status, _, _ = _trend_status(
                np.array([x.value for x in rows], dtype=np.float64),
                np.array([x.error for x in rows], dtype=np.float64),
                definition.reference if definition is not None else None,
            )
            out[(name, e, run_type)] = (rows[0].detector, [(e, x.run) for x in rows], status)
        return out

    # -- certification -----------------------------------------------------------------------

    def set_flag(
        self, exp: int, run: int, detector: str, flag: str, *, user: User, comment: str
    ) -> FlagEntry:
        """Certify one detector of a run.

        Raises
        ------
        PermissionDenied
            The user is a viewer, an expert of other detectors, or the run is COMPLETED.
        """
        return self.set_flags([(exp, run, detector, flag)], user=user, comment=comment)[0]

    def set_flags(
        self, changes: Iterable[tuple[int, int, str, str]], *, user: User, comment: str
    ) -> list[FlagEntry]:
        """Certify several (exp, run, detector, flag) at once, with one comment: all are
        recorded or, if any is refused, none.

        Every flag but GOOD needs a comment saying why; a detector the run did not include can
        only be EXCLUDED.
        """
        wanted = list(changes)
        for exp, run, detector, flag in wanted:
            _check_detector(detector)
            if flag not in DQ_FLAGS:
                raise QAError(f"unknown flag {flag!r}; known: {', '.join(DQ_FLAGS)}")
            if flag != "GOOD" and not comment.strip():
                raise QAError(
                    f"say why {detector} of run ({exp}, {run}) is {flag}: a comment is required "
                    "for every flag but GOOD"
                )
            if not user.can_flag(detector):
                raise PermissionDenied(
                    f"{user} may not set the {detector} flag of run ({exp}, {run})"
                )
        when = now()
        entries = [
            FlagEntry(exp, run, det, flag, comment.strip(), user.name, when)
            for exp, run, det, flag in wanted
        ]
        t = s.qa_runs
        with self.write() as conn:
            self._require_user(conn, user)
            included: dict[tuple[int, int], list[str]] = {}  # each run checked once
            for e in entries:
                key = (e.exp, e.run)
                if key not in included:
                    row = conn.execute(
                        sa.select(t.c.detectors).where(t.c.exp == e.exp, t.c.run == e.run)
                    ).first()
                    if row is None:
                        raise RunNotFoundError(e.exp, e.run)
                    if self._state(conn, e.exp, e.run).state == "COMPLETED":
                        raise PermissionDenied(
                            f"run ({e.exp}, {e.run}) is COMPLETED: a manager must reopen it "
                            f"before its {e.detector} flag changes"
                        )
                    included[key] = row.detectors.split(",")
                if e.detector not in included[key] and e.flag != "EXCLUDED":
                    raise QAError(
                        f"{e.detector} did not take data in run ({e.exp}, {e.run}): it can only "
                        "be EXCLUDED"
                    )
            if entries:
                conn.execute(
                    s.qa_flags.insert(),
                    [
                        dict(
                            exp=e.exp,
                            run=e.run,
                            detector=e.detector,
                            flag=e.flag,
                            comment=e.comment,
                            author=e.author,
                            time=e.time,
                        )
                        for e in entries
                    ],
                )
        return entries

    def _require_user(self, conn: Connection, user: User) -> None:
        """The user must exist with the role and detectors claimed (a stale session whose
        user was removed or demoted writes nothing)."""
        row = conn.execute(sa.select(s.qa_users).where(s.qa_users.c.name == user.name)).first()
        if row is None or _user(row) != user:
            raise PermissionDenied(f"{user} is not a current user with these rights")

    def flags(self, exp: int, run: int) -> dict[str, FlagEntry]:
        """Current flag of each certified detector of a run (absent: NOTSET)."""
        with self.read() as conn:
            return self._grid(conn, exp, run, run).get((exp, run), {})

    def flag_history(self, exp: int, run: int, detector: str | None = None) -> list[FlagEntry]:
        """Every flag set for a run (or one detector of it), oldest first."""
        t = s.qa_flags
        where = [t.c.exp == exp, t.c.run == run]
        if detector is not None:
            where.append(t.c.detector == detector)
        with self.read() as conn:
            rows = conn.execute(sa.select(t).where(*where).order_by(t.c.id)).all()
        return [_flag(r) for r in rows]

    def flag_grid(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], dict[str, str]]:
        """Current flags of every run selected: {(exp, run): {detector: flag}}, each included
        detector present (NOTSET when never certified)."""
        runs = self.runs(exp=exp, first=first, last=last)
        return {r.key: {d: r.flag(d) for d in r.detectors} for r in runs}

    def _grid(
        self, conn: Connection, exp: int | None, first: int | None, last: int | None
    ) -> dict[tuple[int, int], dict[str, FlagEntry]]:
        t = s.qa_flags
        newest = (
            sa.select(sa.func.max(t.c.id))
            .where(*_run_filter(t, exp, first, last))
            .group_by(t.c.exp, t.c.run, t.c.detector)
        )
        rows = conn.execute(sa.select(t).where(t.c.id.in_(newest))).all()
        out: dict[tuple[int, int], dict[str, FlagEntry]] = {}
        for r in rows:
            out.setdefault((r.exp, r.run), {})[r.detector] = _flag(r)
        return out

    # -- run sign-off ------------------------------------------------------------------------

    def run_state(self, exp: int, run: int) -> RunState:
        """A run's current sign-off state (OPEN when never changed)."""
        with self.read() as conn:
            self._require_run(conn, exp, run)
            return self._state(conn, exp, run)

    def run_states(
        self, *, exp: int | None = None, first: int | None = None, last: int | None = None
    ) -> dict[tuple[int, int], str]:
        """Current sign-off state of every run selected."""
        t = s.qa_run_states
        newest = (
            sa.select(sa.func.max(t.c.id))
            .where(*_run_filter(t, exp, first, last))
            .group_by(t.c.exp, t.c.run)
        )
        with self.read() as conn:
            changed = {
                (r.exp, r.run): r.state
                for r in conn.execute(sa.select(t).where(t.c.id.in_(newest)))
            }
        return {
            r.key: changed.get(r.key, "OPEN") for r in self.runs(exp=exp, first=first, last=last)
        }

    def _state(self, conn: Connection, exp: int, run: int) -> RunState:
        t = s.qa_run_states
        row = conn.execute(
            sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id.desc()).limit(1)
        ).first()
        if row is None:
            return RunState(exp, run, "OPEN", "", "", None)
        return _state(row)

    def set_run_state(
        self, exp: int, run: int, state: str, *, user: User, comment: str = ""
    ) -> RunState:
        """Move a run along OPEN -> SIGNOFF -> COMPLETED (a manager completes and reopens)."""
        if state not in RUN_STATES:
            raise QAError(f"unknown run state {state!r}; known: {', '.join(RUN_STATES)}")
        with self.write() as conn:
            self._require_run(conn, exp, run)
            self._require_user(conn, user)
            current = self._state(conn, exp, run).state
            allowed = RUN_MOVES.get((current, state))
            if allowed is None:
                raise QAError(f"run ({exp}, {run}) cannot move from {current} to {state}")
            if user.role not in allowed:
                raise PermissionDenied(
                    f"{user} may not move run ({exp}, {run}) from {current} to {state} "
                    f"(allowed: {', '.join(allowed)})"
                )
            entry = RunState(exp, run, state, comment.strip(), user.name, now())
            conn.execute(
                s.qa_run_states.insert().values(
                    exp=exp,
                    run=run,
                    state=state,
                    comment=entry.comment,
                    author=user.name,
                    time=entry.time,
                )
            )
        return entry

    def run_state_history(self, exp: int, run: int) -> list[RunState]:
        """Every sign-off state change of a run, oldest first."""
        t = s.qa_run_states
        with self.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.exp == exp, t.c.run == run).order_by(t.c.id)
            ).all()
        return [_state(r) for r in rows]

    # -- good-run lists ----------------------------------------------------------------------

    def make_grl(
        self,
        name: str,
        expression: str,
        *,
        user: User,
        description: str = "",
        exp: int | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> GoodRunList:
        """Evaluate ``expression`` over the runs selected with their current flags and store
        the result as the next version of good-run list ``name`` (managers only)."""
        from b2calib.qa import grl as g

        if not user.is_manager:
            raise PermissionDenied(f"{user} may not publish good-run lists (managers only)")
        if not name or any(c.isspace() for c in name):
            raise QAError(f"bad good-run-list name {name!r}")
        expr = g.parse(expression)
        with self.write() as conn:
            self._require_user(conn, user)
            rows = conn.execute(
                sa.select(s.qa_runs)
                .where(*_run_filter(s.qa_runs, exp, first, last))
                .order_by(s.qa_runs.c.exp, s.qa_runs.c.run)
            ).all()
            flags = self._grid(conn, exp, first, last)
            runs = [
                _run(r, {d: e.flag for d, e in flags.get((r.exp, r.run), {}).items()}) for r in rows
            ]
            t = s.qa_grls
            version = (
                conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.name == name)).scalar()
                or 0
            ) + 1
            made = g.evaluate(expr, runs)
            result = g.GoodRunList(
                name=name,
                expression=str(expr),
                runs=made.runs,
                version=version,
                created=now(),
                author=user.name,
                description=description,
            )
            conn.execute(
                t.insert().values(
                    name=name,
                    version=version,
                    expression=result.expression,
                    description=description,
                    content=json.dumps(result.to_json(), sort_keys=True),
                    author=user.name,
                    created=result.created,
                )
            )
        return result

    def grl(self, name: str, version: int | None = None) -> GoodRunList:
        """Good-run list ``name`` (its newest version by default)."""
        from b2calib.qa.grl import GoodRunList

        t = s.qa_grls
        query = sa.select(t).where(t.c.name == name)
        query = (
            query.where(t.c.version == version)
            if version is not None
            else query.order_by(t.c.version.desc()).limit(1)
        )
        with self.read() as conn:
            row = conn.execute(query).first()
        if row is None:
            what = f"version {version} of " if version is not None else ""
            raise QAError(f"no {what}good-run list {name!r}")
        return GoodRunList.from_json(json.loads(row.content))

    def grls(self) -> list[GoodRunList]:
        """The newest version of every good-run list, by name."""
        from b2calib.qa.grl import GoodRunList

        t = s.qa_grls
        newest = sa.select(sa.func.max(t.c.id)).group_by(t.c.name)
        with self.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.id.in_(newest)).order_by(t.c.name)).all()
        return [GoodRunList.from_json(json.loads(r.content)) for r in rows]

    def grl_versions(self, name: str) -> list[GoodRunList]:
        """Every version of good-run list ``name``, oldest first."""
        from b2calib.qa.grl import GoodRunList

        t = s.qa_grls
        with self.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.name == name).order_by(t.c.version)).all()
        if not rows:
            raise QAError(f"no good-run list {name!r}")
        return [GoodRunList.from_json(json.loads(r.content)) for r in rows]


def _user(row: Any) -> User:
    return User(row.name, row.role, tuple(d for d in row.detectors.split(",") if d))


def _flag(row: Any) -> FlagEntry:
    return FlagEntry(
        row.exp, row.run, row.detector, row.flag, row.comment, row.author, as_utc(row.time)
    )


def _state(row: Any) -> RunState:
    return RunState(row.exp, row.run, row.state, row.comment, row.author, as_utc(row.time))


def _reference(row: Any) -> Reference:
    return Reference(
        row.detector,
        row.name,
        row.exp,
        row.run,
        row.method,
        row.options,
        Thresholds(row.min_entries, row.p_warning, row.p_error),
    )


def _run(row: Any, dq: dict[str, str]) -> Run:
    return Run(
        exp=row.exp,
        run=row.run,
        run_type=row.run_type,
        beam_energy=row.beam_energy,
        start=row.start,
        stop=row.stop,
        lumi_pb=row.lumi_pb,
        l1_triggers=row.l1_triggers,
        detectors=tuple(d for d in row.detectors.split(",") if d),
        magnet_on=bool(row.magnet_on),
        ecms_nominal_gev=row.ecms_nominal_gev,
        notes=row.notes,
        dq=dq,
    )


def __dir__() -> list[str]:
    return __all__
