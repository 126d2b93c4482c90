"""The embedded registry: versioned stage artifacts in a directory.

Layout (registry format 3)::

    DIR/index.json                        the format and the revision: the single commit point
    DIR/.journal/<revision>.json          one commit: its events and the entries it changed
    DIR/<project>/<stage>/stage.json      the stage's entry (type, paused, versions)
    DIR/<project>/<stage>/v<N>.json       one artifact per version, never rewritten
    DIR/.lock                             serialises writers (flock)

A commit writes what it adds (version files, then its journal record) and then replaces
`index.json`, which names the new revision; until that rename nothing refers to the new
files, so a failed or interrupted commit leaves the registry as it was. After the rename
the commit copies the changed entries into their `stage.json`; a reader that finds one not
yet copied takes it from the journal record of the current revision, and the next writer
finishes the copy before its own commit. So a publish costs the same whatever the size of
the registry: it touches its own stages, one journal record and one small index.

Formats 1 and 2 (one `index.json` holding every stage) are read as they are and migrated to
format 3 by the first write or by `stageguard registry migrate DIR`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stageguard.runtime.canonical import ArtifactDocument, content_digest, dumps
from stageguard.runtime.errors import InvalidRequest, StageNotFound
from stageguard.runtime.fsutil import atomic_write
from stageguard.runtime.identity import StageKeys, find_stage
from stageguard.runtime.model import (
    FORMAT,
    FORMAT_VERSION,
    Artifact,
    StageType,
    name_problem,
)

log = logging.getLogger("stageguard.runtime")

INDEX = "index.json"
LOCK = ".lock"
JOURNAL = ".journal"
STAGE_FILE = "stage.json"
REGISTRY_FORMAT = "stageguard.registry"
# 3: one file per stage and a journal, so a commit's cost does not grow with the registry.
# 2 added the revision and the latest events to the one index; 1 had neither.
INDEX_VERSION = 3
LEGACY_VERSIONS = (1, 2)
EVENTS_KEPT = 1_000


class RegistryError(Exception):
    """The registry cannot be read or written; the message says which file and why."""


class StageExists(RegistryError):
    pass


class RevisionConflict(RegistryError):
    """A conditional write found the store at another revision than the writer read: someone
    else changed it in between, and nothing was written."""


class ServingRefused(RegistryError):
    """A serving change that makes no sense for the stage (nothing written)."""


class VersionNotFound(RegistryError):
    """No such stage, or no such version of it (as opposed to a file that is damaged)."""


class VersionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1)]
    digest: str
    file: str
    created_at: str


class Candidate(BaseModel):
    """A version beside the serving one: `shadow` decides every request too, unseen by the
    caller; `rollout` serves `percent` of the traffic, split by the metadata field `key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[int, Field(ge=1)]
    mode: Literal["shadow", "rollout"]
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    key: str | None = None

    def describe(self) -> str:
        if self.mode == "shadow":
            return f"v{self.version} in shadow"
        return f"v{self.version} for {self.percent:g}% by metadata.{self.key}"


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: StageType
    paused: bool = False
    versions: list[VersionEntry] = Field(default_factory=list)
    # The version that serves (None: the latest); set by a rollback or a promotion, and by
    # a publish that does not activate its version.
    active: Annotated[int, Field(ge=1)] | None = None
    candidate: Candidate | None = None

    @property
    def latest(self) -> VersionEntry | None:
        return self.versions[-1] if self.versions else None

    @property
    def serving(self) -> VersionEntry | None:
        """The version that decides: `active`, else the latest."""
        if self.active is None:
            return self.latest
        return next((v for v in self.versions if v.version == self.active), None)

    def serve(self, version: int) -> None:
        """Make `version` the one that serves (the latest is kept as None: "the latest")."""
        latest = self.latest
        self.active = None if latest is not None and latest.version == version else version

    def version_entry(self, version: int) -> VersionEntry | None:
        return next((v for v in self.versions if v.version == version), None)


EventKind = Literal["published", "paused", "resumed", "shadow", "rollout", "cleared",
                    "promoted", "rolled_back"]
# One change to the store: (kind, project, stage, version, note).
Change = tuple[str, str, str, int | None, str | None]


class Event(BaseModel):
    """One change, as the store's revision counter numbers them: a version published, a
    stage paused or resumed."""

    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1)]
    kind: EventKind
    project: str
    stage: str
    version: int | None = None
    at: str
    note: str | None = None  # a candidate's terms, say ("v3 for 10% by metadata.user")


class Index(BaseModel):
    """Every stage of a store at one revision: what readers work with, whatever the store
    keeps on disk. (Formats 1 and 2 of the directory registry stored exactly this.)"""

    model_config = ConfigDict(extra="forbid")

    format: str = REGISTRY_FORMAT
    format_version: int = INDEX_VERSION
    # Counts the commits: every publish or pause that changed something is one revision.
    revision: Annotated[int, Field(ge=0)] = 0
    # Format 2 only: the changes of the latest EVENTS_KEPT revisions, oldest first.
    events: list[Event] = Field(default_factory=list)
    projects: dict[str, dict[str, StageEntry]] = Field(default_factory=dict)


class Head(BaseModel):
    """`index.json` in format 3."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["stageguard.registry"] = "stageguard.registry"
    format_version: Literal[3] = 3
    revision: Annotated[int, Field(ge=0)] = 0


class StageFile(BaseModel):
    """`stage.json`: a stage's entry as of `revision`, the last commit that changed it."""

    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=0)]
    entry: StageEntry


class Changed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    stage: str
    entry: StageEntry


class Commit(BaseModel):
    """`.journal/<revision>.json`: what one commit did."""

    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1)]
    events: list[Event]
    changed: list[Changed] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Published:
    project: str
    stage: str
    version: int
    created: bool  # False: content identical to the latest version, nothing written


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_bytes(model: BaseModel) -> bytes:
    return (json.dumps(model.model_dump(mode="json"), indent=2, sort_keys=True,
                       ensure_ascii=False) + "\n").encode("utf-8")


Key = tuple[str, str]
R = TypeVar("R", bound=BaseModel)


class Registry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- reading

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def _read_top(self) -> Head | Index | None:
        """`index.json`: a format-3 head, a whole format 1 or 2 index, or None (no registry
        yet)."""
        path = self.index_path
        raw = _read_bytes(path)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is not a valid registry index: {exc}") from exc
        found = doc.get("format_version") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT or \
                found not in (*LEGACY_VERSIONS, INDEX_VERSION):
            raise RegistryError(f"{path} has registry format "
                                f"{doc.get('format') if isinstance(doc, dict) else None!r} "
                                f"version {found}; this stageguard reads versions 1 to "
                                f"{INDEX_VERSION} (upgrade stageguard to read it)")
        try:
            if found == INDEX_VERSION:
                return Head.model_validate(doc)
            index = Index.model_validate(doc)
        except ValidationError as exc:
            raise RegistryError(f"{path} is not a valid registry index: "
                                f"{exc.errors()[0]['msg']}") from exc
        for project, stages in index.projects.items():
            for name, entry in stages.items():
                problem = _entry_problem(project, name, entry)
                if problem:
                    raise RegistryError(f"{path} is not a valid registry index: {problem}")
        return index

    def format_version(self) -> int | None:
        """The registry format on disk (None: no registry yet)."""
        top = self._read_top()
        return None if top is None else top.format_version

    def read_index(self) -> Index:
        top = self._read_top()
        if top is None:
            return Index()
        if isinstance(top, Index):
            return top
        projects: dict[str, dict[str, StageEntry]] = {}
        commit = self._journal(top.revision)  # read once, not once per stage
        for project, stage in self._stage_keys(commit):
            entry = self._entry(top, commit, project, stage)
            if entry is not None:
                projects.setdefault(project, {})[stage] = entry
        return Index(revision=top.revision, projects=projects)

    def _stage_keys(self, commit: Commit | None) -> list[Key]:
        """Every stage with a `stage.json`, and those the current commit (`commit`) adds."""
        keys: set[Key] = set()
        try:
            for project_dir in self.root.iterdir():
                if project_dir.name.startswith(".") or not project_dir.is_dir():
                    continue
                for stage_dir in project_dir.iterdir():
                    if (stage_dir / STAGE_FILE).is_file():
                        keys.add((project_dir.name, stage_dir.name))
        except OSError as exc:
            raise RegistryError(f"cannot list {self.root}: {exc.strerror or exc}") from exc
        if commit is not None:
            keys.update((c.project, c.stage) for c in commit.changed)
        return sorted(keys)

    def _stage_path(self, project: str, stage: str) -> Path:
        return self.artifact_path(project, stage, 1).with_name(STAGE_FILE)

    def _journal_path(self, revision: int) -> Path:
        return self.root / JOURNAL / f"{revision}.json"

    def _journal(self, revision: int) -> Commit | None:
        """The journal record of `revision` (None when it is not kept)."""
        if revision <= 0:
            return None
        path = self._journal_path(revision)
        commit = _read_record(path, Commit, "journal record")
        if commit is None:
            return None
        if commit.revision != revision:
            raise RegistryError(f"{path} records revision {commit.revision}, not {revision}")
        return commit

    def _stage_file(self, project: str, stage: str) -> StageFile | None:
        path = self._stage_path(project, stage)
        found = _read_record(path, StageFile, "stage entry")
        if found is None:
            return None
        problem = _entry_problem(project, stage, found.entry)
        if problem:
            raise RegistryError(f"{path} is not a valid stage entry: {problem}")
        return found

    def _entry(self, head: Head, commit: Commit | None, project: str,
               stage: str) -> StageEntry | None:
        """A stage's entry at `head`: its `stage.json`, unless the head's own commit
        (`commit`, its journal record) changed it and has not been copied there yet."""
        found = self._stage_file(project, stage)
        if found is None or found.revision < head.revision:
            for change in commit.changed if commit is not None else ():
                if (change.project, change.stage) == (project, stage):
                    problem = _entry_problem(project, stage, change.entry)
                    if problem:
                        raise RegistryError(f"{self._journal_path(head.revision)}: {problem}")
                    return change.entry
        return found.entry if found is not None else None

    def signature(self) -> object:
        """A token that changes whenever the store may have: here the index file's stat
        (one system call; the index is replaced by rename on every commit)."""
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def describe(self, entry: VersionEntry) -> str:
        """Where a version lives, for messages."""
        return str(self.root / entry.file)

    def revision(self) -> int:
        """The store's revision: it grows by one with every commit that changed something."""
        top = self._read_top()
        return 0 if top is None else top.revision

    def events_since(self, revision: int) -> list[Event] | None:
        """The changes after `revision`, oldest first; None when they are no longer all
        kept (the reader should reload everything instead)."""
        top = self._read_top()
        if top is None or revision >= top.revision:
            return []
        if isinstance(top, Index):
            newer = [e for e in top.events if e.revision > revision]
            if not newer or newer[0].revision != revision + 1:
                return None
            return newer
        events: list[Event] = []
        for number in range(revision + 1, top.revision + 1):
            commit = self._journal(number)
            if commit is None:
                return None
            events.extend(commit.events)
        return events

    def project_of(self, stage: str, index: Index | None = None) -> str:
        """The one project holding a stage of this name (for commands given no project)."""
        index = index or self.read_index()
        held = StageKeys((p, name) for p, stages in index.projects.items() for name in stages)
        try:
            return find_stage(held, None, stage, None)[0]
        except StageNotFound:
            raise RegistryError(f"stage `{stage}` is in no project of registry {self.root}"
                                ) from None
        except InvalidRequest:
            holders = ", ".join(key[0] for key in held.names[stage])
            raise RegistryError(f"stage `{stage}` is in projects {holders} of registry "
                                f"{self.root}; write PROJECT/STAGE") from None

    def artifact_path(self, project: str, stage: str, version: int) -> Path:
        for what, part in (("project", project), ("stage", stage)):
            problem = name_problem(what, part)  # a path part: never `..` or `a/b`
            if problem:
                raise RegistryError(problem)
        return self.root / project / stage / f"v{version}.json"

    def load(self, project: str, stage: str, version: int | None = None) -> Artifact:
        """The artifact of a stage at `version` (latest when None)."""
        entry = self.stage_entry(project, stage)
        chosen = choose_version(entry, project, stage, version, str(self.root))
        return self.load_entry(project, stage, chosen)

    def load_entry(self, project: str, stage: str, entry: VersionEntry) -> Artifact:
        """The artifact an index entry names, refused unless it is exactly what the index
        recorded: a file swapped for another version's (digest and version edited to
        match each other) must not decide in its place."""
        path = self.root / entry.file
        return check_entry(load_artifact(path), project, stage, entry, str(path))

    def read_bytes(self, entry: VersionEntry) -> bytes:
        """A version's file as stored (RegistryError when it cannot be read)."""
        return _read(self.root / entry.file)

    def verify(self) -> list[str]:
        """Every problem of the registry: the index (read_index raises for it) and each
        version file against its entry. Empty when every version is what the index says."""
        return verify_versions(self.read_index(), self.load_entry)

    def stage_entry(self, project: str, stage: str) -> StageEntry | None:
        """One stage's entry: a few small files read, whatever the registry's size."""
        top = self._read_top()
        if top is None:
            return None
        if isinstance(top, Index):
            return top.projects.get(project, {}).get(stage)
        for what, part in (("project", project), ("stage", stage)):
            if name_problem(what, part):
                return None  # no such stage can exist; never a path outside the registry
        return self._entry(top, self._journal(top.revision), project, stage)

    # -- writing

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes: two builds into one registry queue up."""
        self._ensure_root()
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryError(f"cannot lock {self.root}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _ensure_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"{self.root} is not a directory")
        if self.root.is_dir() and not self.index_path.exists():
            stray = [p.name for p in self.root.iterdir() if p.name not in (LOCK, JOURNAL)]
            if stray:
                raise RegistryError(
                    f"{self.root} is not a stageguard registry (no {INDEX}, but it holds "
                    f"{', '.join(sorted(stray)[:3])}); choose an empty or new directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create {self.root}: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def _writing(self, expected_revision: int | None) -> Iterator[Head]:
        """The lock, with the registry in format 3, the previous commit fully copied into
        its stage files, and the revision the writer expects still current."""
        with self.lock():
            top = self._read_top()
            if isinstance(top, Index):
                top = self._migrate(top)
            head = top or Head()
            if expected_revision is not None and head.revision != expected_revision:
                raise RevisionConflict(
                    f"{self.root} is at revision {head.revision}, not {expected_revision}: "
                    "it changed since it was read; nothing was written")
            self._copy_out(head)
            yield head

    def migrate(self) -> int:
        """Bring a format 1 or 2 registry to format 3 (nothing else changes: every version,
        the revision and the kept events stay); the format after."""
        with self._writing(None):
            return INDEX_VERSION

    def _migrate(self, index: Index) -> Head:
        # Stage files and journal records first; the new index.json last, the commit point.
        # Until it lands an older stageguard still reads the registry as it was.
        for project, stages in index.projects.items():
            for name, entry in stages.items():
                atomic_write(self._stage_path(project, name),
                             _json_bytes(StageFile(revision=index.revision, entry=entry)))
        by_revision: dict[int, list[Event]] = {}
        for event in index.events:
            by_revision.setdefault(event.revision, []).append(event)
        for number, events in by_revision.items():
            atomic_write(self._journal_path(number),
                         _json_bytes(Commit(revision=number, events=events)))
        head = Head(revision=index.revision)
        atomic_write(self.index_path, _json_bytes(head))
        log.warning("registry %s migrated from format %d to format %d", self.root,
                    index.format_version, INDEX_VERSION)
        return head

    def _copy_out(self, head: Head) -> None:
        """Finish copying the head commit's entries into their stage files (a writer
        interrupted after its commit landed leaves that to the next)."""
        commit = self._journal(head.revision)
        for change in commit.changed if commit is not None else ():
            found = self._stage_file(change.project, change.stage)
            if found is None or found.revision < head.revision:
                atomic_write(self._stage_path(change.project, change.stage),
                             _json_bytes(StageFile(revision=head.revision,
                                                   entry=change.entry)))

    def _commit(self, head: Head, changes: list[Change],
                changed: dict[Key, StageEntry]) -> None:
        """One revision: its journal record, then the index naming it (the commit point),
        then the stage files; and no more than EVENTS_KEPT records."""
        revision = head.revision + 1
        at = _now()
        commit = Commit(revision=revision, events=[Event.model_validate({
            "revision": revision, "kind": kind, "project": project, "stage": stage,
            "version": version, "at": at, "note": note})
            for kind, project, stage, version, note in changes],
            changed=[Changed(project=p, stage=s, entry=e) for (p, s), e in changed.items()])
        atomic_write(self._journal_path(revision), _json_bytes(commit))
        atomic_write(self.index_path, _json_bytes(Head(revision=revision)))
        self._copy_out(Head(revision=revision))
        with contextlib.suppress(FileNotFoundError):
            self._journal_path(revision - EVENTS_KEPT).unlink()

    def set_paused(self, project: str, stage: str, paused: bool, *,
                   expected_revision: int | None = None) -> StageEntry:
        """Pause or resume a stage (a registry fact, seen by every runtime that watches).
        With `expected_revision`, only if the store is still at that revision."""
        with self._writing(expected_revision) as head:
            entry = self.stage_entry(project, stage)
            if entry is None:
                raise VersionNotFound(f"no stage {stage!r} in project {project!r} at "
                                      f"{self.root}")
            if entry.paused != paused:
                entry.paused = paused
                self._commit(head, [("paused" if paused else "resumed", project, stage, None,
                                     None)], {(project, stage): entry})
            return entry

    def set_serving(self, project: str, stage: str, change: ServingChange, *,
                    expected_revision: int | None = None) -> StageEntry:
        """Set or clear a candidate, promote it, or roll back to a version: one event,
        never a rewrite of what was published."""
        with self._writing(expected_revision) as head:
            entry = self.stage_entry(project, stage)
            if entry is None:
                raise VersionNotFound(f"no stage {stage!r} in project {project!r} at "
                                      f"{self.root}")
            event = apply_serving(entry, change, project, stage)
            if event is not None:
                self._commit(head, [event], {(project, stage): entry})
            return entry

    def publish(self, artifacts: Sequence[ArtifactDocument | Artifact], *,
                reuse_any_version: bool = False, create_only: bool = False,
                paused: bool | None = None, activate: bool = True,
                expected_revision: int | None = None) -> list[Published]:
        """Record each artifact as the next version of its stage unless its digest equals the
        latest version's. All or nothing: on failure the registry is left as it was.
        `activate=False`: the new version is kept but the stage goes on serving the version
        it served (a candidate to shadow or roll out).

        `reuse_any_version`: an artifact identical to *any* earlier version reuses it (local
        stages: identical invocation rulesets keep their version). `create_only`: refuse
        stages that already exist (the management API's create). `paused`: the state of a
        newly created stage. `expected_revision`: publish only if the store is still at the
        revision the writer read (RevisionConflict otherwise, nothing written)."""
        with self._writing(expected_revision) as head:
            results: list[Published] = []
            written: list[Path] = []
            changed: dict[Key, StageEntry] = {}
            try:
                for item in artifacts:
                    doc = (item if isinstance(item, ArtifactDocument)
                           else ArtifactDocument.from_artifact(item))
                    key = (doc.project, doc.stage)
                    entry = changed.get(key) or self.stage_entry(*key)
                    if entry is not None and create_only:
                        raise StageExists(f"stage {doc.stage!r} already exists in project "
                                          f"{doc.project!r}")
                    if entry is None:
                        entry = StageEntry(type=doc.stage_type, paused=bool(paused))
                        if create_only:
                            changed[key] = entry
                    latest = entry.latest
                    same = [v for v in (entry.versions if reuse_any_version else [latest])
                            if v is not None and v.digest == doc.digest]
                    if same:
                        results.append(Published(doc.project, doc.stage, same[0].version, False))
                        continue
                    number = latest.version + 1 if latest else 1
                    path = self.artifact_path(doc.project, doc.stage, number)
                    atomic_write(path, doc.to_bytes(number))
                    written.append(path)
                    entry.type = doc.stage_type
                    entry.active = keep_serving(entry, activate)
                    entry.versions.append(VersionEntry(
                        version=number, digest=doc.digest,
                        file=path.relative_to(self.root).as_posix(), created_at=_now()))
                    changed[key] = entry
                    results.append(Published(doc.project, doc.stage, number, True))
                if changed:
                    self._commit(head, [("published", r.project, r.stage, r.version,
                                         None if activate else "not activated")
                                        for r in results if r.created], changed)
            except BaseException as exc:
                # Roll back only what this publish wrote, and only when its index did not
                # land: an interrupt just after the rename (during the directory fsync)
                # has already committed, and the new index points at these files.
                if not self._committed(head):
                    for path in [*written, self._journal_path(head.revision + 1)]:
                        with contextlib.suppress(OSError):
                            path.unlink()
                if isinstance(exc, OSError):
                    raise RegistryError(f"cannot write to {self.root}: "
                                        f"{exc.strerror or exc}; nothing was published") from exc
                raise
            return results

    def _committed(self, head: Head) -> bool:
        """Whether the commit after `head` landed."""
        try:
            return self.revision() > head.revision
        except Exception:
            return False


# ---- what every store does the same way ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServingChange:
    """What `set_serving` does: `kind` "shadow" or "rollout" with `candidate`; "cleared";
    "promoted" (the candidate serves); "rolled_back" to `version`."""

    kind: Literal["shadow", "rollout", "cleared", "promoted", "rolled_back"]
    candidate: Candidate | None = None
    version: int | None = None


def keep_serving(entry: StageEntry, activate: bool) -> int | None:
    """`active` after a new version is appended to `entry`: the new one serves (None), or,
    not activated, the version that served before."""
    if activate:
        return None
    serving = entry.serving
    return serving.version if serving is not None else None


def apply_serving(entry: StageEntry, change: ServingChange, project: str,
                  stage: str) -> Change | None:
    """Change `entry` as `change` says; the event to record (None: nothing changed).
    RegistryError for a change that names no version of the stage or makes no sense."""
    where = f"{project}/{stage}"
    if change.kind in ("shadow", "rollout"):
        cand = change.candidate
        if cand is None or cand.mode != change.kind:
            raise ServingRefused(f"a {change.kind} needs a {change.kind} candidate")
        if entry.version_entry(cand.version) is None:
            raise VersionNotFound(f"{where} has no version {cand.version}")
        if entry.type is not StageType.CENTRAL:
            raise ServingRefused(f"{where} is a local stage: only central stages have "
                                "candidates")
        serving = entry.serving
        if serving is not None and serving.version == cand.version:
            raise ServingRefused(f"{where} already serves v{cand.version}")
        if cand.mode == "rollout" and not cand.key:
            raise ServingRefused("a rollout splits traffic by a metadata field: name its key")
        if entry.candidate == cand:
            return None
        entry.candidate = cand
        return (change.kind, project, stage, cand.version, cand.describe())
    if change.kind == "cleared":
        if entry.candidate is None:
            return None
        gone, entry.candidate = entry.candidate, None
        return ("cleared", project, stage, gone.version, gone.describe())
    if change.kind == "promoted":
        if entry.candidate is None:
            raise ServingRefused(f"{where} has no candidate to promote")
        promoted, entry.candidate = entry.candidate, None
        entry.serve(promoted.version)
        return ("promoted", project, stage, promoted.version, promoted.describe())
    if change.version is None or entry.version_entry(change.version) is None:
        raise VersionNotFound(f"{where} has no version {change.version}")
    serving = entry.serving
    if serving is not None and serving.version == change.version and entry.candidate is None:
        return None
    entry.candidate = None
    entry.serve(change.version)
    return ("rolled_back", project, stage, change.version, None)


def choose_version(entry: StageEntry | None, project: str, stage: str, version: int | None,
                   where: str) -> VersionEntry:
    """The entry of `version` (the latest when None); VersionNotFound when there is none."""
    if entry is None or not entry.versions:
        raise VersionNotFound(f"no stage {stage!r} in project {project!r} at {where}")
    chosen = entry.latest if version is None else next(
        (v for v in entry.versions if v.version == version), None)
    if chosen is None:
        raise VersionNotFound(f"stage {stage!r} has no version {version}; it has "
                              f"{', '.join(str(v.version) for v in entry.versions)}")
    return chosen


def check_entry(artifact: Artifact, project: str, stage: str, entry: VersionEntry,
                where: str) -> Artifact:
    """`artifact`, refused (RegistryError) unless it is exactly the version its entry
    records: content swapped for another version's, with digest and version edited to
    match each other, must not decide in its place."""
    found = (artifact.project, artifact.stage.name, artifact.version, artifact.digest)
    if found != (project, stage, entry.version, entry.digest):
        raise RegistryError(
            f"{where} does not match the index entry (index: {project}/{stage} "
            f"v{entry.version} {entry.digest}; artifact: {found[0]}/{found[1]} v{found[2]} "
            f"{found[3]})")
    return artifact


def verify_versions(index: Index,
                    load_entry: Callable[[str, str, VersionEntry], Artifact]) -> list[str]:
    """Every version of `index` that `load_entry` refuses, as the messages it gave."""
    problems = []
    for project, stages in sorted(index.projects.items()):
        for name, entry in sorted(stages.items()):
            for version in entry.versions:
                try:
                    load_entry(project, name, version)
                except RegistryError as exc:
                    problems.append(str(exc))
    return problems


def _read_bytes(path: Path) -> bytes | None:
    """A layout file's bytes; None when it does not exist; RegistryError when it cannot be
    read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_record(path: Path, model: type[R], what: str) -> R | None:
    """A small JSON record of the layout (None when the file does not exist)."""
    raw = _read_bytes(path)
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RegistryError(f"{path} is not a valid {what}: {exc.errors()[0]['msg']}") from exc


def _entry_problem(project: str, name: str, entry: StageEntry) -> str | None:
    """What makes a stage entry unsafe to act on: a name that is not one path part, versions
    out of order or repeated (the next publish would overwrite a listed file), or a file
    that is not the version's own."""
    where = f"{project}/{name}"
    for part, what in ((project, "project"), (name, "stage")):
        problem = name_problem(what, part)
        if problem:
            return f"{where}: {problem}"
    numbers = [v.version for v in entry.versions]
    if numbers != sorted(set(numbers)):
        return (f"{where} lists versions {numbers}: they must be unique and in "
                "increasing order")
    for v in entry.versions:
        expected = f"{project}/{name}/v{v.version}.json"
        if v.file != expected:
            return f"{where} v{v.version} names file {v.file!r}, not {expected!r}"
    for what, number in (("active", entry.active),
                         ("candidate", entry.candidate and entry.candidate.version)):
        if number is not None and number not in numbers:
            return f"{where}: the {what} version {number} is not one of its versions"
    return None


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read one artifact file, refusing anything truncated, tampered with or of a future
    format. RegistryError names the file and the reason."""
    return parse_artifact(_read(path), str(path))


def load_artifact_for_serving(path: str | os.PathLike[str]) -> tuple[Artifact, object]:
    """As `load_artifact`, but the source map comes back unvalidated beside an artifact
    without one: deciding never needs it, and for large stages it is a third of the objects
    validation would build. `SourceMap.model_validate` it when an explanation needs it."""
    return parse_artifact_for_serving(_read(path), str(path))


def parse_artifact_for_serving(raw: bytes, name: str) -> tuple[Artifact, object]:
    """`load_artifact_for_serving` of bytes already read (from any store)."""
    holder: list[object] = []
    return parse_artifact(raw, name, source_map_out=holder), holder[0] if holder else None


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc


_HEAD_KEYS = ("compiler", "digest")  # sorted before the content's first key, "format"
_TAIL_KEYS = ("source_map", "stage", "version")  # "source_map" sorts after "rulesets"


def _raw_content_digest(raw: bytes, doc: dict[str, object]) -> str | None:
    """The content digest read straight off a canonically written file, without
    re-serialising the (large) rulesets: the file must be exactly `{head` + content +
    `tail}` where head and tail are the canonical text of their parsed values. Any other
    layout returns None and the caller re-serialises the parsed content instead."""
    if set(doc) != {*_HEAD_KEYS, *_TAIL_KEYS, "format", "format_version", "metrics",
                    "project", "rulesets"}:
        return None
    head = ("{" + ",".join(f'"{k}":{dumps(doc[k])}' for k in _HEAD_KEYS) + ",").encode()
    stage = dumps(doc["stage"])
    tail = (f',"source_map":{dumps(doc["source_map"])},"stage":{stage},'
            f'"version":{dumps(doc["version"])}}}\n').encode()
    if not (raw.startswith(head) and raw.endswith(tail) and len(raw) > len(head) + len(tail)):
        return None
    middle = raw[len(head):len(raw) - len(tail)]
    content = b"{" + middle + b',"stage":' + stage.encode() + b"}"
    return "sha256:" + hashlib.sha256(content).hexdigest()


def parse_artifact(raw: bytes, name: str = "<artifact>", *,
                   source_map_out: list[object] | None = None) -> Artifact:
    """Check and validate an artifact. With `source_map_out`, the source map is not
    validated but appended there (raw JSON data) and left out of the returned model."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{name} is not JSON (truncated or damaged?): {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistryError(f"{name} is not a stageguard artifact")
    found = doc.get("format_version")
    if found != FORMAT_VERSION:
        raise RegistryError(f"{name} has artifact format version {found!r}; this stageguard "
                            f"reads version {FORMAT_VERSION} (upgrade stageguard to load it)")
    digest = _raw_content_digest(raw, doc)
    if digest != doc.get("digest"):
        digest = content_digest(doc)  # not written canonically: judge the parsed content
    if source_map_out is not None:
        source_map_out.append(doc.pop("source_map", None))
    try:
        artifact = Artifact.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        raise RegistryError(f"{name} is not a valid stageguard artifact ({where}: "
                            f"{first['msg']})") from exc
    if digest != artifact.digest:
        raise RegistryError(f"{name} does not match its digest (stored {artifact.digest}, "
                            f"content {digest}): it was modified after it was built")
    return artifact
