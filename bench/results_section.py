"""One section of a results file that several benches share (bench/RESULTS_qa.md): each bench
rewrites its own section, between ``<!-- BEGIN name -->`` and ``<!-- END name -->``, and keeps
the rest of the file."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, name: str, body: str, *, write: bool = True) -> str:
    """Put ``body`` between the markers of section ``name`` of ``path`` (appended when the file
    has no such section; the rest of the file is kept) and return the section with its markers.
    With ``write=False`` the file is left alone."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    if write:
        path.write_text(text)
    return block
