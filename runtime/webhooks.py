"""Webhook delivery for subscriptions, off the decision path.

`Notifier.send` only enqueues (never blocks, never raises): a full queue drops the
notification with a log line. Worker threads POST the Response JSON with a per-request
timeout and retry connection errors and 5xx answers with exponential backoff; 4xx answers
are final (the receiver refused this body, resending will not help). Every notification
that is finally given up is logged on `stageguard.webhooks` and counted in `dropped`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("stageguard.webhooks")

_STOP = object()


def url_allowed(url: str, allow_hosts: frozenset[str] | None) -> bool:
    """An http(s) url with a host, and that host in `allow_hosts` (lower case) when given."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    return allow_hosts is None or host.lower() in allow_hosts


def allow_list(hosts: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(h.lower() for h in hosts) if hosts else None


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    body: Callable[[], dict[str, Any]]  # built in the worker, not on the decision path
    trace_id: str


class Notifier:
    def __init__(self, *, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 max_queue: int = 10_000, workers: int = 2,
                 allow_hosts: Iterable[str] | None = None,
                 user_agent: str = "stageguard-webhooks") -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.allow_hosts = allow_list(allow_hosts)
        self.user_agent = user_agent
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self.sent = 0
        self.dropped = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"stageguard-webhook-{i}",
                                          daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def allowed(self, url: str) -> bool:
        return url_allowed(url, self.allow_hosts)

    def send(self, url: str, body: Callable[[], dict[str, Any]], trace_id: str = "") -> bool:
        """Queue one POST; False (and a log line) when it is refused or the queue is full."""
        if self._closed:
            self._drop(url, trace_id, "the notifier is closed")
            return False
        if not self.allowed(url):
            self._drop(url, trace_id, "url is not http(s) or its host is not allowed")
            return False
        try:
            self._queue.put_nowait(Delivery(url, body, trace_id))
        except queue.Full:
            self._drop(url, trace_id, "the delivery queue is full")
            return False
        return True

    def _drop(self, url: str, trace_id: str, why: str) -> None:
        with self._lock:
            self.dropped += 1
        log.warning("webhook dropped: url=%s trace_id=%s reason=%s", url, trace_id or "-", why)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Delivery)
                self._deliver(item)
            except Exception as exc:  # a bug in one body must not kill the worker
                log.exception("webhook worker error: %s", exc)
            finally:
                self._queue.task_done()

    def _deliver(self, item: Delivery) -> None:
        try:
            data = json.dumps(item.body(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except Exception as exc:
            self._drop(item.url, item.trace_id, f"body could not be serialised: {exc}")
            return
        request = urllib.request.Request(
            item.url, data=data, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": self.user_agent})
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    resp.read()
                with self._lock:
                    self.sent += 1
                return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        self._drop(item.url, item.trace_id,
                   f"gave up after {attempt + 1} attempt{'s' if attempt else ''} ({last})")

    @property
    def pending(self) -> int:
        """Notifications queued or being delivered."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued notification was delivered or dropped; False on timeout."""
        if timeout is None:
            self._queue.join()
            return True
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is queued (up to `timeout`), then stop the workers."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        for _ in self._threads:
            try:
                self._queue.put(_STOP, timeout=1.0)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=1.0)
