"""Helpers of the browser tests: a QA database prepared from the sample bucket, a real
``b2calib serve`` subprocess, the headless browser and its pages (fixtures ``browser`` and
:func:`page_fixture`), logging in, screenshots.

The fixtures ``browser`` and ``page`` reach every test module through tests/conftest.py; a
module wanting another window size sets ``page = page_fixture(width, height)``, and its own
``server`` fixture chooses the server's options."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from b2calib.qa import Thresholds
from b2calib.qa.monitoring import collect_qa
from b2calib.qa.store import QADatabase
from b2calib.runs import RunRegistry

#: Users of the tests: name -> (password, role, detectors).
USERS = {
    "alice": ("alice-secret-1", "expert", ("CDC",)),
    "boss": ("boss-secret-1", "manager", ()),
    "vic": ("vic-secret-1", "viewer", ()),
}
REFERENCE_RUN = (12, 1)
#: The browser the tests drive: Debian's chromium (`make system-deps` installs it).
CHROMIUM = Path("/usr/bin/chromium")
#: Where the browser tests' screenshots go (looked at by people, not by the tests).
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts" / "screenshots"
#: How long a page has to show what a test waits for (these 2-core machines are shared).
TIMEOUT_MS = 30_000


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless :data:`CHROMIUM` driven by Playwright (a ``playwright.sync_api.Browser``),
    closed on exit; the test fails, saying how to install it, when it is missing."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make system-deps` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for a test module (see :func:`chromium`)."""
    with chromium() as b:
        yield b


def page_fixture(width: int = 1400, height: int = 1000, *, timeout_ms: int = TIMEOUT_MS) -> Any:
    """A fixture giving each test a new page of ``width`` x ``height`` pixels in a new browser
    context (no cookies of another test), which accepts downloads."""

    @pytest.fixture
    def page(browser: Any) -> Iterator[Any]:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        context.set_default_timeout(timeout_ms)
        yield context.new_page()
        context.close()

    return page


#: Each test's page: 1400 x 1000 (a module wanting another size sets its own
#: ``page = page_fixture(width, height)``).
page = page_fixture(1400, 1000)


def login(page: Any, server: Server, name: str, password: str, path: str) -> None:
    """Open ``path``, get sent to the login page and log in as ``name`` (back on ``path``)."""
    from playwright.sync_api import expect

    page.goto(server.base + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page.locator("#whoami")).to_contain_text(name)


def grid_cell(page: Any, run: int, column: str) -> Any:
    """The sign-off grid's cell of (run, column), a Playwright ``Locator``."""
    row = page.locator(".signoff-grid .tabulator-row").filter(
        has=page.locator('.tabulator-cell[tabulator-field="run"]', has_text=re.compile(rf"^{run}$"))
    )
    return row.locator(f'.tabulator-cell[tabulator-field="{column}"]')


def open_cell(page: Any, run: int, detector: str, exp: int = 12, tries: int = 3) -> None:
    """Click the sign-off grid's cell of (run, detector) until the evidence panel shows it.

    Tabulator draws the grid's rows again after the page shows them, and a click on a row
    being redrawn is lost (a user clicks again): a lost first click failed CI once, the
    evidence panel not opening within 30 s.
    """
    from playwright.sync_api import expect

    head = page.locator("#evidence-head")
    for attempt in range(tries):
        grid_cell(page, run, detector).click()
        try:
            expect(head).to_contain_text(f"Run {exp}/{run}, {detector}", timeout=10_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def shoot(page: Any, name: str, *, full_page: bool = True, settle_ms: int = 0) -> Path:
    """A screenshot of ``page`` as ``SCREENSHOTS/name.png`` once it is quiet (no network,
    then ``settle_ms`` for the canvases to draw); returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if settle_ms:
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(settle_ms)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def prepare_database(sample: Path, path: Path) -> str:
    """A SQLite QA database with the sample's runs, their monitoring variables and QA
    histograms (references: run 12/1, evaluated) and the :data:`USERS`; returns its URL."""
    url = f"sqlite:///{path}"
    db = QADatabase(url)
    registry = RunRegistry.load(sample / "runs.json")
    db.runs.import_runs(registry)
    for qa in collect_qa(sample, registry=registry):
        db.histograms.store_run(qa)
    for det, name in db.histograms.keys(*REFERENCE_RUN):
        db.histograms.set_reference(
            det, name, *REFERENCE_RUN, thresholds=Thresholds(min_entries=10)
        )
    for r in registry:
        db.status.evaluate(r.exp, r.run)
    for name, (password, role, dets) in USERS.items():
        db.users.add(name, password, role, dets)
    return url


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``b2calib serve`` in a subprocess; ``with Server(url) as s: s.base`` is its address.

    Entering waits until the command prints that it serves (a blocking read of its output, no
    polling); leaving terminates it and checks it stopped. ``port`` serves on a given port (a
    restart of a server on the same address); a free one when not given.
    """

    def __init__(self, url: str, *options: str, port: int | None = None) -> None:
        self.url = url
        self.options: Sequence[str] = options
        self.port = free_port() if port is None else port
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def pid(self) -> int:
        """The server's process id (while it runs)."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Server:
        cmd = [
            sys.executable, "-c", "from b2calib.cli import main; main()", "serve",
            "--db", self.url, "--port", str(self.port), *self.options,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("serving on "):
                break
        else:
            self.proc.wait()
            raise RuntimeError(f"b2calib serve did not start:\n{''.join(self.output)}")
        # keep reading its log so that a full pipe never blocks the server
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._drainer.start()
        return self

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.output.append(line)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drainer.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
