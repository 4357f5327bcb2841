"""The report's PDF, printed by headless Chromium.

The report stage starts Chromium before it imports torch and draws its figures, and keeps it open
over a pipe (the DevTools protocol, `--remote-debugging-pipe`): its start-up, about a second of one
core, then runs while `import torch` keeps the other core busy, and the page prints the moment it
is written. The PDF is the same, byte for byte, as `chromium --print-to-pdf` makes (background
colours printed, the page size the CSS asks for, no header or footer), which is how it prints where
there is no such pipe (Windows). The network is off (a proxy that goes nowhere): the PDF is the page
as it is."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--proxy-server=127.0.0.1:9",
)
# Chromium reads the pipe on fd 3 and writes on fd 4: a small Python puts the ends there and becomes
# Chromium (a shell's redirections take single-digit fds only; subprocess's preexec_fn would run
# Python in a forked copy of a process that has torch's threads by the time it prints)
ON_FDS_3_4 = (
    "import fcntl, os, sys; r, w = (int(a) for a in sys.argv[1:3]); "
    "a, b = (fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, 5) for f in (r, w)); "  # above 4: dup2 then always copies
    "os.dup2(a, 3); os.dup2(b, 4); [os.close(f) for f in (r, w) if f not in (3, 4)]; "
    "os.execvp(sys.argv[3], sys.argv[3:])"
)
PRINT = {"printBackground": True, "preferCSSPageSize": True, "displayHeaderFooter": False}


def find_chromium() -> str | None:
    """$CHROMIUM, or Debian's chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def print_pdf(html_path: Path, pdf_path: Path, chromium: str, timeout: float = 120) -> None:
    """Print `html_path` to `pdf_path` (Chromium started for it and closed after)."""
    with started(chromium, timeout) as browser:
        browser.print_pdf(html_path, pdf_path)


@contextmanager
def started(chromium: str, timeout: float = 120) -> Iterator[Pipe | OneShot]:
    """Chromium starting in the background; what the block gets prints pages (`print_pdf`), each
    step allowed `timeout` seconds. Leaving the block closes it. Where processes take no extra pipes
    (not POSIX), each print starts Chromium for itself."""
    if os.name != "posix":
        yield OneShot(chromium, timeout)
        return
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        browser = Pipe(chromium, Path(profile), timeout)
        try:
            yield browser
        finally:
            browser.close()


class Pipe:
    """Chromium with its DevTools pipe: commands on its fd 3, answers and events on its fd 4, each
    message JSON ended by a NUL byte."""

    def __init__(self, chromium: str, profile: Path, timeout: float) -> None:
        self.chromium, self.timeout, self.log = chromium, timeout, profile / "stderr.txt"
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        args = [*FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", ON_FDS_3_4, str(to_r), str(from_w), chromium, *args],
                pass_fds=(to_r, from_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        os.close(to_r)
        os.close(from_w)
        self.to, self.fro, self.buffer, self.last_id = to_w, from_r, b"", 0
        self.events: list[dict] = []  # events that came while an answer was awaited
        # a tab for the first page, opened once Chromium is up (this does not wait for it)
        self.page: int | None = self.send("Target.createTarget", {"url": "about:blank"})

    def print_pdf(self, html_path: Path, pdf_path: Path) -> None:
        """Load `html_path` (every image in, the load event fired) and write its PDF to `pdf_path`."""
        pending, self.page, self.events = self.page, None, []
        tab = self.answer(pending) if pending else self.call("Target.createTarget", {"url": "about:blank"})
        target = tab["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        loaded = self.call("Page.navigate", {"url": Path(html_path).resolve().as_uri()}, session=session)
        if loaded.get("errorText"):
            raise RuntimeError(f"{self.chromium} could not open {html_path}: {loaded['errorText']}")
        self.event("Page.loadEventFired", session)
        pdf = base64.b64decode(self.call("Page.printToPDF", PRINT, session=session)["data"])
        if not pdf:
            raise RuntimeError(f"{self.chromium} printed an empty PDF")
        Path(pdf_path).write_bytes(reproducible(pdf))  # a next page gets a tab of its own when it comes

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command; its id, for `answer`."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self.to, json.dumps(message).encode() + b"\0")  # short: the pipe takes it whole
        except BrokenPipeError:
            raise RuntimeError(self.ended()) from None
        return self.last_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        return self.answer(self.send(method, params, session))

    def answer(self, command: int) -> dict:
        """The result of command `command`; events that come before it are kept for `event`."""
        while True:
            message = self.receive()
            if message.get("id") == command:
                if "error" in message:
                    raise RuntimeError(f"{self.chromium}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def event(self, name: str, session: str) -> dict:
        """The first event `name` of the tab `session`, kept or still to come."""
        wanted = lambda m: m.get("method") == name and m.get("sessionId") == session  # noqa: E731
        kept = next((m for m in self.events if wanted(m)), None)
        if kept is not None:
            self.events.remove(kept)
            return kept
        while True:
            message = self.receive()
            if wanted(message):
                return message

    def receive(self) -> dict:
        """The next message, waiting at most `timeout` seconds for it."""
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fro], [], [], left)[0]:
                raise RuntimeError(f"{self.chromium} did not answer in {self.timeout:g} s")
            chunk = os.read(self.fro, 1 << 20)
            if not chunk:
                raise RuntimeError(self.ended())
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def ended(self) -> str:
        """What to say when Chromium went away: the last line it wrote."""
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return f"{self.chromium} could not print the PDF: {(lines[-1:] or ['it stopped without a word'])[0]}"

    def close(self) -> None:
        """Ask Chromium to quit (kill it after 10 s) and close the pipe."""
        if self.proc.poll() is None:
            try:
                self.send("Browser.close")  # its answer is not awaited: Chromium closes the pipe
                self.proc.wait(timeout=10)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):  # RuntimeError: it had gone already
                self.proc.kill()
                self.proc.wait()
        os.close(self.to)
        os.close(self.fro)


class OneShot:
    """`chromium --print-to-pdf`, one process a page."""

    def __init__(self, chromium: str, timeout: float) -> None:
        self.chromium, self.timeout = chromium, timeout

    def print_pdf(self, html_path: Path, pdf_path: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
            cmd = [
                self.chromium,
                *FLAGS,
                "--no-pdf-header-footer",
                f"--user-data-dir={profile}",
                f"--print-to-pdf={Path(pdf_path).resolve()}",
                Path(html_path).resolve().as_uri(),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        if r.returncode != 0 or not Path(pdf_path).exists() or Path(pdf_path).stat().st_size == 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{self.chromium} could not print the PDF: {tail[0]}")
        Path(pdf_path).write_bytes(reproducible(Path(pdf_path).read_bytes()))


PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{14})([^)]*)\)")
NODE_ID = re.compile(rb"\(node(\d{8})\)")


def reproducible(pdf: bytes) -> bytes:
    """The same page's PDF as the same bytes, whenever and however it was printed: the dates set
    (`fixed_dates`), and the tagged PDF's structure ids counted from 1. Chromium names each element
    of the structure tree after its DOM node's id, from a counter of the renderer process that
    whatever ran in it before (a blank tab's document) has moved on: the same page printed twice
    came out one apart. Shifting them all by the same amount keeps their order (the id tree is
    sorted by them) and each id's length, so the file's byte offsets stay valid."""
    ids = [int(m) for m in NODE_ID.findall(pdf)]
    if ids:
        shift = min(ids) - 1
        pdf = NODE_ID.sub(lambda m: b"(node%08d)" % (int(m.group(1)) - shift), pdf)
    return fixed_dates(pdf)


def fixed_dates(pdf: bytes) -> bytes:
    """The PDF with its creation and modification dates set to SOURCE_DATE_EPOCH (the
    reproducible-builds convention), or 1980-01-01: the same page prints to the same bytes, so
    the report is remade byte for byte from the same inputs. Each date keeps its length, so the
    file's byte offsets stay valid."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)).encode()

    def fixed(m: re.Match) -> bytes:
        zone = {0: b"", 1: b"Z", 7: b"+00'00'"}.get(len(m.group(3)), b"Z" + b" " * (len(m.group(3)) - 1))
        return b"/%s (D:%s%s)" % (m.group(1), stamp, zone)

    return PDF_DATE.sub(fixed, pdf)
