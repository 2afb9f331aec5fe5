"""The served dashboards of b2calib (Panel); ``b2calib serve`` serves them all on one port.

In the repository they live in ``apps/``; installed, they are the package ``b2calib_apps`` (a
name of the project's own, see ``hatch_build.py``), an extra: ``pip install 'b2calib[dashboards]'``.

==============  ==============================================================================
``qam``         :class:`~.qam.QAM`: monitoring-variable trends with reference bands, QA
                histograms over their references with the test results
``signoff``     :class:`~.signoff.SignOff`: runs x detectors certification grid, evidence, flags
                and their history, run workflow, good-run lists
``runsummary``  :class:`~.runsummary.RunSummary`: the run table with the three luminosities,
                links to each run's views, totals of the rows shown (CSV download)
``payloads``    payload validation of a staging tag (approve, reject, export)
``conditions``  :class:`~.conditions.Conditions`: global tags, a tag's IoVs on a run axis,
                lookup through a stack of tags, the diff of two tags
``index``       :class:`~.index.Index`: the workbench's landing page
``auth``        :class:`~.auth.DatabaseAuthProvider`: login against the QA database
``serve``       :func:`~.serve.make_server`: all of the above behind the login
==============  ==============================================================================

The apps only lay out and plot what the :mod:`b2calib` library answers; the library never
imports Panel. Each app is a ``pn.viewable.Viewer`` constructible in a plain Python process, e.g.
``SignOff(db=QADatabase(url), user=db.users.get("alice"))``.
"""

from __future__ import annotations

__all__: list[str] = []


def __dir__() -> list[str]:
    return __all__
