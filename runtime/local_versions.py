"""Recording a local stage's invocation rulesets as versions, off the decision path.

Each distinct set of rulesets a local stage is invoked with may be kept as a version of the
stage (so `version=N` replays it), but only when the operator asks for it: at most `cap`
versions per stage, written by one background thread. A decision never waits for a
registry write: until its rulesets are recorded it reports the local stage's own version.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.registry import RegistryError
from stageguard.runtime.workers import WorkQueue

if TYPE_CHECKING:
    from stageguard.runtime.store import RegistryStore

log = logging.getLogger("stageguard.runtime")

Key = tuple[str, str]


class LocalRecorder:
    def __init__(self, registry: RegistryStore | None, cap: int,
                 max_queue: int = 1_000) -> None:
        self.registry = registry
        self.cap = cap if registry is not None else 0  # nowhere to record without one
        self._known: dict[Key, dict[str, int]] = {}
        self._pending: set[tuple[Key, str]] = set()
        self._lock = threading.Lock()
        self._work: WorkQueue[tuple[Key, ArtifactDocument]] = WorkQueue(
            self._record, name="stageguard-local-versions", max_queue=max_queue)
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
            self._pending.add((key, doc.digest))
        if not self._work.offer((key, doc)):
            with self._lock:
                self._pending.discard((key, doc.digest))
                self.skipped += 1

    def _record(self, item: tuple[Key, ArtifactDocument]) -> None:
        key, doc = item
        try:
            self._write(key, doc)
        finally:
            with self._lock:
                self._pending.discard((key, doc.digest))

    def _write(self, key: Key, doc: ArtifactDocument) -> None:
        assert self.registry is not None
        entry = self.registry.stage_entry(*key)
        versions = entry.versions if entry is not None else []
        recorded = len(versions) - 1  # v1 is the definition itself
        already = any(v.digest == doc.digest for v in versions)  # only its number is missing
        if not already and recorded >= self.cap:
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
        return self._work.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._work.close(timeout)
