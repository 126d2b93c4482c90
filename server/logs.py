"""Structured logs: one JSON object per line on stderr.

`stageguard.access` has one line per request, `stageguard.decision` one per invocation; both
carry the trace id, which is also the invoke Response's `trace_metadata.id` and the
`X-Trace-Id` response header, so a caller's complaint leads to its log lines. Payload text is
never logged: it is the user's data.

Two lines per request must stay cheap next to a decision of a few microseconds: records do
not look up their caller, and lines are written in batches (`BatchedLines`): at most 50 ms
after they were logged, at once for warnings and errors, and on shutdown.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from typing import IO, Any

from orjson import dumps as _dumps

from stageguard.runtime.clock import utc_text

ACCESS = logging.getLogger("stageguard.access")
DECISION = logging.getLogger("stageguard.decision")
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName",
                                                           "color_message"}
# ASCII: a lone surrogate written as is would fail the write of the whole batch (stderr
# encodes strictly), losing every line in it.
_json_encode = json.JSONEncoder(ensure_ascii=True, default=str).encode


def _encode(fields: dict[str, Any]) -> str:
    """A line's JSON: by orjson (compact, in C: a fifth of the standard encoder's cost per
    line), or, for what orjson refuses (text with lone surrogates, integers past 64 bits),
    by the standard encoder, in ASCII; anything else that JSON has no type for, as its
    str()."""
    try:
        return _dumps(fields, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError
        return _json_encode(fields)


def info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, the same line, for the per-request lines. When
    `configure` installed the only handler (no filters, nothing else listening), the line is
    written without a LogRecord; otherwise it goes through logging, without the look-up of
    the calling frame (a stack walk per record that nothing here reads)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _installed
    if (handler is not None and logger.propagate and not logger.handlers
            and not logger.filters and logging.root.handlers == [handler]
            and not logging.root.filters and not handler.filters):
        handler.line(_encode({"ts": utc_text(time.time_ns()), "level": "info",
                              "logger": logger.name, "message": message, **fields}))
        return
    logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None,
                                    extra=fields))


_installed: BatchedLines | None = None  # the handler `configure` put on the root logger


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": utc_text(int(record.created * 1_000_000_000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out)


class BatchedLines(logging.Handler):
    """Formatted lines collected and written together by a background thread, every
    `interval` seconds; a warning or worse is written at once with what precedes it."""

    def __init__(self, stream: IO[str], interval: float = 0.05) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._lines: list[str] = []
        self._wake = threading.Event()
        self._closed = False
        self._writer = threading.Thread(target=self._run, daemon=True,
                                        name="stageguard-log-writer")
        self._writer.start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)  # list.append is atomic under the GIL
        if record.levelno >= logging.WARNING:
            self.flush()

    def line(self, text: str) -> None:
        """An info line formatted by the caller (`info`)."""
        self._lines.append(text)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self.flush()

    def flush(self) -> None:
        assert self.lock is not None  # made by logging.Handler
        with self.lock:
            lines, self._lines = self._lines, []
            if not lines:
                return
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr gone: nothing better to do
                pass

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()


def configure(level: str = "info", access_log: bool = True) -> None:
    """Route every stageguard and uvicorn logger to JSON lines on stderr."""
    # The logging docs' own optimisations: no thread or process names (nothing reads them).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _installed
    handler = BatchedLines(sys.stderr)
    handler.setFormatter(JsonFormatter())
    _installed = handler
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, BatchedLines):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our access log replaces uvicorn's (which has no trace id and is not JSON).
    logging.getLogger("uvicorn.access").disabled = True
    ACCESS.disabled = not access_log
