"""Colour and progress on a terminal, the conventions other tools follow: `--color
auto|always|never`; in auto, `NO_COLOR` (any value) turns colour off, `FORCE_COLOR` on, and
otherwise a stream is coloured when it is a terminal (and TERM is not `dumb`). Progress goes to
standard error, only on a terminal, only for work that has run longer than a second."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TextIO

from stageguard.compiler import diagnostics as diag

_choice = "auto"

# SGR codes per role of compiler.diagnostics.render, as rustc colours its diagnostics.
_SGR = {"error": "1;31", "warning": "1;33", "info": "1;36", "message": "1", "gutter": "1;34",
        "note": "1;32", "help": "1;36", "related": "1;34", "summary": "1",
        "pass": "32", "fail": "1;31"}


def configure(choice: str) -> None:
    global _choice
    _choice = choice


def enabled(stream: TextIO) -> bool:
    if _choice != "auto":
        return _choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return _tty(stream)


def _sgr(role: str, text: str) -> str:
    code = _SGR.get(role)
    return f"\x1b[{code}m{text}\x1b[0m" if code and text else text


def painter(stream: TextIO) -> diag.Painter:
    return _sgr if enabled(stream) else diag.plain


def paint(role: str, text: str, stream: TextIO) -> str:
    return painter(stream)(role, text)


def render_all(diagnostics: Sequence[diag.Diagnostic], sources: Mapping[str, str],
               stream: TextIO) -> str:
    return diag.render_all(diagnostics, sources, painter(stream))


# ---- progress -----------------------------------------------------------------------------


class Progress:
    """A status line on standard error (`lint: stage 3 of 12, output_guard… 4.2 s`), shown
    only once the work has taken a second, rewritten in place, erased at the end."""

    def __init__(self, what: str, stream: TextIO | None = None, after: float = 1.0) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.after = after
        self.detail = ""
        self._began = time.monotonic()
        self._stop = threading.Event()
        self._shown = False
        self._thread: threading.Thread | None = None
        if _tty(self.stream):
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()

    def update(self, detail: str) -> None:
        self.detail = detail

    def _run(self) -> None:
        if self._stop.wait(self.after):
            return
        while True:
            spent = time.monotonic() - self._began
            line = f"{self.what}{': ' + self.detail if self.detail else ''} … {spent:.1f} s"
            self.stream.write("\r\x1b[2K" + line[:_width()])
            self.stream.flush()
            self._shown = True
            if self._stop.wait(0.25):
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _width() -> int:
    try:
        return max(20, os.get_terminal_size(sys.stderr.fileno()).columns - 1)
    except (OSError, ValueError):
        return 79


@contextmanager
def progress(what: str) -> Iterator[Progress]:
    p = Progress(what)
    try:
        yield p
    finally:
        p.close()
