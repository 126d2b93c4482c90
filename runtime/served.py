"""What a runtime serves: stages loaded and compiled for deciding, the snapshot that holds
them (replaced, never mutated, so a decision sees exactly one version), and the bounded
caches of pinned versions and local rulesets."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from stageguard.runtime import collector
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.evaluate import (
    CODEGEN_LIMIT,
    Decider,
    Failure,
    Outcomes,
    compile_decider,
    compile_precomputed,
    stage_fail_closed,
)
from stageguard.runtime.identity import StageKeys, stage_id
from stageguard.runtime.model import Artifact, MetricSpec, SourceMap, StageType
from stageguard.runtime.registry import (
    Candidate,
    RegistryError,
    load_artifact_for_serving,
    parse_artifact_for_serving,
)
from stageguard.runtime.response import StageMetadata, StageResults
from stageguard.runtime.scheduling import ScorePlan
from stageguard.runtime.workers import WorkQueue


class Snapshot:
    """An immutable snapshot of what a runtime serves, with its lookups."""

    __slots__ = ("candidates", "found", "keys", "local_digests", "stages", "versions")

    def __init__(self, stages: dict[tuple[str, str], LoadedStage],
                 versions: dict[tuple[str, str], tuple[int, ...]] | None = None,
                 local_digests: dict[tuple[str, str], dict[str, int]] | None = None,
                 candidates: dict[tuple[str, str], tuple[Candidate, LoadedStage]]
                 | None = None) -> None:
        self.stages = stages
        # Lookups by name and by id (identity.find_stage).
        self.keys = StageKeys(stages, {k: s.artifact.stage.id for k, s in stages.items()
                                       if s.artifact.stage.id is not None})
        # Every version the registry lists per stage, as read with the stages themselves.
        self.versions = versions or {}
        # A local stage's recorded versions by content digest: an invocation's rulesets
        # find theirs without reading the registry.
        self.local_digests = local_digests or {}
        # A central stage's shadow or rollout candidate, loaded beside what serves.
        self.candidates = candidates or {}
        # The stage each (project, stage name, stage id) argument triple found here (its
        # latest version): the one thing a snapshot learns after it is made (the same
        # answer every time).
        self.found: dict[tuple[object, object, object], LoadedStage] = {}


class LRU:
    """A small thread-safe LRU map: pinned versions and local rulesets come from callers, so a
    long-running service must not keep every one it has ever seen."""

    __slots__ = ("_items", "_lock", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[object, LoadedStage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> LoadedStage | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: object, item: LoadedStage) -> LoadedStage:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return item

    def __len__(self) -> int:
        return len(self._items)


class LoadedStage:
    """A stage version ready to decide: validated values, a compiled decider, and what the
    decision path needs precomputed (subscriptions per ruleset, metadata)."""

    __slots__ = ("__weakref__", "_plan", "_source_map", "any_subscriptions", "artifact",
                 "catalog", "compiled", "decide",
                 "decide_precomputed", "fail_closed", "key", "local", "metadata", "paused",
                 "results", "rulesets", "subscriptions")

    def __init__(self, artifact: Artifact, paused: bool = False,
                 source_map: object = None, background_codegen: bool = True) -> None:
        self.artifact = artifact
        # Validated on first use (explanations); deciding never needs it.
        self._source_map: object = artifact.source_map if source_map is None else source_map
        self.key = (artifact.project, artifact.stage.name)
        self.local = artifact.stage.type is StageType.LOCAL
        self.paused = paused
        self.rulesets = artifact.rulesets
        self.fail_closed = stage_fail_closed(artifact)
        # Generated code costs ~0.1 ms per ruleset to compile: a large stage serves at once
        # with prebuilt closures, and its generated code is compiled in the background, in
        # chunks, then swapped in (the same outcomes either way).
        self.decide: Decider = compile_decider(artifact.rulesets, self.fail_closed)
        self.decide_precomputed = compile_precomputed(artifact.rulesets)
        self.compiled = threading.Event()
        if len(artifact.rulesets) > CODEGEN_LIMIT and background_codegen:
            _CODEGEN.offer(weakref.ref(self))
        else:
            self.compiled.set()
        self.subscriptions = tuple(
            tuple((s.url, frozenset(s.statuses)) for s in rs.action.subscriptions)
            for rs in artifact.rulesets)
        self.any_subscriptions = any(self.subscriptions)
        self._plan: ScorePlan | None = None
        self.catalog: dict[str, MetricSpec] = {**BUILTIN_METRICS,
                                               **{m.name: m for m in artifact.metrics}}
        self.results = StageResults(artifact.rulesets)
        self.metadata = StageMetadata(artifact.project, artifact.stage.name,
                                      artifact.stage.id or stage_id(*self.key),
                                      artifact.version,
                                      artifact.stage.type.value)

    @property
    def score_plan(self) -> ScorePlan:
        """The rulesets as the metric scheduler walks them (built on the first decision that
        waits for a scorer; a race only builds it twice)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = ScorePlan(self.rulesets, self.fail_closed,
                                          [bool(s) for s in self.subscriptions])
        return plan

    @property
    def source_map(self) -> SourceMap | None:
        raw = self._source_map
        if raw is None or isinstance(raw, SourceMap):
            return raw
        smap = SourceMap.model_validate(raw)
        if not smap.fits(self.rulesets):
            raise RegistryError(f"the source map of {self.key[0]}/{self.key[1]} "
                                f"v{self.artifact.version} does not match its rulesets")
        self._source_map = smap
        return smap

    def decide_values(self, values: dict[str, object],
                      resolve: Callable[[str], object]) -> Outcomes:
        """The outcomes for values that may already hold failures (a logged or an earlier
        decision's): the precomputed path takes plain values only; `resolve` is asked for
        what `values` lacks."""
        quick = self.decide_precomputed
        if quick is not None and not any(isinstance(v, Failure) for v in values.values()):
            found = quick(values)
            if found is not None:
                return found
        return self.decide(values, resolve)

    def with_paused(self, paused: bool) -> LoadedStage:
        """This stage in the given paused state (itself when that is already its state)."""
        if paused == self.paused:
            return self
        clone = object.__new__(LoadedStage)
        for name in LoadedStage.__slots__:
            if name != "__weakref__":
                object.__setattr__(clone, name, getattr(self, name))
        clone.paused = paused
        return clone


def _generate(ref: weakref.ref[LoadedStage]) -> None:
    stage = ref()
    if stage is None:  # replaced before its turn came
        return
    decide = compile_decider(stage.rulesets, stage.fail_closed, codegen=True)
    quick = compile_precomputed(stage.rulesets, limit=None)
    stage.decide = decide
    stage.decide_precomputed = quick
    stage.compiled.set()


# One thread compiles every large stage's generated code, one stage at a time.
_CODEGEN: WorkQueue[weakref.ref[LoadedStage]] = WorkQueue(_generate, name="stageguard-codegen",
                                                          max_queue=100_000)


def load_path(path: Path, paused: bool = False) -> LoadedStage:
    """Load, check and compile one artifact file for serving."""
    with collector.paused():
        artifact, source_map = load_artifact_for_serving(path)
        return LoadedStage(artifact, paused, source_map)


def load_bytes(raw: bytes, name: str, paused: bool) -> LoadedStage:
    """Check and compile one artifact a store handed over, for serving."""
    with collector.paused():
        artifact, source_map = parse_artifact_for_serving(raw, name)
        return LoadedStage(artifact, paused, source_map)


def load_model(artifact: Artifact, paused: bool = False) -> LoadedStage:
    with collector.paused():
        return LoadedStage(artifact, paused)
