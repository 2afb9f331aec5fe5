"""Channel maps of the Belle II-like detector that b2calib simulates and calibrates.

One module per sub-detector. Each gives the channel counts of the real detector
(see ``shared/reference/belle2-calibration.md`` §3), the numbering of channels used in the
skim files and payloads, and the few geometric facts that simulation and reconstruction share
(ring angles, layer radii, strip counts). Channel ids are validated here, so the simulator and
every calibration agree on one numbering.

=========  =====================================================================
module     content
=========  =====================================================================
``ecl``    8736 CsI(Tl) crystals in 69 theta rings, 52 readout crates, neighbours
``cdc``    14336 sense wires in 56 layers (9 superlayers), 300 front-end boards
``top``    16 modules (slots) x 512 pixels, RF period
``arich``  420 HAPDs x 144 channels in 7 rings
``klm``    barrel (BKLM) and endcap (EKLM) strips, one global channel number
``vxd``    SVD (layers 3-6) and PXD (layers 1-2) sensors with basf2 VxdID encoding
=========  =====================================================================
"""

from b2calib.geometry import arich, cdc, ecl, klm, top, vxd

__all__ = ["arich", "cdc", "ecl", "klm", "top", "vxd"]

#: Detector names as used in run metadata and payload names.
DETECTORS: tuple[str, ...] = ("PXD", "SVD", "CDC", "TOP", "ARICH", "ECL", "KLM")

#: basf2 ``Const::EDetector`` numbers, used in ``ExtHits_m_detectorID``.
DETECTOR_ID: dict[str, int] = {
    "PXD": 1,
    "SVD": 2,
    "CDC": 3,
    "TOP": 4,
    "ARICH": 5,
    "ECL": 6,
    "KLM": 7,
}

#: Solenoid field in tesla (magnet on).
B_FIELD_T = 1.5
