"""Detector calibrations: one module per detector, each declaring its calibrations.

=========  ==================================================================================
``ecl``    crystal energy (Bhabha linear system, gamma-gamma and mu-mu peaks, merged), crystal
           and crate time offsets
``cdc``    wire T0, x-t relations, dE/dx run gain, wire gain and cos(theta) correction
``top``    channel masks, module T0, common T0, channel T0
=========  ==================================================================================

Each module has a ``calibrations()`` function returning its :class:`~b2calib.calibration.
Calibration` declarations; they are registered through the ``b2calib.calibrations`` entry
points, so ``b2calib calibrate ecl-energy`` and :func:`b2calib.calibration.get_calibration`
find them without importing this package first.
"""
