"""A bounded queue worked by background threads: what the runtime does off the decision
path (webhook deliveries, recording local versions) goes through one of these.

`offer` never blocks: a full queue says no and the caller counts the drop. A handler's
exception is logged and the worker goes on. `flush` waits for what was offered; `close`
flushes, then stops the threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("stageguard.runtime")

T = TypeVar("T")
_STOP = object()


class WorkQueue(Generic[T]):
    def __init__(self, handle: Callable[[T], None], *, name: str, workers: int = 1,
                 max_queue: int = 10_000) -> None:
        self._handle = handle
        self._name = name
        self._workers = workers
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closed = False

    def offer(self, item: T) -> bool:
        """Queue `item`; False when the queue is full or closed."""
        if self.closed:
            return False
        if not self._threads:
            self._start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = [threading.Thread(target=self._work, daemon=True,
                                              name=f"{self._name}-{i}")
                             for i in range(self._workers)]
            for t in self._threads:
                t.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._handle(item)  # type: ignore[arg-type]
            except Exception:  # one bad item must not stop the worker
                log.exception("%s: work item failed", self._name)
            finally:
                self._queue.task_done()

    @property
    def pending(self) -> int:
        """Items queued or being handled."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every offered item was handled; False on timeout."""
        if timeout is None:
            self._queue.join()
            return True
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Handle what is queued (up to `timeout`), then stop the threads."""
        if self.closed:
            return
        self.flush(timeout)
        self.closed = True
        for _ in self._threads:
            try:
                self._queue.put(_STOP, timeout=1.0)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=1.0)
