"""Structured logs: one JSON object per line on stderr.

`stageguard.access` has one line per request, `stageguard.decision` one per invocation; both
carry the trace id, which is also the invoke Response's `trace_metadata.id` and the
`X-Trace-Id` response header, so a caller's complaint leads to its log lines. Payload text is
never logged: it is the user's data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

ACCESS = logging.getLogger("stageguard.access")
DECISION = logging.getLogger("stageguard.decision")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName",
                                                     "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "info", access_log: bool = True) -> None:
    """Route every stageguard and uvicorn logger to JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our access log replaces uvicorn's (which has no trace id and is not JSON).
    logging.getLogger("uvicorn.access").disabled = True
    ACCESS.disabled = not access_log
