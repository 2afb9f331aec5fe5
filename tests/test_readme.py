"""Every command and Python snippet in the README works as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
# a console block is a session: its commands run in order, in one folder
# a command line: `$ b2calib ...`, or a password piped into one: `$ echo secret | b2calib ...`
COMMAND = re.compile(r"^\$ (?:echo \S+ \| )?b2calib ")
SESSIONS = [
    [
        line.split("$ ", 1)[1].split("  #")[0].strip()
        for line in block.splitlines()
        if COMMAND.match(line)
    ]
    for block in re.findall(r"```console\n(.*?)```", README, re.S)
]
SESSIONS = [s for s in SESSIONS if s]
#: A command the README shows refused: its next line is the error it prints (exit status 1).
REFUSED = {
    m.group(1).split("  #")[0].strip(): m.group(2).strip()
    for m in re.finditer(r"^\$ (.*)\n(Error: .*)$", README, re.M)
}
CONSOLE = [c for s in SESSIONS for c in s]
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data-samples").symlink_to(REPO / "data-samples")
    return tmp_path


def test_readme_has_examples() -> None:
    assert any(c.startswith("b2calib simulate") for c in CONSOLE)
    assert any(c.startswith("echo ") and "b2calib signoff flag" in c for c in CONSOLE)
    assert len(CONSOLE) >= 5
    assert len(PYTHON) >= 2


@pytest.mark.parametrize(
    "session",
    # the data-quality session simulates and collects 30 runs (a minute): slow
    [pytest.param(s, marks=pytest.mark.slow) if "qa collect" in str(s) else s for s in SESSIONS],
    ids=[s[0][:40] for s in SESSIONS],
)
def test_console_session(session: list[str], workdir: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "B2CALIB_DB": str(workdir / "conditions.sqlite"),  # never the user's own database
    }
    for command in session:
        done = subprocess.run(
            command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
        )
        if command in REFUSED:  # shown refused: refused, with the error shown
            assert done.returncode == 1, (command, done.stdout)
            assert REFUSED[command] in done.stderr, (command, done.stderr)
            continue
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command
        if command.startswith("b2calib simulate"):
            out = workdir / command.split("--out ")[1].split()[0]
            assert (out / "runs.json").exists()
            assert (out / "truth" / "database.txt").exists()


@pytest.mark.parametrize(
    "snippet",
    # a snippet that opens ROOT needs the `root` package (marked like every ROOT test)
    [pytest.param(p, marks=pytest.mark.root) if "import ROOT" in p else p for p in PYTHON],
)
def test_python_example(snippet: str, workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", snippet],
        cwd=workdir,
        env={**os.environ, "B2CALIB_DB": str(workdir / "conditions.sqlite")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
