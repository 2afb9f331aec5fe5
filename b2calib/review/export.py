"""A global tag as a basf2 local database in a zip: ``database.txt`` and the payload files
(:meth:`ConditionsDB.export_local <b2calib.conditions.ConditionsDB.export_local>`), written to a
temporary folder and zipped in memory, for a download."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from b2calib.conditions.database import ConditionsDB
from b2calib.exceptions import ConditionsError, ReviewError

__all__ = ["export_zip"]


def export_zip(db: ConditionsDB, tag: str) -> bytes:
    """The zip (bytes) of the basf2 local database of ``tag``: ``database.txt`` and the
    ``dbstore_<name>_rev_<revision>.root`` files, byte for byte as stored, at the zip's top
    level (unzipped, the folder is a local database :meth:`ConditionsDB.import_local
    <b2calib.conditions.ConditionsDB.import_local>` reads back).

    Raises
    ------
    ReviewError
        No global tag ``tag``, or it holds no payload.
    """
    try:
        db.tag(tag)
    except ConditionsError as err:
        raise ReviewError(f"no global tag {tag!r} to export ({err})") from None
    with tempfile.TemporaryDirectory(prefix="b2calib-export-") as tmp:
        folder = Path(tmp) / tag
        entries = db.export_local(folder, tag)
        if not entries:
            raise ReviewError(f"global tag {tag} holds no payload to export")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, path.name)
    return buffer.getvalue()


def __dir__() -> list[str]:
    return __all__
