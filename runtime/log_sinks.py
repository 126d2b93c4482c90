"""Where decision events go (runtime/decision_log.py runs each on its own thread):

- `JsonlSink`: one JSON object per line in a file, rotated by size (the embedded default);
- `HttpSink`: batches POSTed as gzip-compressed JSON lines to a collector;
- the PostgreSQL store's own table (`runtime/postgres.PostgresDecisionSink`).

A sink's `write` delivers one batch or raises; the worker retries it with backoff and counts
what it drops. Encoding is the sinks' (one `json.dumps` per event, done off the decision
path).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stageguard.runtime.decision_log import encode_line


def encode_lines(events: Sequence[dict[str, Any]],
                 lines: Sequence[bytes] | None = None) -> bytes:
    """The batch as JSON lines: `lines` when the log encoded them already."""
    if lines is not None:
        return b"".join(lines)
    return b"".join(encode_line(e) for e in events)


class JsonlSink:
    """Appends to PATH; once it holds `max_bytes`, PATH becomes PATH.1 (PATH.1 PATH.2, …,
    keeping `backups`) and a new PATH starts. A line is written whole or, on a crash, is the
    file's last and unterminated (readers skip it). `fsync` each batch when asked."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 64 * 2**20,
                 backups: int = 5, fsync: bool = False) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 (held open across batches)

    def write(self, events: Sequence[dict[str, Any]],
              lines: Sequence[bytes] | None = None) -> None:
        data = encode_lines(events, lines)
        with self._lock:
            if self._file.tell() and self._file.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            self._file.close()


class HttpSink:
    """POSTs each batch to `url` as `application/x-ndjson`, gzip-compressed; any 2xx answer
    accepts the batch, anything else (or no answer within `timeout`) fails it. Receivers
    should deduplicate on `decision_id`: a batch whose answer was lost is sent again."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a decision log url is http(s)://host/path, not {url!r}")
        self.url = url
        self.name = f"http:{parts.hostname}:{parts.port or ''}{parts.path}"
        self._parts = parts
        self._headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip",
                         **(headers or {})}
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self._parts.hostname or "", self._parts.port
            self._conn = (http.client.HTTPSConnection(host, port, timeout=self._timeout,
                                                      context=ssl.create_default_context())
                          if self._parts.scheme == "https"
                          else http.client.HTTPConnection(host, port, timeout=self._timeout))
        return self._conn

    def write(self, events: Sequence[dict[str, Any]],
              lines: Sequence[bytes] | None = None) -> None:
        body = gzip.compress(encode_lines(events, lines), compresslevel=5)
        path = (self._parts.path or "/") + (f"?{self._parts.query}" if self._parts.query else "")
        conn = self._connection()
        try:
            conn.request("POST", path, body=body, headers=self._headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conn = None  # the next attempt connects afresh
            raise
        if not 200 <= resp.status < 300:
            raise OSError(f"{self.url} answered {resp.status}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def read_events(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Every event of JSONL decision logs (plain or .gz), in file order, without the lines
    `iter_events` cannot read."""
    return [e for e in iter_events(paths) if e is not None]


def iter_events(paths: Sequence[str | os.PathLike[str]]) -> Iterator[dict[str, Any] | None]:
    """The events of JSONL decision logs (plain or .gz) one by one, and None for each line
    that is not a JSON object (a reader counts those); an unterminated last line (a crash
    mid-write) is not an event and is skipped."""
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    yield None
                    continue
                yield event if isinstance(event, dict) else None
