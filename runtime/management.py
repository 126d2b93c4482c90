"""Stage management with Galileo Protect's names (create, get, update, pause, resume), and
what the service reads of a registry: a mixin of `Runtime`, whose state it uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.documents import document, new_document, stage_metrics
from stageguard.runtime.errors import InvalidRequest, StageConflict, StageNotFound
from stageguard.runtime.model import (
    FailMode,
    MetricSpec,
    RulesetSpec,
    StageSpec,
    StageType,
    name_problem,
)
from stageguard.runtime.registry import (
    EVENTS_KEPT,
    Candidate,
    Event,
    Index,
    RegistryError,
    ServingChange,
    ServingRefused,
    StageEntry,
    StageExists,
    VersionNotFound,
)
from stageguard.runtime.served import LoadedStage, Snapshot
from stageguard.runtime.store import RegistryStore

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class StageInfo:
    """What `get_stage` tells: Galileo's stage fields plus stageguard's versions."""

    id: str
    name: str
    project: str
    type: StageType
    description: str | None
    paused: bool
    version: int
    versions: tuple[int, ...]
    fail_mode: FailMode
    candidate: Candidate | None = None  # a shadow or rollout beside `version`


# What each operator action on what serves needs besides the stage: the CLI's flags and the
# HTTP body's fields (docs/operations.md).
SERVING_NEEDS: dict[str, tuple[str, ...]] = {
    "shadow": ("version",), "rollout": ("version", "percent", "key"), "promote": (),
    "rollback": ("version",), "clear": ()}


def serving_change(action: str, version: int | None = None, percent: float | None = None,
                   key: str | None = None) -> ServingChange:
    """The registry change an operator's action names; InvalidRequest when it lacks what
    SERVING_NEEDS says or its terms are out of range."""
    given = {"version": version, "percent": percent, "key": key}
    missing = [n for n in SERVING_NEEDS[action] if given[n] is None]
    if missing:
        raise InvalidRequest(f"{action} needs {' and '.join(missing)}")
    try:
        if action in ("shadow", "rollout"):
            return ServingChange(action, Candidate(  # type: ignore[arg-type]
                version=version, mode=action, percent=percent or 0.0, key=key))
    except ValueError as exc:
        raise InvalidRequest(f"{action}: {exc}") from None
    if action == "rollback":
        return ServingChange("rolled_back", version=version)
    return ServingChange("promoted" if action == "promote" else "cleared")


class StageManagement:
    """Needs from the runtime: its store, its snapshot, reloading, finding stages and
    checking rulesets (declared here, defined by `Runtime`)."""

    registry: RegistryStore | None
    _table: Snapshot
    _index: Index | None

    def refresh(self, force: bool = False) -> bool:
        raise NotImplementedError

    def _key(self, project: str | None, stage: str | None, stage_id_: str | None,
             table: Snapshot | None = None) -> Key:
        raise NotImplementedError

    def _stage(self, key: Key, version: int | None, table: Snapshot | None = None,
               ) -> LoadedStage:
        raise NotImplementedError

    def ruleset_specs(self, rulesets: Sequence[Any],
                      catalog: dict[str, MetricSpec]) -> tuple[RulesetSpec, ...]:
        raise NotImplementedError

    def registry_entry(self, key: tuple[str, str]) -> StageEntry:
        """A stage's registry entry (its versions); StageNotFound for a stage served from a
        file."""
        entry = self.require_registry().stage_entry(*key)
        if entry is None:
            raise StageNotFound(f"stage {key[1]!r} is not in the registry")
        return entry

    def artifact_bytes(self, key: tuple[str, str], version: int) -> tuple[bytes, str]:
        """A version's artifact file, byte for byte, with its digest (as the index has it)."""
        found = next((v for v in self.registry_entry(key).versions if v.version == version),
                     None)
        if found is None:
            raise StageNotFound(f"stage {key[1]!r} has no version {version}")
        registry = self.require_registry()
        return registry.read_bytes(found), found.digest

    def publish(self, doc: ArtifactDocument) -> tuple[bool, StageInfo]:
        """Record `doc` as its stage's next version (nothing when it equals the latest) and
        serve it at once: (whether a version was made, how the stage now stands)."""
        (published,) = self.require_registry().publish([doc])
        return published.created, self._changed((doc.project, doc.stage))

    # ---- management API (names as in Galileo Protect) --------------------------------------

    def require_registry(self) -> RegistryStore:
        if self.registry is None:
            raise InvalidRequest("this runtime serves artifact files; stage management needs "
                                 "a registry")
        return self.registry

    def create_stage(self, name: str, *, project: str, type: StageType | str | None = None,
                     description: str | None = None, paused: bool = False,
                     prioritized_rulesets: Sequence[Any] | None = None,
                     fail_mode: FailMode | str = FailMode.OPEN,
                     metrics: Sequence[MetricSpec] = ()) -> StageInfo:
        """Create stage `name` in `project` as version 1 (StageConflict when it exists). The
        type defaults to local, as in Galileo, or central when rulesets are given (ours:
        Galileo refuses a local stage with rulesets, so nothing that works there changes)."""
        registry = self.require_registry()
        for what, value in (("project", project), ("stage name", name)):
            problem = name_problem(what, value)
            if problem:
                raise InvalidRequest(problem)
        if type is None:
            type = StageType.CENTRAL if prioritized_rulesets else StageType.LOCAL
        try:
            kind, mode = StageType(type), FailMode(fail_mode)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        catalog = {**BUILTIN_METRICS, **{m.name: m for m in metrics}}
        specs = self.ruleset_specs(prioritized_rulesets or [], catalog)
        if kind is StageType.LOCAL and specs:
            raise InvalidRequest("a local stage is created without rulesets; each invocation "
                                 "brings its own")
        spec = StageSpec(name=name, type=kind, description=description, fail_mode=mode)
        doc = new_document(project, spec, specs, stage_metrics(specs, kind, metrics))
        try:
            registry.publish([doc], create_only=True, paused=paused)
        except StageExists as exc:
            raise StageConflict(str(exc)) from None
        except RegistryError as exc:
            raise InvalidRequest(str(exc)) from None
        return self._changed((project, name))

    def get_stage(self, *, project: str | None = None, stage_name: str | None = None,
                  stage_id: str | None = None) -> StageInfo | None:
        """The stage by name (and project) or id; None when there is none."""
        self.refresh()
        try:
            key = self._key(project, stage_name, stage_id)
        except (StageNotFound, InvalidRequest):
            return None
        table = self._table
        loaded = table.stages.get(key)
        if loaded is None:
            return None
        art = loaded.artifact
        return StageInfo(id=loaded.metadata.stage_id, name=key[1], project=key[0],
                         type=art.stage.type, description=art.stage.description,
                         paused=loaded.paused, version=art.version,
                         versions=table.versions.get(key, (art.version,)),
                         fail_mode=art.stage.fail_mode,
                         candidate=self._candidate_of(key))

    def _candidate_of(self, key: Key) -> Candidate | None:
        """The stage's candidate as the registry view last read has it (one that failed to
        load still is one: its error is in load_errors); no store read per call."""
        held = self._table.candidates.get(key)
        if held is not None:
            return held[0]
        entry = self._index.projects.get(key[0], {}).get(key[1]) if self._index else None
        return entry.candidate if entry is not None else None

    def _changed(self, key: tuple[str, str]) -> StageInfo:
        """After this runtime changed the registry: reload, and say how the stage stands."""
        self.refresh(force=True)
        info = self.get_stage(project=key[0], stage_name=key[1])
        assert info is not None
        return info

    def update_stage(self, *, project: str | None = None, stage_name: str | None = None,
                     stage_id: str | None = None,
                     prioritized_rulesets: Sequence[Any],
                     expected_revision: int | None = None) -> StageInfo:
        """A central stage's new rulesets become its next version (unless identical). With
        `expected_revision`, only if the registry is still at it (RevisionConflict)."""
        registry = self.require_registry()
        key = self._key(project, stage_name, stage_id)
        current = self._stage(key, None)
        if current.artifact.stage.type is not StageType.CENTRAL:
            raise InvalidRequest(f"stage {key[1]!r} is local: its rulesets arrive with each "
                                 "invocation")
        specs = self.ruleset_specs(prioritized_rulesets, current.catalog)
        registry.publish([document(current.artifact, specs)],
                         expected_revision=expected_revision)
        return self._changed(key)

    def _write(self, key: Key, write: Callable[[], object]) -> StageInfo:
        """A registry change to one stage, then how it stands. A missing stage or version is
        StageNotFound, a change that makes no sense InvalidRequest; RevisionConflict and a
        store that fails pass through."""
        try:
            write()
        except VersionNotFound as exc:
            raise StageNotFound(str(exc)) from None
        except ServingRefused as exc:
            raise InvalidRequest(str(exc)) from None
        return self._changed(key)

    def _set_paused(self, paused: bool, project: str | None, stage_name: str | None,
                    stage_id: str | None, expected_revision: int | None = None) -> StageInfo:
        registry = self.require_registry()
        key = self._key(project, stage_name, stage_id)
        return self._write(key, lambda: registry.set_paused(
            *key, paused, expected_revision=expected_revision))

    def set_paused(self, paused: bool, *, project: str | None = None,
                   stage_name: str | None = None, stage_id: str | None = None,
                   expected_revision: int | None = None) -> StageInfo:
        """Pause or resume; with `expected_revision`, only if the registry is still at it."""
        return self._set_paused(paused, project, stage_name, stage_id, expected_revision)

    def pause_stage(self, *, project: str | None = None, stage_name: str | None = None,
                    stage_id: str | None = None) -> StageInfo:
        return self._set_paused(True, project, stage_name, stage_id)

    def resume_stage(self, *, project: str | None = None, stage_name: str | None = None,
                     stage_id: str | None = None) -> StageInfo:
        return self._set_paused(False, project, stage_name, stage_id)

    # ---- shadow, rollout, promotion, rollback (docs/operations.md) -------------------------

    def set_serving(self, change: ServingChange, *, project: str | None = None,
                    stage_name: str | None = None, stage_id: str | None = None,
                    expected_revision: int | None = None) -> StageInfo:
        """Change what a central stage serves (one registry event, followed by every
        replica); RevisionConflict when `expected_revision` is stale."""
        registry = self.require_registry()
        key = self._key(project, stage_name, stage_id)
        return self._write(key, lambda: registry.set_serving(
            *key, change, expected_revision=expected_revision))

    def shadow_stage(self, version: int, **stage: Any) -> StageInfo:
        """`version` decides every request beside the serving one, unseen by callers."""
        return self.set_serving(serving_change("shadow", version), **stage)

    def rollout_stage(self, version: int, percent: float, key: str,
                      **stage: Any) -> StageInfo:
        """`version` serves `percent` of requests, split by the metadata field `key`."""
        return self.set_serving(serving_change("rollout", version, percent, key), **stage)

    def promote_stage(self, **stage: Any) -> StageInfo:
        """The candidate becomes the version that serves."""
        return self.set_serving(serving_change("promote"), **stage)

    def rollback_stage(self, version: int, **stage: Any) -> StageInfo:
        """`version` serves again (a new event; nothing published is rewritten)."""
        return self.set_serving(serving_change("rollback", version), **stage)

    def clear_candidate(self, **stage: Any) -> StageInfo:
        return self.set_serving(serving_change("clear"), **stage)

    def stage_history(self, *, project: str | None = None, stage_name: str | None = None,
                      stage_id: str | None = None) -> list[Event]:
        """The stage's registry events, oldest first (as far as the store keeps them)."""
        key = self._key(project, stage_name, stage_id)
        registry = self.require_registry()
        events = registry.events_since(0)
        if events is None:  # the oldest are no longer kept: the latest EVENTS_KEPT revisions
            events = registry.events_since(max(0, registry.revision() - EVENTS_KEPT)) or []
        return [e for e in events if (e.project, e.stage) == key]

    def stages(self) -> list[StageInfo]:
        out = []
        for project, name in sorted(self._table.stages):
            info = self.get_stage(project=project, stage_name=name)
            if info is not None:
                out.append(info)
        return out
