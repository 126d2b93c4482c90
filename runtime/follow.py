"""Following a registry: reading it, reloading what changed, watching for changes (a poll,
and a store's own wake-up such as PostgreSQL's NOTIFY), the local snapshot cache, and how
current the view is. A mixin of `Runtime`; the decision path never comes here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stageguard.runtime import snapshot_cache
from stageguard.runtime.model import StageType
from stageguard.runtime.registry import (
    Candidate,
    Index,
    RegistryError,
    VersionEntry,
    check_entry,
)
from stageguard.runtime.served import LoadedStage, Snapshot, load_bytes
from stageguard.runtime.store import RegistryStore

log = logging.getLogger("stageguard.runtime")


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """The registry as this runtime last saw it."""

    revision: int = 0
    synced_at: float | None = None  # epoch seconds of the last successful read
    error: str | None = None  # why the last read failed (None: it did not)
    failures: int = 0  # consecutive failed reads

    def ok(self, revision: int) -> SyncStatus:
        return SyncStatus(revision, time.time(), None, 0)

    def failed(self, why: str) -> SyncStatus:
        return SyncStatus(self.revision, self.synced_at, why, self.failures + 1)

    @property
    def staleness(self) -> float | None:
        """Seconds since the last successful read (None: never read)."""
        return None if self.synced_at is None else max(0.0, time.time() - self.synced_at)


class RegistryFollower:
    """Needs from the runtime: its store, its snapshot and the files it serves, and how to
    publish a new snapshot (declared here, set up by `Runtime`)."""

    registry: RegistryStore | None
    load_errors: dict[str, str]
    _table: Snapshot
    _files: dict[tuple[str, str], LoadedStage]
    _signature: object
    _sync: SyncStatus
    _index: Index | None
    _reload_lock: threading.Lock
    _stop: threading.Event
    _watcher: threading.Thread | None
    _cache_dir: Path | None
    _served_bytes: dict[tuple[str, str], bytes]

    def _publish_table(self, stages: dict[tuple[str, str], LoadedStage],
                       versions: dict[tuple[str, str], tuple[int, ...]],
                       local_digests: dict[tuple[str, str], dict[str, int]] | None = None,
                       candidates: dict[tuple[str, str], tuple[Candidate, LoadedStage]]
                       | None = None) -> None:
        raise NotImplementedError

    def refresh(self, force: bool = False) -> bool:
        """Reload what changed in the registry; True when the stage table changed. A stage
        whose new artifact cannot be loaded keeps serving its previous version (the error is
        logged and kept in `load_errors`)."""
        if self.registry is None:
            return False
        with self._reload_lock:
            try:
                signature = self.registry.signature()
                if signature == self._signature and not force:
                    self._sync = self._sync.ok(self._sync.revision)
                    return False
                index = self._read_changes(force)
            except RegistryError as exc:
                # The store is down or damaged: keep serving the last good snapshot.
                self.load_errors["index"] = str(exc)
                self._sync = self._sync.failed(str(exc))
                log.error("registry index not reloaded: %s", exc)
                return False
            self.load_errors.pop("index", None)
            self._sync = self._sync.ok(index.revision)
            self._index = index
            self._apply(index, self._from_store)
            self._signature = signature
            if self._cache_dir is not None:
                self._write_cache(index)
            return True

    def _read_changes(self, force: bool) -> Index:
        """The registry now: the last view patched with the stages its events since name
        (what a reload costs then follows what changed, not the registry's size), or read
        whole when there is no last view or the events are no longer all kept."""
        assert self.registry is not None
        known = self._index
        events = None if known is None or force else self.registry.events_since(known.revision)
        if not events or known is None:
            return self.registry.read_index()
        projects = {project: dict(stages) for project, stages in known.projects.items()}
        for project, stage in dict.fromkeys((e.project, e.stage) for e in events):
            entry = self.registry.stage_entry(project, stage)
            if entry is None:
                projects.get(project, {}).pop(stage, None)
            else:
                projects.setdefault(project, {})[stage] = entry
        return Index(revision=events[-1].revision, projects=projects)

    def _write_cache(self, index: Index) -> None:
        assert self._cache_dir is not None
        served = {k: raw for k, raw in self._served_bytes.items() if k in self._table.stages}
        try:
            snapshot_cache.write(self._cache_dir, index, served)
        except OSError as exc:
            log.error("snapshot cache not written: %s", exc)

    def _load_cache(self) -> None:
        """Serve the cached snapshot: the store could not be read at start."""
        assert self._cache_dir is not None
        try:
            found = snapshot_cache.read(self._cache_dir)
        except RegistryError as exc:
            self.load_errors["cache"] = str(exc)
            log.error("%s", exc)
            return
        if found is None:
            return
        index, artifacts = found

        def from_cache(key: tuple[str, str], latest: VersionEntry) -> tuple[bytes, str]:
            if key not in artifacts:
                raise RegistryError(f"the snapshot cache has no {key[0]}/{key[1]}")
            return artifacts[key], f"snapshot cache {key[0]}/{key[1]} v{latest.version}"

        self._apply(index, from_cache)
        self._index = index
        self._sync = SyncStatus(index.revision, None, self._sync.error, self._sync.failures)
        log.warning("serving the cached snapshot at revision %d: the registry cannot be read",
                    index.revision)

    def _from_store(self, key: tuple[str, str], latest: VersionEntry) -> tuple[bytes, str]:
        assert self.registry is not None
        return self.registry.read_bytes(latest), self.registry.describe(latest)

    def _apply(self, index: Index,
               read: Callable[[tuple[str, str], VersionEntry], tuple[bytes, str]]) -> None:
        """The stage table for `index`, each changed stage loaded from what `read` gives:
        the version that serves, and a shadow or rollout candidate beside it (from the
        store only: the snapshot cache holds what serves)."""
        table = dict(self._files)
        versions: dict[tuple[str, str], tuple[int, ...]] = {}
        local_digests: dict[tuple[str, str], dict[str, int]] = {}
        candidates: dict[tuple[str, str], tuple[Candidate, LoadedStage]] = {}
        for project, stages in index.projects.items():
            for name, entry in stages.items():
                serving = entry.serving
                if serving is None:
                    continue
                key = (project, name)
                versions[key] = tuple(v.version for v in entry.versions)
                if entry.type is StageType.LOCAL:
                    local_digests[key] = {v.digest: v.version for v in entry.versions}
                loaded, raw = self._load(key, serving, entry.paused,
                                         self._table.stages.get(key), read, "")
                if loaded is not None:
                    table[key] = loaded
                if raw is not None and self._cache_dir is not None:
                    self._served_bytes[key] = raw
                cand = entry.candidate
                wanted = entry.version_entry(cand.version) if cand is not None else None
                if cand is not None and wanted is not None and read == self._from_store:
                    held = self._table.candidates.get(key)
                    fresh, _ = self._load(key, wanted, entry.paused,
                                          held[1] if held is not None else None, read,
                                          " candidate")
                    if fresh is not None:
                        candidates[key] = (cand, fresh)
        self._publish_table(table, versions, local_digests, candidates)

    def _load(self, key: tuple[str, str], version: VersionEntry, paused: bool,
              current: LoadedStage | None,
              read: Callable[[tuple[str, str], VersionEntry], tuple[bytes, str]],
              role: str) -> tuple[LoadedStage | None, bytes | None]:
        """`version` of stage `key` ready to decide (and its bytes when newly read):
        `current` when it is that version already, else loaded and checked; on failure
        `current` (logged, in load_errors)."""
        if current is not None and current.artifact.version == version.version \
                and current.artifact.digest == version.digest:
            return current.with_paused(paused), None
        project, name = key
        try:
            raw, where = read(key, version)
            fresh = load_bytes(raw, where, paused)
            check_entry(fresh.artifact, project, name, version, where)
            self.load_errors.pop(f"{project}/{name}{role}", None)
            return fresh, raw
        except RegistryError as exc:
            self.load_errors[f"{project}/{name}{role}"] = str(exc)
            log.error("stage %s/%s%s not reloaded, previous version keeps serving: %s",
                      project, name, role, exc)
            return (current.with_paused(paused) if current is not None else None), None

    def watch(self, interval: float = 1.0) -> None:
        """Poll the registry index (one stat per interval) and reload on change."""
        if self._watcher is not None:
            return

        # A store that can say when it changed (PostgreSQL's NOTIFY) wakes the loop at once;
        # the poll stays the truth, so a lost notification costs at most one interval.
        wait = getattr(self.registry, "wait_for_change", None)

        def loop() -> None:
            while not self._stop.is_set():
                if callable(wait):
                    # In short slices, so that close() is never kept waiting for long.
                    deadline = time.monotonic() + interval
                    try:
                        while not self._stop.is_set():
                            left = deadline - time.monotonic()
                            if left <= 0 or wait(min(left, 0.25)):
                                break
                    except Exception:  # a lost listener: poll this round
                        self._stop.wait(interval)
                elif self._stop.wait(interval):
                    return
                if self._stop.is_set():
                    return
                try:
                    self.refresh()
                except Exception:  # keep watching whatever one reload hit
                    log.exception("registry reload failed")

        self._watcher = threading.Thread(target=loop, name="stageguard-watch", daemon=True)
        self._watcher.start()

    def sync_status(self) -> SyncStatus:
        """How current this runtime's view of its registry is (revision, last good sync,
        the last error): what a status endpoint and metrics report."""
        return self._sync

