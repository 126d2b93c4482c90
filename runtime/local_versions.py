"""Recording a local stage's invocation rulesets as versions, off the decision path.

Each distinct set of rulesets a local stage is invoked with may be kept as a version of the
stage (so `version=N` replays it), but only when the operator asks for it: at most `cap`
versions per stage, written by one background thread. A decision never waits for a
registry write: until its rulesets are recorded it reports the local stage's own version.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.registry import Registry, RegistryError

log = logging.getLogger("stageguard.runtime")

Key = tuple[str, str]
_STOP = object()


class LocalRecorder:
    def __init__(self, registry: Registry | None, cap: int, max_queue: int = 1_000) -> None:
        self.registry = registry
        self.cap = cap if registry is not None else 0  # nowhere to record without one
        self._known: dict[Key, dict[str, int]] = {}
        self._pending: set[tuple[Key, str]] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.recorded = 0
        self.skipped = 0  # over the cap, the queue full, or the registry refused

    def version(self, key: Key, digest: str) -> int | None:
        return self._known.get(key, {}).get(digest)

    def offer(self, doc: ArtifactDocument, key: Key) -> None:
        """Record `doc` as a version of stage `key` unless that is not wanted or can wait."""
        if self.cap <= 0:
            return
        with self._lock:
            if (key, doc.digest) in self._pending:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name="stageguard-local-versions")
                self._thread.start()
            try:
                self._queue.put_nowait((key, doc))
            except queue.Full:
                self.skipped += 1
                return
            self._pending.add((key, doc.digest))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                key, doc = item  # type: ignore[misc]
                self._record(key, doc)
            except Exception:  # one bad write must not stop recording
                log.exception("local version not recorded")
            finally:
                if item is not _STOP:
                    with self._lock:
                        self._pending.discard((item[0], item[1].digest))  # type: ignore[index]
                self._queue.task_done()

    def _record(self, key: Key, doc: ArtifactDocument) -> None:
        assert self.registry is not None
        entry = self.registry.stage_entry(*key)
        recorded = len(entry.versions) - 1 if entry is not None else 0  # v1 is the definition
        if entry is not None and any(v.digest == doc.digest for v in entry.versions):
            recorded = -1  # already there: only its number is missing here
        if recorded >= self.cap:
            with self._lock:
                self.skipped += 1
            log.warning("local stage %s/%s already records %d versions (the cap); these "
                        "rulesets are not recorded", key[0], key[1], recorded)
            return
        try:
            (published,) = self.registry.publish([doc], reuse_any_version=True)
        except RegistryError as exc:
            with self._lock:
                self.skipped += 1
            log.error("local version of %s/%s not recorded: %s", key[0], key[1], exc)
            return
        with self._lock:
            self._known.setdefault(key, {})[doc.digest] = published.version
            self.recorded += published.created

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(timeout=1.0)
