"""Build hook: the dashboards in ``apps/`` are installed as the package ``b2calib_apps``.

The repository keeps them in ``apps/`` (the product's layout); an installed package must not
claim that generic import name. A wheel gets them as ``b2calib_apps/``; an editable install
(``pip install -e .``), where hatchling cannot rename a folder, maps the import name
``b2calib_apps`` onto ``apps/`` with the ``editables`` import hook, so an edit of ``apps/`` is
seen at once, as for ``b2calib/``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

APPS_FOLDER = "apps"
APPS_PACKAGE = "b2calib_apps"


class AppsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Install ``apps/`` as ``b2calib_apps``."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if version != "editable":
            build_data["force_include"][os.path.join(self.root, APPS_FOLDER)] = APPS_PACKAGE
            return
        from editables import EditableProject

        project = EditableProject(APPS_PACKAGE, self.root)
        project.map(APPS_PACKAGE, os.path.join(self.root, APPS_FOLDER))
        folder = tempfile.mkdtemp(prefix="b2calib-editable-")
        for name, content in project.files():
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
            build_data["force_include_editable"][path] = name
        build_data["dependencies"].extend(project.dependencies())
