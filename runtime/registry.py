"""The embedded registry: versioned stage artifacts in a directory.

Layout::

    DIR/index.json                         which versions exist; the single commit point
    DIR/<project>/<stage>/v<N>.json        one artifact per version, never rewritten
    DIR/.lock                              serialises writers (flock)

A publish writes the new version files first, then replaces `index.json` atomically; until
that rename nothing refers to the new files, so a failed or interrupted publish leaves the
registry as it was (at worst an unreferenced file that the next publish overwrites).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

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

INDEX = "index.json"
LOCK = ".lock"
REGISTRY_FORMAT = "stageguard.registry"
# 2 adds the revision and the latest events; version 1 indexes are read as revision 0.
INDEX_VERSION = 2
EVENTS_KEPT = 1_000


class RegistryError(Exception):
    """The registry cannot be read or written; the message says which file and why."""


class StageExists(RegistryError):
    pass


class RevisionConflict(RegistryError):
    """A conditional write found the store at another revision than the writer read: someone
    else changed it in between, and nothing was written."""


class VersionNotFound(RegistryError):
    """No such stage, or no such version of it (as opposed to a file that is damaged)."""


class VersionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1)]
    digest: str
    file: str
    created_at: str


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: StageType
    paused: bool = False
    versions: list[VersionEntry] = Field(default_factory=list)

    @property
    def latest(self) -> VersionEntry | None:
        return self.versions[-1] if self.versions else None


class Event(BaseModel):
    """One change, as the store's revision counter numbers them: a version published, a
    stage paused or resumed."""

    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1)]
    kind: Literal["published", "paused", "resumed"]
    project: str
    stage: str
    version: int | None = None
    at: str


class Index(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = REGISTRY_FORMAT
    format_version: int = INDEX_VERSION
    # Counts the commits: every publish or pause that changed something is one revision.
    revision: Annotated[int, Field(ge=0)] = 0
    # The changes of the latest EVENTS_KEPT revisions, oldest first.
    events: list[Event] = Field(default_factory=list)
    projects: dict[str, dict[str, StageEntry]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Published:
    project: str
    stage: str
    version: int
    created: bool  # False: content identical to the latest version, nothing written


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Registry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- reading

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def read_index(self) -> Index:
        path = self.index_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return Index()
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            index = Index.model_validate_json(raw)
        except ValidationError as exc:
            raise RegistryError(f"{path} is not a valid registry index: "
                                f"{exc.errors()[0]['msg']}") from exc
        if index.format != REGISTRY_FORMAT or index.format_version not in (1, INDEX_VERSION):
            raise RegistryError(f"{path} has registry format {index.format!r} version "
                                f"{index.format_version}; this stageguard reads versions 1 "
                                f"and {INDEX_VERSION} (upgrade stageguard to read it)")
        problem = _index_problem(index)
        if problem:
            raise RegistryError(f"{path} is not a valid registry index: {problem}")
        return index

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
        return self.read_index().revision

    def events_since(self, revision: int) -> list[Event] | None:
        """The changes after `revision`, oldest first; None when they are no longer all
        kept (the reader should reload everything instead)."""
        index = self.read_index()
        if revision >= index.revision:
            return []
        newer = [e for e in index.events if e.revision > revision]
        if not newer or newer[0].revision != revision + 1:
            return None
        return newer

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
        entry = self.read_index().projects.get(project, {}).get(stage)
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
            stray = [p.name for p in self.root.iterdir() if p.name != LOCK]
            if stray:
                raise RegistryError(
                    f"{self.root} is not a stageguard registry (no {INDEX}, but it holds "
                    f"{', '.join(sorted(stray)[:3])}); choose an empty or new directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create {self.root}: {exc.strerror or exc}") from exc

    def stage_entry(self, project: str, stage: str) -> StageEntry | None:
        return self.read_index().projects.get(project, {}).get(stage)

    def set_paused(self, project: str, stage: str, paused: bool, *,
                   expected_revision: int | None = None) -> StageEntry:
        """Pause or resume a stage (a registry fact, seen by every runtime that watches).
        With `expected_revision`, only if the store is still at that revision."""
        with self.lock():
            index = self.read_index()
            _expect(index, expected_revision, self.root)
            entry = index.projects.get(project, {}).get(stage)
            if entry is None:
                raise VersionNotFound(f"no stage {stage!r} in project {project!r} at "
                                      f"{self.root}")
            if entry.paused != paused:
                entry.paused = paused
                _record(index, [("paused" if paused else "resumed", project, stage, None)])
                self.write_index(index)
            return entry

    def publish(self, artifacts: Sequence[ArtifactDocument | Artifact], *,
                reuse_any_version: bool = False, create_only: bool = False,
                paused: bool | None = None,
                expected_revision: int | None = None) -> list[Published]:
        """Record each artifact as the next version of its stage unless its digest equals the
        latest version's. All or nothing: on failure the registry is left as it was.

        `reuse_any_version`: an artifact identical to *any* earlier version reuses it (local
        stages: identical invocation rulesets keep their version). `create_only`: refuse
        stages that already exist (the management API's create). `paused`: the state of a
        newly created stage. `expected_revision`: publish only if the store is still at the
        revision the writer read (RevisionConflict otherwise, nothing written)."""
        with self.lock():
            index = self.read_index()
            _expect(index, expected_revision, self.root)
            results: list[Published] = []
            written: list[Path] = []
            try:
                for item in artifacts:
                    doc = (item if isinstance(item, ArtifactDocument)
                           else ArtifactDocument.from_artifact(item))
                    stages = index.projects.setdefault(doc.project, {})
                    entry = stages.get(doc.stage)
                    if entry is not None and create_only:
                        raise StageExists(f"stage {doc.stage!r} already exists in project "
                                          f"{doc.project!r}")
                    if entry is None:
                        entry = stages[doc.stage] = StageEntry(type=doc.stage_type,
                                                               paused=bool(paused))
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
                    entry.versions.append(VersionEntry(
                        version=number, digest=doc.digest,
                        file=path.relative_to(self.root).as_posix(), created_at=_now()))
                    results.append(Published(doc.project, doc.stage, number, True))
                if written or (create_only and results):
                    _record(index, [("published", r.project, r.stage, r.version)
                                    for r in results if r.created])
                    self.write_index(index)
            except BaseException as exc:
                # Roll back only what this publish wrote, and only when its index did not
                # land: an interrupt just after the rename (during the directory fsync)
                # has already committed, and the new index points at these files.
                if not self._committed(written):
                    for path in written:
                        with contextlib.suppress(OSError):
                            path.unlink()
                if isinstance(exc, OSError):
                    raise RegistryError(f"cannot write to {self.root}: "
                                        f"{exc.strerror or exc}; nothing was published") from exc
                raise
            return results

    def _committed(self, written: list[Path]) -> bool:
        try:
            index = self.read_index()
        except Exception:
            return False
        listed = {self.root / v.file for stages in index.projects.values()
                  for entry in stages.values() for v in entry.versions}
        return bool(written) and all(path in listed for path in written)

    def write_index(self, index: Index) -> None:
        index.format_version = INDEX_VERSION
        data = json.dumps(index.model_dump(mode="json"), indent=2, sort_keys=True,
                          ensure_ascii=False) + "\n"
        atomic_write(self.index_path, data.encode("utf-8"))


# ---- what every store does the same way ------------------------------------------------------


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


def _expect(index: Index, revision: int | None, root: Path) -> None:
    if revision is not None and index.revision != revision:
        raise RevisionConflict(f"{root} is at revision {index.revision}, not {revision}: it "
                               "changed since it was read; nothing was written")


def _record(index: Index, changes: list[tuple[str, str, str, int | None]]) -> None:
    """One commit: the next revision, its events, and no more than EVENTS_KEPT of them."""
    index.revision += 1
    at = _now()
    index.events.extend(Event.model_validate({
        "revision": index.revision, "kind": kind, "project": project, "stage": stage,
        "version": version, "at": at}) for kind, project, stage, version in changes)
    oldest = index.revision - EVENTS_KEPT  # whole revisions go, never half of one
    index.events[:] = [e for e in index.events if e.revision > oldest]


def _index_problem(index: Index) -> str | None:
    """What makes an index unsafe to act on: versions out of order or repeated (the next
    publish would overwrite a listed file), or a file that is not the version's own."""
    for project, stages in index.projects.items():
        for name, entry in stages.items():
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
