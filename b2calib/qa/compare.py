"""Comparison of a histogram with its reference: chi2, Kolmogorov-Smirnov, Anderson-Darling.

The tests give the numbers ROOT gives for the same histograms, so that a shifter's verdict does
not depend on the tool that computed it:

* :func:`chi2_test` is Gagunashvili's homogeneity test as ROOT's ``TH1::Chi2Test`` computes it
  (N. Gagunashvili, "Comparison of weighted and unweighted histograms", arXiv:physics/0605123):
  ``"UU"`` two unweighted histograms, ``"UW"`` unweighted against weighted, ``"WW"`` two weighted
  ones; bins empty in both histograms are left out and cost one degree of freedom each; ``"UF"``
  and ``"OF"`` include the under- and overflow bins. Also the normalised residuals.
* :func:`ks_test` is ``TH1::KolmogorovTest``: the largest distance between the two cumulative
  distributions, scaled by the effective numbers of entries, with ROOT's Kolmogorov
  probability; ``"N"`` combines it with the probability that the normalisations agree,
  ``"U"``/``"O"`` include under/overflow. Histograms with no errors are treated as functions.
* :func:`ad_test` is ``TH1::AndersonDarlingTest``: the two-sample Anderson-Darling statistic of
  Scholz and Stephens (J. Am. Stat. Assoc. 82 (1987) 918) for binned data, standardised, with the
  p-value interpolated in the upper quantiles the kSamples package tabulates.

:func:`compare` runs one of them and turns the p-value into a status with per-histogram
thresholds (:class:`Thresholds`): TOO_FEW below the minimum number of entries, ERROR below
``p_error``, WARNING below ``p_warning``, else GOOD.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import hist
import numpy as np
import numpy.typing as npt
from scipy import stats

from b2calib.exceptions import ConfigError

__all__ = [
    "Comparison",
    "QAStatus",
    "Thresholds",
    "ad_test",
    "chi2_test",
    "compare",
    "kolmogorov_prob",
    "ks_test",
]

F = npt.NDArray[np.float64]
Method = Literal["chi2", "ks", "ad"]


class QAStatus(enum.IntEnum):
    """Outcome of a comparison (ordered: a larger value is worse)."""

    GOOD = 0
    TOO_FEW = 1
    WARNING = 2
    ERROR = 3


@dataclass(frozen=True)
class Thresholds:
    """When a comparison is good enough.

    Attributes
    ----------
    min_entries
        Fewer entries than this in the histogram (or its reference): TOO_FEW, no verdict.
    p_warning, p_error
        p-values below which the status is WARNING, ERROR (basf2's default p_error is 0.01).
    """

    min_entries: float = 100.0
    p_warning: float = 0.05
    p_error: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_error <= self.p_warning <= 1.0:
            raise ConfigError(
                f"thresholds need 0 <= p_error <= p_warning <= 1, got p_error={self.p_error}, "
                f"p_warning={self.p_warning}"
            )
        if self.min_entries < 0:
            raise ConfigError(f"min_entries must not be negative, got {self.min_entries}")

    def status(self, p_value: float, entries: float) -> QAStatus:
        """The status of a p-value obtained with ``entries`` (the smaller of the two sums)."""
        if entries < self.min_entries:
            return QAStatus.TOO_FEW
        if p_value < self.p_error:
            return QAStatus.ERROR
        if p_value < self.p_warning:
            return QAStatus.WARNING
        return QAStatus.GOOD


@dataclass(frozen=True)
class Comparison:
    """Result of comparing a histogram with its reference."""

    method: str
    options: str
    statistic: float
    ndf: int | None
    p_value: float
    status: QAStatus
    entries: float
    reference_entries: float
    message: str = ""
    residuals: F | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the residuals)."""
        return {
            "method": self.method,
            "options": self.options,
            "statistic": self.statistic,
            "ndf": self.ndf,
            "p_value": self.p_value,
            "status": self.status.name,
            "entries": self.entries,
            "reference_entries": self.reference_entries,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Comparison:
        """Inverse of :meth:`as_dict` (the residuals are not kept)."""
        return cls(
            method=d["method"],
            options=d["options"],
            statistic=float(d["statistic"]),
            ndf=d["ndf"],
            p_value=float(d["p_value"]),
            status=QAStatus[d["status"]],
            entries=float(d["entries"]),
            reference_entries=float(d["reference_entries"]),
            message=d.get("message", ""),
        )


# -------------------------------------------------------------------------------- inputs
def _contents(h: hist.Hist, under: bool, over: bool) -> tuple[F, F]:
    """Bin contents and variances (all axes, with the flow bins asked for and present);
    unweighted storages have variance = content."""
    values = np.asarray(h.values(flow=True), dtype=np.float64)
    variances = h.variances(flow=True)
    var = values.copy() if variances is None else np.asarray(variances, dtype=np.float64)
    index = []
    for ax in h.axes:
        lo = 1 if ax.traits.underflow else 0
        hi = lo + ax.size
        start = 0 if (under and ax.traits.underflow) else lo
        stop = hi + 1 if (over and ax.traits.overflow) else hi
        index.append(slice(start, stop))
    sel = tuple(index)
    return values[sel].ravel(), var[sel].ravel()


def _check_pair(h: hist.Hist, ref: hist.Hist) -> None:
    if h.ndim != ref.ndim:
        raise ConfigError(f"histograms have {h.ndim} and {ref.ndim} dimensions")
    for a, b in zip(h.axes, ref.axes, strict=True):
        if a.size != b.size or not np.allclose(a.edges, b.edges, rtol=1e-9, atol=1e-12):
            raise ConfigError(f"axis {a.name or '?'}: binnings differ ({a.size} and {b.size} bins)")


def _prob(chi2: float, ndf: int) -> float:
    """ROOT's TMath::Prob: upper tail of the chi2 distribution."""
    if ndf <= 0:
        return 0.0
    if chi2 <= 0:
        return 1.0 if chi2 == 0 else 0.0
    return float(stats.chi2.sf(chi2, ndf))


# ------------------------------------------------------------------------------- chi2 test
@dataclass(frozen=True)
class Chi2Result:
    """Chi2 test: statistic, degrees of freedom, p-value, ROOT's ``igood`` flags (1: a bin of
    the first histogram with < 1 entry (UU, UW) or < 10 effective entries (WW); 2: the same for
    the second), and the normalised residual of every compared bin (NaN where left out)."""

    chi2: float
    ndf: int
    p_value: float
    igood: int
    residuals: F


def chi2_test(h1: hist.Hist, h2: hist.Hist, options: str = "UU") -> Chi2Result:
    """Gagunashvili's chi2 homogeneity test of ``h1`` and ``h2``, as ROOT's ``TH1::Chi2Test``.

    Parameters
    ----------
    h1, h2
        Histograms with the same binning (any dimension). Unweighted histograms (Int64 or
        Double storage) have variance = content; Weight storage carries its own.
    options
        ``"UU"`` (default), ``"UW"`` (``h1`` unweighted, ``h2`` weighted) or ``"WW"``;
        ``"UF"``/``"OF"`` include under/overflow bins.
    """
    opt = options.upper()
    modes = [m for m in ("UU", "UW", "WW") if m in opt]
    if len(modes) > 1:
        raise ConfigError(f"chi2 options {options!r}: choose one of UU, UW, WW")
    unknown = opt
    for token in ("UU", "UW", "WW", "UF", "OF"):
        unknown = unknown.replace(token, "")
    if unknown.strip(" ,"):
        raise ConfigError(f"chi2 options {options!r}: unknown {unknown.strip()!r}")
    _check_pair(h1, h2)
    under, over = "UF" in opt, "OF" in opt
    c1, v1 = _contents(h1, under, over)
    c2, v2 = _contents(h2, under, over)
    mode = modes[0] if modes else "UU"
    sum1, sum2 = float(c1.sum()), float(c2.sum())
    if sum1 == 0 or sum2 == 0:
        raise ConfigError("chi2 test: one histogram is empty")
    res = np.full(len(c1), np.nan)
    ndf = len(c1) - 1
    if mode == "UU":
        empty = (np.trunc(c1) == 0) & (np.trunc(c2) == 0)
        ndf -= int(empty.sum())
        use = ~empty
        a, b = c1[use], c2[use]
        total = sum1 + sum2
        cnt = a + b
        nexp1 = cnt * sum1 / total
        correction = (1.0 - sum1 / total) * (1.0 - cnt / total)
        with np.errstate(divide="ignore", invalid="ignore"):
            res[use] = (a - nexp1) / np.sqrt(nexp1) / np.sqrt(correction)
        chi2 = float(np.sum((sum2 * a - sum1 * b) ** 2 / cnt)) / (sum1 * sum2)
        igood = (1 if np.any(a < 1) else 0) + (2 if np.any(b < 1) else 0)
    elif mode == "WW":
        sumw1, sumw2 = float(v1.sum()), float(v2.sum())
        if sumw1 <= 0 and sumw2 <= 0:
            raise ConfigError("chi2 test WW: both histograms have all errors zero")
        empty = (c1 * c1 == 0) & (c2 * c2 == 0)
        ndf -= int(empty.sum())
        use = ~empty
        a, b, e1, e2 = c1[use], c2[use], v1[use], v2[use]
        if np.any((e1 == 0) & (e2 == 0)):
            raise ConfigError("chi2 test WW: a bin has zero errors in both histograms")
        sigma = sum1 * sum1 * e2 + sum2 * sum2 * e1
        chi2 = float(np.sum((sum2 * a - sum1 * b) ** 2 / sigma))
        prob = (a * sum1 * e2 + b * sum2 * e1) / sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            z1 = (a - sum1 * prob) / np.sqrt(e1 * (1.0 - e2 * sum1 * sum1 / sigma))
            z2 = -(b - sum2 * prob) / np.sqrt(e2 * (1.0 - e1 * sum2 * sum2 / sigma))
        res[use] = np.where(e1 > e2, z1, z2)
        with np.errstate(divide="ignore", invalid="ignore"):
            few1 = np.any((e1 > 0) & (a * a / e1 < 10))
            few2 = np.any((e2 > 0) & (b * b / e2 < 10))
        igood = (1 if few1 else 0) + (2 if few2 else 0)
    else:
        chi2, ndf, igood = _chi2_uw(c1, c2, v2, sum1, sum2, ndf, res)
    return Chi2Result(chi2, ndf, _prob(chi2, ndf), igood, res)


def _uw_terms(
    sum1: float, sum2: float, cnt1: float, cnt2: float, e2sq: float
) -> tuple[float, float]:
    var1 = sum2 * cnt2 - sum1 * e2sq
    return var1, var1 * var1 + 4.0 * sum2 * sum2 * cnt1 * e2sq


def _chi2_uw(
    c1: F, c2: F, v2: F, sum1: float, sum2: float, ndf: int, res: F
) -> tuple[float, int, int]:
    """The unweighted-weighted sum, bin by bin: where the first histogram is empty and the
    estimate degenerates, Gagunashvili's prescription (as in ROOT) adds one entry to it and to
    its total, which changes every later bin; hence the sequential loop."""
    sumw2 = float(v2.sum())
    chi2, m, n = 0.0, 0, 0
    for i in range(len(c1)):
        cnt1, cnt2, e2sq = float(c1[i]), float(c2[i]), float(v2[i])
        if cnt1 * cnt1 == 0 and cnt2 * cnt2 == 0:
            ndf -= 1
            continue
        if cnt2 * cnt2 == 0 and e2sq == 0:
            if sumw2 <= 0:
                raise ConfigError(
                    f"chi2 test UW: the weighted histogram has zero content and error in bin {i}"
                )
            e2sq = sumw2 / sum2
        if cnt1 < 1:
            m += 1
        if e2sq > 0 and cnt2 * cnt2 / e2sq < 10:
            n += 1
        var1, var2 = _uw_terms(sum1, sum2, cnt1, cnt2, e2sq)
        while var1 * var1 + cnt1 == 0 or var1 + var2 == 0:
            sum1, cnt1 = sum1 + 1, cnt1 + 1
            var1, var2 = _uw_terms(sum1, sum2, cnt1, cnt2, e2sq)
        var2 = math.sqrt(var2)
        while var1 + var2 == 0:
            sum1, cnt1 = sum1 + 1, cnt1 + 1
            var1, var2 = _uw_terms(sum1, sum2, cnt1, cnt2, e2sq)
            while var1 * var1 + cnt1 == 0 or var1 + var2 == 0:
                sum1, cnt1 = sum1 + 1, cnt1 + 1
                var1, var2 = _uw_terms(sum1, sum2, cnt1, cnt2, e2sq)
            var2 = math.sqrt(var2)
        prob = (var1 + var2) / (2.0 * sum2 * sum2)
        nexp1, nexp2 = prob * sum1, prob * sum2
        d1, d2 = cnt1 - nexp1, cnt2 - nexp2
        chi2 += d1 * d1 / nexp1
        if e2sq > 0:
            chi2 += d2 * d2 / e2sq
            t1 = sum2 * e2sq / var2
            t2 = 1.0 + (sum1 * e2sq - sum2 * cnt2) / var2
            t2 = t1 * t1 * sum1 * prob * (1.0 - prob) + t2 * t2 * e2sq / 4.0
            res[i] = -d2 / math.sqrt(t2)
        else:
            res[i] = d1 / math.sqrt(nexp1)
    return chi2, ndf, (1 if m else 0) + (2 if n else 0)


# ---------------------------------------------------------------------- Kolmogorov-Smirnov
def kolmogorov_prob(z: float) -> float:
    """ROOT's ``TMath::KolmogorovProb``: P(K > z) of the Kolmogorov distribution."""
    u = abs(z)
    if u < 0.2:
        return 1.0
    if u < 0.755:
        c1 = -(math.pi**2) / 8.0
        v = 1.0 / (u * u)
        w = 2.50662827
        return 1.0 - w * (math.exp(c1 * v) + math.exp(9 * c1 * v) + math.exp(25 * c1 * v)) / u
    if u < 6.8116:
        v = u * u
        terms = [math.exp(f * v) for f in (-2.0, -8.0, -18.0, -32.0)]
        maxj = max(1, int(np.rint(3.0 / u)))
        r = [terms[j] if j < maxj else 0.0 for j in range(4)]
        return 2.0 * (r[0] - r[1] + r[2] - r[3])
    return 0.0


@dataclass(frozen=True)
class KSResult:
    """Kolmogorov-Smirnov test: largest distance of the cumulative distributions, its
    probability (combined with the normalisation's under option N) and the effective entries."""

    distance: float
    p_value: float
    effective_entries: tuple[float, float]


def ks_test(h1: hist.Hist, h2: hist.Hist, options: str = "") -> KSResult:
    """Kolmogorov-Smirnov test of two 1-D histograms, as ROOT's ``TH1::KolmogorovTest``.

    ``options``: ``"U"``/``"O"`` include under/overflow, ``"N"`` also compares the
    normalisations (Eadie et al. 11.6.2).
    """
    opt = options.upper()
    if set(opt) - set("UON "):
        raise ConfigError(f"KS options {options!r}: only U, O and N are known")
    if h1.ndim != 1 or h2.ndim != 1:
        raise ConfigError("the Kolmogorov-Smirnov test compares 1-D histograms")
    _check_pair(h1, h2)
    c1, v1 = _contents(h1, "U" in opt, "O" in opt)
    c2, v2 = _contents(h2, "U" in opt, "O" in opt)
    sum1, sum2 = float(c1.sum()), float(c2.sum())
    if sum1 == 0 or sum2 == 0:
        raise ConfigError("KS test: a histogram's integral is zero")
    w1, w2 = float(v1.sum()), float(v2.sum())
    if w1 <= 0 and w2 <= 0:
        raise ConfigError("KS test: both histograms have zero errors")
    esum1 = sum1 * sum1 / w1 if w1 > 0 else 0.0
    esum2 = sum2 * sum2 / w2 if w2 > 0 else 0.0
    distance = float(np.max(np.abs(np.cumsum(c1 / sum1) - np.cumsum(c2 / sum2)), initial=0.0))
    if w1 <= 0:  # the first histogram is exact: a function
        z = distance * math.sqrt(esum2)
    elif w2 <= 0:
        z = distance * math.sqrt(esum1)
    else:
        z = distance * math.sqrt(esum1 * esum2 / (esum1 + esum2))
    p = kolmogorov_prob(z)
    if "N" in opt and w1 > 0 and w2 > 0:
        p_norm = _prob((esum1 - esum2) ** 2 / (esum1 + esum2), 1)
        p = p * p_norm * (1.0 - math.log(p * p_norm)) if p > 0 and p_norm > 0 else 0.0
    return KSResult(distance, p, (esum1, esum2))


# ------------------------------------------------------------------------ Anderson-Darling
# Upper quantiles of the standardised two-sample statistic (m = k - 1 = 1) at the tail
# probabilities _AD_P, from the kSamples package (F. Scholz), as ROOT's GoFTest uses them.
# fmt: off
_AD_P = np.array([
    1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.4, 0.5,
    0.6, 0.7, 0.8, 0.9, 0.925, 0.95, 0.975, 0.99, 0.9925, 0.995, 0.9975, 0.999, 0.99925,
    0.9995, 0.99975, 0.9999, 0.999925, 0.99995, 0.999975, 0.99999,
])
_AD_T = np.array([
    -1.1954, -1.1786, -1.166, -1.1407, -1.1253, -1.0777, -1.0489, -0.9978, -0.9417, -0.8981,
    -0.8598, -0.7258, -0.5966, -0.4572, -0.2966, -0.1009, 0.1571, 0.5357, 1.2255, 1.5262,
    1.9633, 2.7314, 3.7825, 4.1241, 4.6044, 5.409, 6.4954, 6.8279, 7.2755, 8.1885, 9.3061,
    9.6132, 10.0989, 10.8825, 11.8537,
])
# fmt: on


def _ad_sigma(n1: float, n2: float) -> float:
    """Standard deviation of the two-sample statistic under H0 (Scholz and Stephens, sec. 3),
    with the large-N limits of the harmonic sums for N >= 2000, as ROOT computes it (with the
    sample sizes truncated to integers: the sums of weights of weighted histograms)."""
    n = float(int(n1 + n2))
    n1, n2 = float(int(n1)), float(int(n2))
    if n1 < 1 or n2 < 1 or n < 4:
        raise ConfigError(f"AD test: {n1 + n2:.0f} entries are too few")
    k = 2.0
    big_h = 1.0 / n1 + 1.0 / n2
    if n < 2000:
        inv = 1.0 / np.arange(1, int(n))  # 1/1 .. 1/(N-1)
        h = float(inv.sum())
        # g = sum_{i=1}^{N-2} sum_{j=i+1}^{N-1} 1 / ((N - i) j)
        tail = np.cumsum(inv[::-1])[::-1]  # tail[j-1] = sum_{l=j}^{N-1} 1/l
        i = np.arange(1, int(n) - 1)
        g = float(np.sum(tail[i] / (n - i)))
    else:
        h = math.log(n - 1) + np.euler_gamma
        g = math.pi**2 / 6.0
    a = (4 * g - 6) * k + (10 - 6 * g) * big_h - 4 * g + 6
    b = (2 * g - 4) * k**2 + 8 * h * k + (2 * g - 14 * h - 4) * big_h - 8 * h + 4 * g - 6
    c = (6 * h + 2 * g - 2) * k**2 + (4 * h - 4 * g + 6) * k + (2 * h - 6) * big_h + 4 * h
    d = (2 * h + 6) * k**2 - 4 * h * k
    var = (a * n**3 + b * n**2 + c * n + d) / ((n - 1) * (n - 2) * (n - 3))
    if var <= 0:
        raise ConfigError(f"AD test: {n:.0f} entries are too few for the statistic's variance")
    return math.sqrt(var)


def _ad_pvalue(t: float) -> float:
    """Upper-tail probability of the standardised statistic: linear interpolation of
    log(p / (1 - p)) in the tabulated quantiles, extrapolated beyond them."""
    lp = np.log((1.0 - _AD_P) / _AD_P)
    i1 = int(np.searchsorted(_AD_T, t, side="left")) - 1
    i1 = min(max(i1, 0), len(_AD_T) - 2)
    i2 = i1 + 1
    lp0 = (lp[i1] - lp[i2]) * (t - _AD_T[i2]) / (_AD_T[i1] - _AD_T[i2]) + lp[i2]
    return float(1.0 / (1.0 + math.exp(-lp0)))


@dataclass(frozen=True)
class ADResult:
    """Anderson-Darling test: the standardised statistic and its p-value."""

    statistic: float
    p_value: float


def ad_test(h1: hist.Hist, h2: hist.Hist) -> ADResult:
    """Two-sample Anderson-Darling test of two 1-D histograms, as ROOT's
    ``TH1::AndersonDarlingTest``: every bin is a tie of its entries at the bin centre (empty bins
    are left out); the statistic is standardised by its H0 mean (1) and standard deviation."""
    if h1.ndim != 1 or h2.ndim != 1:
        raise ConfigError("the Anderson-Darling test compares 1-D histograms")
    _check_pair(h1, h2)
    c1, _ = _contents(h1, False, False)
    c2, _ = _contents(h2, False, False)
    n1, n2 = float(c1.sum()), float(c2.sum())
    if n1 <= 0 or n2 <= 0:
        raise ConfigError("AD test: a histogram is empty")
    n = n1 + n2
    t = c1 + c2
    use = t > 0
    s1, s2, s = np.cumsum(c1[use]), np.cumsum(c2[use]), np.cumsum(t[use])
    tt = t[use]
    # every distinct value but the last
    s1, s2, s, tt = s1[:-1], s2[:-1], s[:-1], tt[:-1]
    terms = tt * ((n * s1 - n1 * s) ** 2 / n1 + (n * s2 - n2 * s) ** 2 / n2) / (s * (n - s))
    a2 = float(terms.sum()) / n
    stat = (a2 - 1.0) / _ad_sigma(n1, n2)
    return ADResult(stat, _ad_pvalue(stat))


# ------------------------------------------------------------------------------ the verdict
def compare(
    h: hist.Hist,
    reference: hist.Hist,
    method: Method = "chi2",
    options: str = "UU",
    thresholds: Thresholds | None = None,
) -> Comparison:
    """Compare ``h`` with ``reference`` and give it a status.

    Parameters
    ----------
    method
        ``"chi2"`` (options UU, UW, WW, UF, OF), ``"ks"`` (options U, O, N; "UU" is read as no
        option) or ``"ad"``.
    thresholds
        Minimum entries and p-value thresholds of this histogram (default :class:`Thresholds`).

    Histograms with too few entries (either of them) are TOO_FEW: no verdict, but the test is
    run and its statistic and p-value are given (a shifter still sees how far off a short run
    is), and the message says why there is no verdict. An empty histogram is TOO_FEW without a
    test (there is nothing to compare: statistic and p-value NaN); so is a chi2 test with no
    degree of freedom (fewer than two populated bins), whose p-value ROOT gives as 0 even for
    identical histograms.
    """
    th = thresholds or Thresholds()
    _check_pair(h, reference)
    n = float(np.asarray(h.values()).sum())
    n_ref = float(np.asarray(reference.values()).sum())
    entries = min(n, n_ref)
    few = f"{entries:.0f} entries, at least {th.min_entries:.0f} needed"
    if n <= 0 or n_ref <= 0:
        return Comparison(
            method, options, math.nan, None, math.nan, QAStatus.TOO_FEW, n, n_ref,
            f"{few}: {'the histogram' if n <= 0 else 'the reference'} is empty",
        )  # fmt: skip
    if method == "chi2":
        r = chi2_test(h, reference, options)
        message = f"chi2/ndf = {r.chi2:.1f}/{r.ndf}"
        status = th.status(r.p_value, entries)
        if r.ndf < 1:
            # one populated bin (or none in common): ROOT's p-value is 0 whatever the contents,
            # the test cannot tell a difference of shape, so it gives no verdict
            status = QAStatus.TOO_FEW
            message += ": fewer than two populated bins, no shape to compare"
        result = Comparison(
            method, options, r.chi2, r.ndf, r.p_value, status, n, n_ref, message, r.residuals,
        )  # fmt: skip
    elif method == "ks":
        k = ks_test(h, reference, "" if options.upper() == "UU" else options)
        message = f"max distance {k.distance:.4f}"
        result = Comparison(
            method, options, k.distance, None, k.p_value, th.status(k.p_value, entries), n,
            n_ref, message,
        )  # fmt: skip
    elif method == "ad":
        a = ad_test(h, reference)
        message = f"standardised A2 = {a.statistic:.2f}"
        result = Comparison(
            method, "", a.statistic, None, a.p_value, th.status(a.p_value, entries), n, n_ref,
            message,
        )  # fmt: skip
    else:
        raise ConfigError(f"unknown comparison method {method!r}; use chi2, ks or ad")
    if entries < th.min_entries:
        return dataclasses.replace(result, message=f"{result.message}; {few}: no verdict")
    return result
