"""Copy the README's screenshots from the browser tests' into docs/screenshots (``make
screenshots`` runs the tests first).

Each app's picture is the first of its candidates found in build/test-artifacts/screenshots,
made the size of a laptop's window (1280 pixels wide, at most 800 high: a full-page
screenshot is scaled to that width and its top kept; the payload validation keeps its whole
page, whose drill-down is below the fold) and stored as an optimised palette PNG; each must stay
under 250 kB. Usage: python docs/screenshots.py
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "build" / "test-artifacts" / "screenshots"
TARGET = REPO / "docs" / "screenshots"
WIDTH, HEIGHT = 1280, 800
LIMIT = 250_000
#: README pictures kept whole (scaled to WIDTH, not cut at HEIGHT).
WHOLE = {"payloads"}
#: README picture -> the tests' screenshots it may be, in order of preference.
CHOSEN = {
    "index": ["index.png"],
    "qam": ["qam.png"],
    "signoff": ["signoff.png"],
    "runsummary": ["runsummary.png"],
    "payloads": ["payloads-drilldown.png", "payloads-payload.png", "payloads-*.png"],
    "conditions": ["conditions.png"],
}


def find(patterns: list[str]) -> Path | None:
    """The first screenshot matching ``patterns`` (in order; sorted names within a pattern)."""
    for pattern in patterns:
        found = sorted(SOURCE.glob(pattern))
        if found:
            return found[0]
    return None


def shrink(path: Path, whole: bool = False) -> bytes:
    """``path`` at the README's size (its whole height when ``whole``) as an optimised palette
    PNG."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if rgb.width != WIDTH:
        rgb = rgb.resize((WIDTH, round(rgb.height * WIDTH / rgb.width)), Image.Resampling.LANCZOS)
    if not whole:
        rgb = rgb.crop((0, 0, WIDTH, min(rgb.height, HEIGHT)))
    out = io.BytesIO()
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.parse_args()
    TARGET.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, patterns in CHOSEN.items():
        source = find(patterns)
        if source is None:
            missing.append(f"{name} ({', '.join(patterns)})")
            continue
        data = shrink(source, whole=name in WHOLE)
        if len(data) > LIMIT:
            print(f"{name}: {source.name} is {len(data) / 1000:.0f} kB, over {LIMIT // 1000} kB")
            return 1
        (TARGET / f"{name}.png").write_bytes(data)
        print(f"docs/screenshots/{name}.png <- {source.name} ({len(data) / 1000:.0f} kB)")
    if missing:
        print(f"no screenshot in {SOURCE} for: {'; '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
