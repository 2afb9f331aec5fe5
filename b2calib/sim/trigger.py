"""Software-trigger (HLT) variables computed from reconstructed tracks and ECL clusters."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from b2calib.physics import mass
from b2calib.sim.detector import Collection
from b2calib.sim.physics import Beam, boost

__all__ = ["trigger_variables"]

F = npt.NDArray[Any]


def _top2(
    evt: npt.NDArray[np.int64], value: F, n_events: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Index of the largest and second-largest ``value`` per event (-1 when absent)."""
    order = np.lexsort((-value, evt))
    e = evt[order]
    first = np.searchsorted(e, np.arange(n_events))
    count = np.bincount(evt, minlength=n_events)
    i1 = np.where(count >= 1, order[np.minimum(first, len(order) - 1)] if len(order) else -1, -1)
    i2 = np.where(
        count >= 2, order[np.minimum(first + 1, len(order) - 1)] if len(order) else -1, -1
    )
    return i1, i2


def _angle_deg(a: F, b: F) -> F:
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
    )
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def trigger_variables(
    fit: Collection, clusters: Collection, n_events: int, nominal: Beam
) -> dict[str, F]:
    """The variables of :data:`b2calib.skims.TRIGGER_VARIABLES` for every event.

    The HLT uses the nominal beam energy of the run, not the true one.
    """
    to_cms = -nominal.boost
    ebeam = nominal.ecms / 2
    # tracks
    evt = np.asarray(fit["evt"], dtype=np.int64)
    omega = np.asarray(fit["m_omega"], dtype=np.float64)
    pt = np.where(omega != 0, 0.0029979246 * 1.5 / np.maximum(np.abs(omega), 1e-12), 5.0)
    phi0 = np.asarray(fit["m_phi0"], dtype=np.float64)
    tanl = np.asarray(fit["m_tanLambda"], dtype=np.float64)
    mom = np.column_stack([pt * np.cos(phi0), pt * np.sin(phi0), pt * tanl])
    good = (
        (pt > 0.2)
        & (np.abs(np.asarray(fit["m_d0"])) < 2.0)
        & (np.abs(np.asarray(fit["m_z0"])) < 4.0)
    )
    e = np.sqrt(np.sum(mom**2, axis=1) + mass(211) ** 2)
    p_cms4 = boost(np.column_stack([mom, e]), to_cms) if len(e) else np.zeros((0, 4))
    p_cms = np.linalg.norm(p_cms4[:, :3], axis=1)
    # E/p from the matched cluster
    c_evt = np.asarray(clusters["evt"], dtype=np.int64)
    c_e = np.asarray(clusters["m_energy"], dtype=np.float64)
    c_trk = np.asarray(clusters["m_trackIndex"], dtype=np.int64)
    first_trk = np.searchsorted(evt, np.arange(n_events))
    matched = c_trk >= 0
    trk_global = first_trk[c_evt[matched]] + c_trk[matched]
    eop = np.zeros(len(evt))
    ok = trk_global < len(evt)
    np.add.at(eop, trk_global[ok], c_e[matched][ok])
    eop /= np.maximum(np.linalg.norm(mom, axis=1), 1e-9)
    out: dict[str, F] = {}
    out["nTrkAllLE"] = np.bincount(evt, minlength=n_events).astype(np.float64)
    out["nTracksLE"] = np.bincount(evt[good], minlength=n_events).astype(np.float64)
    out["nEidLE"] = np.bincount(evt[good & (eop > 0.8)], minlength=n_events).astype(np.float64)
    ge = evt[good]
    gp = p_cms[good]
    gvec = p_cms4[good, :3]
    i1, i2 = _top2(ge, gp, n_events)
    p1 = np.where(i1 >= 0, gp[i1] if len(gp) else 0.0, 0.0)
    p2 = np.where(i2 >= 0, gp[i2] if len(gp) else 0.0, 0.0)
    out["P1CMSBhabhaLE"], out["P2CMSBhabhaLE"] = p1, p2
    out["P1OEbeamCMSBhabhaLE"], out["P2OEbeamCMSBhabhaLE"] = p1 / ebeam, p2 / ebeam
    acol = np.full(n_events, 180.0)
    both = (i1 >= 0) & (i2 >= 0)
    if both.any():
        acol[both] = 180.0 - _angle_deg(gvec[i1[both]], gvec[i2[both]])
    out["AcolCMSLE"] = acol
    # clusters in the CMS (massless)
    th = np.asarray(clusters["m_theta"], dtype=np.float64)
    ph = np.asarray(clusters["m_phi"], dtype=np.float64)
    dirs = np.column_stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])
    c4 = np.column_stack([dirs * c_e[:, None], c_e])
    c_cms = boost(c4, to_cms) if len(c_e) else np.zeros((0, 4))
    j1, j2 = _top2(c_evt, c_cms[:, 3], n_events)
    ec1 = np.where(j1 >= 0, c_cms[np.maximum(j1, 0), 3] if len(c_e) else 0.0, 0.0)
    ec2 = np.where(j2 >= 0, c_cms[np.maximum(j2, 0), 3] if len(c_e) else 0.0, 0.0)
    out["EC1CMSLE"], out["EC2CMSLE"], out["EC12CMSLE"] = ec1, ec2, ec1 + ec2
    big = c_e > 0.1
    out["EtotLE"] = np.bincount(c_evt[big], weights=c_e[big], minlength=n_events)
    out["nClustersLE"] = np.bincount(c_evt[big], minlength=n_events).astype(np.float64)
    cl_acol = np.full(n_events, 180.0)
    cb = (j1 >= 0) & (j2 >= 0)
    if cb.any():
        cl_acol[cb] = 180.0 - _angle_deg(c_cms[j1[cb], :3], c_cms[j2[cb], :3])
    out["Bhabha2Trk"] = (
        (out["nTracksLE"] >= 2)
        & (p1 / ebeam > 0.5)
        & (p2 / ebeam > 0.5)
        & (ec1 + ec2 > 4.0)
        & (acol < 10.0)
    ).astype(np.float64)
    out["GG"] = ((out["nTracksLE"] == 0) & (ec1 > 2.0) & (ec2 > 2.0) & (cl_acol < 10.0)).astype(
        np.float64
    )
    return out
