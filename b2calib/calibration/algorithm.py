"""Algorithms: what turns merged collector histograms into payloads.

An algorithm is executed on a set of runs (chosen by the IoV strategy). It receives the
histograms summed over those runs, the per-run histograms, the constants currently valid (for
iterating), and the expert configuration, and returns an :class:`AlgorithmResult`: a status as in
basf2's CAF (OK, ITERATE, NOT_ENOUGH_DATA, FAILURE), the payloads, and diagnostics (the
per-channel fit results and the histograms they came from), which are stored with the result so
that a dashboard can show any channel's fit later.
"""

from __future__ import annotations

import abc
import enum
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hist
import numpy as np
import numpy.typing as npt
import uproot

from b2calib.conditions.iov import RunKey
from b2calib.conditions.payload import FILE_COMPRESSION, Payload
from b2calib.exceptions import CalibrationError
from b2calib.io import write_root_bytes
from b2calib.runs import Run

if TYPE_CHECKING:
    from b2calib.calibration.constants import Constants
    from b2calib.calibration.strategies import Execution
    from b2calib.engine import RunOutput
    from b2calib.fit import ChannelFits

__all__ = ["Algorithm", "AlgorithmInput", "AlgorithmResult", "AlgorithmStatus", "Diagnostics"]


class AlgorithmStatus(enum.Enum):
    """Outcome of one algorithm execution (basf2 CAF return codes)."""

    OK = "OK"
    ITERATE = "ITERATE"
    NOT_ENOUGH_DATA = "NOT_ENOUGH_DATA"
    FAILURE = "FAILURE"


@dataclass
class Diagnostics:
    """What an execution shows about itself: histograms and tables (one row per channel).

    Stored as a ROOT file (histograms as TH1/TH2, tables as TTrees), readable by ROOT.
    """

    histograms: dict[str, hist.Hist] = field(default_factory=dict)
    tables: dict[str, dict[str, npt.NDArray[Any]]] = field(default_factory=dict)

    def add_fits(self, name: str, fits: ChannelFits, channels: npt.NDArray[Any]) -> None:
        """Add per-channel fit results as table ``name`` (channel, parameters, errors, status,
        entries, nll)."""
        table: dict[str, npt.NDArray[Any]] = {"channel": np.asarray(channels)}
        for p in fits.parameters:
            table[p] = np.asarray(fits.values[p], dtype=np.float64)
            table[f"{p}_err"] = np.asarray(fits.errors[p], dtype=np.float64)
        table["status"] = np.asarray(fits.status, dtype=np.int8)
        table["entries"] = np.asarray(fits.entries, dtype=np.float64)
        table["nll"] = np.asarray(fits.nll, dtype=np.float64)
        self.tables[name] = table

    def to_bytes(self) -> bytes:
        """The diagnostics as the bytes of a ROOT file (made in memory)."""

        def fill(f: Any) -> None:
            for name, h in self.histograms.items():
                f[f"hist_{name}"] = _writable(h)
            for name, table in self.tables.items():
                f.mktree(f"table_{name}", {k: v.dtype for k, v in table.items()})
                if len(next(iter(table.values()), ())):
                    f[f"table_{name}"].extend(table)

        return write_root_bytes(fill, compression=FILE_COMPRESSION)

    @classmethod
    def from_bytes(cls, data: bytes) -> Diagnostics:
        """Read diagnostics written by :meth:`to_bytes`."""
        out = cls()
        with uproot.open(io.BytesIO(data)) as f:
            for key, cls_name in f.classnames(cycle=False).items():
                if key.startswith("hist_"):
                    out.histograms[key[5:]] = f[key].to_hist()
                elif key.startswith("table_") and cls_name == "TTree":
                    out.tables[key[6:]] = f[key].arrays(library="np")
        return out


def _writable(h: hist.Hist) -> hist.Hist:
    """ROOT histograms hold floating-point counts (TH1D): integer storages are converted."""
    if h.storage_type in (hist.storage.Int64, hist.storage.AtomicInt64):
        out = hist.Hist(*h.axes, storage=hist.storage.Double())
        out.view(flow=True)[...] = h.view(flow=True)
        return out
    return h


@dataclass
class AlgorithmInput:
    """What an algorithm execution gets.

    Attributes
    ----------
    runs
        The runs of this execution that have collector output, in order: a run whose files
        were all skipped, are empty or absent is never among them (the runner merges it or
        leaves it without payload as the IoV strategy says, and reports it), so
        ``per_run[run]`` exists for each.
    histograms
        Collector histograms summed over :attr:`runs` (each summed when first asked for).
    per_run
        The collector output of every input run with data (for algorithms that look at single
        runs, e.g. to request payload boundaries).
    constants
        Payloads currently valid: those of the algorithms before this one in this pass, then
        this calibration's previous iteration, then the staging tag (dependencies), then the
        input global tags.
    config
        The validated expert configuration.
    iteration
        0 for the first pass, then 1, 2 ... while an algorithm asks to ITERATE.
    run_info
        The run registry's record of each run of :attr:`runs` (run type, beam energy, start
        and stop ...), for algorithms that must keep runs of different kinds apart (the
        collision energy of 4S and off-resonance runs); empty when not known.
    """

    runs: list[RunKey]
    histograms: Mapping[str, hist.Hist]
    per_run: RunOutput
    constants: Constants
    config: Mapping[str, Any]
    iteration: int = 0
    run_info: Mapping[RunKey, Run] = field(default_factory=dict)


@dataclass
class AlgorithmResult:
    """Outcome of one execution: status, payloads (empty unless OK or ITERATE), diagnostics."""

    status: AlgorithmStatus
    payloads: list[Payload] = field(default_factory=list)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    message: str = ""

    def __post_init__(self) -> None:
        if self.status in (AlgorithmStatus.NOT_ENOUGH_DATA, AlgorithmStatus.FAILURE):
            if self.payloads:
                raise CalibrationError(
                    f"an algorithm result with status {self.status.value} cannot carry payloads"
                )
        elif not self.payloads:
            raise CalibrationError(
                f"an algorithm result with status {self.status.value} must carry its payloads"
            )


class Algorithm(abc.ABC):
    """Base class of calibration algorithms.

    Subclasses set :attr:`name` and :attr:`payloads` (the payload names they produce) and
    implement :meth:`run`. Algorithms must not keep state between executions; what needs the
    results of all executions together (a value defined modulo a period, placed by continuity
    along the runs) goes in :meth:`combine`.
    """

    name: str = ""
    payloads: tuple[str, ...] = ()

    @abc.abstractmethod
    def run(self, data: AlgorithmInput) -> AlgorithmResult:
        """Execute on the runs of ``data``."""

    def boundaries(self, data: AlgorithmInput) -> Sequence[RunKey]:
        """Runs at which a new payload must start (for
        :class:`~b2calib.calibration.SequentialBoundaries` without given boundaries); ``data``
        holds every input run with collector output. The default requests none."""
        return ()

    def combine(
        self,
        executions: Sequence[Execution],
        constants: Constants,
        config: Mapping[str, Any],
    ) -> list[AlgorithmResult]:
        """The results of the successful executions, revised together once the IoV strategy
        has run.

        Parameters
        ----------
        executions
            The executions that produced payloads (OK or ITERATE), in run order, with their
            IoVs.
        constants
            The constants the executions saw (for an anchor before the first run).
        config
            The validated expert configuration.

        Returns
        -------
        list of AlgorithmResult
            One result per execution, in the same order, with payloads of the same names. They
            are what is staged and what later algorithms and iterations see; the job's step
            records keep each execution's own result, from which :meth:`combine` is repeated
            when a job resumes (so it must depend on nothing else). The default returns the
            results unchanged.
        """
        return [e.result for e in executions]
