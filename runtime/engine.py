"""The runtime: loads stages, decides, notifies.

`Runtime(registry_dir)` serves every stage of a registry; `Runtime.from_files(...)` serves
artifact files. A decision reads the stage table once, so it sees exactly one version even
while a reload swaps the table (copy-on-write: the table is replaced, never mutated).
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageguard.runtime import arguments, identity
from stageguard.runtime.catalog import canonical_name
from stageguard.runtime.decision_log import Decision, DecisionLog
from stageguard.runtime.documents import document

# Re-exported: callers have always imported these from here.
from stageguard.runtime.errors import (
    InvalidRequest as InvalidRequest,
)
from stageguard.runtime.errors import (
    NeedsScorer as NeedsScorer,
)
from stageguard.runtime.errors import (
    StageConflict as StageConflict,
)
from stageguard.runtime.errors import (
    StageNotFound as StageNotFound,
)
from stageguard.runtime.errors import (
    SubscriptionsNotAllowed as SubscriptionsNotAllowed,
)
from stageguard.runtime.evaluate import (
    InvalidValue,
    Outcomes,
    normalise_value,
    outcomes_status,
)
from stageguard.runtime.follow import RegistryFollower, SyncStatus
from stageguard.runtime.galileo import rulesets_from_galileo
from stageguard.runtime.identity import project_id as project_id
from stageguard.runtime.identity import stage_id as stage_id
from stageguard.runtime.local_versions import LocalRecorder
from stageguard.runtime.management import StageInfo as StageInfo
from stageguard.runtime.management import StageManagement
from stageguard.runtime.model import (
    ActionType,
    Artifact,
    MetricSpec,
    RulesetSpec,
    StageType,
    Status,
)
from stageguard.runtime.registry import Candidate, Index, VersionNotFound
from stageguard.runtime.resolution import Resolution, ScorerPools
from stageguard.runtime.response import ActionResult, Response
from stageguard.runtime.rollout import takes_candidate
from stageguard.runtime.scheduling import decide_on_loop, decide_with_threads
from stageguard.runtime.scorers import Scorers
from stageguard.runtime.served import LRU, Snapshot, load_model, load_path
from stageguard.runtime.served import LoadedStage as LoadedStage
from stageguard.runtime.shadow import ShadowJob, ShadowRunner
from stageguard.runtime.store import RegistryStore, open_store
from stageguard.runtime.webhooks import Notifier, WebhookPolicy

log = logging.getLogger("stageguard.runtime")

DEFAULT_TIMEOUT = 300.0  # seconds; Galileo's default of five minutes
# A runtime follows its registry unless told not to (poll_interval=None serves a frozen view):
# another process's pause must reach every decision.
DEFAULT_POLL = 1.0
_T = Status.TRIGGERED
_NT = Status.NOT_TRIGGERED


def _empty(rulesets: object) -> bool:
    return isinstance(rulesets, Sequence) and not isinstance(rulesets, str) and not rulesets


class _Once:
    """A body built on first call, in whichever webhook worker gets there first."""

    __slots__ = ("_build", "_lock", "_value")

    def __init__(self, build: Callable[[], bytes]) -> None:
        self._build: Callable[[], bytes] | None = build
        self._lock = threading.Lock()
        self._value = b""

    def __call__(self) -> bytes:
        with self._lock:
            if self._build is not None:
                self._value, self._build = self._build(), None
            return self._value


class _Call:
    """An invocation waiting for its scorers, between `_begin` and `_finish`: what
    `_finish` takes, less the outcomes the scheduler is about to give."""

    __slots__ = ("headers", "loaded", "metadata", "received", "resolution", "served",
                 "shadow", "started", "text_in", "text_out", "timeout", "values")

    def __init__(self, loaded: LoadedStage, received: int, started: float, text_in: str,
                 text_out: str, timeout: float, metadata: Mapping[str, str] | None,
                 headers: Mapping[str, str] | None, served: str, shadow: LoadedStage | None,
                 values: dict[str, object], resolution: Resolution) -> None:
        self.loaded = loaded
        self.received = received
        self.started = started
        self.text_in = text_in
        self.text_out = text_out
        self.timeout = timeout
        self.metadata = metadata
        self.headers = headers
        self.served = served
        self.shadow = shadow
        self.values = values
        self.resolution = resolution


# Metric names as callers spell them -> canonical names: the same few names arrive with
# every request. Bounded, since callers choose them.
_CANONICAL: dict[str, str] = {}
_CANONICAL_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Payload:
    input: str = ""
    output: str = ""
    metrics: Mapping[str, object] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.output or self.input


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Webhook delivery so far: POSTs delivered, notifications given up, and in flight."""

    sent: int = 0
    dropped: int = 0
    pending: int = 0


class Runtime(RegistryFollower, StageManagement):
    """Serves stages from a registry (hot-reloaded) and/or artifact files."""

    def __init__(self, registry: str | os.PathLike[str] | RegistryStore | None = None, *,
                 poll_interval: float | None = DEFAULT_POLL, scorers: Scorers | None = None,
                 rng: _random.Random | None = None, notifier: Notifier | None = None,
                 webhook_allow_hosts: Iterable[str] | None = None,
                 webhook_allow_networks: Iterable[str] | None = None,
                 deliver_webhooks: bool = True, scorer_threads: int = 8,
                 cache_size: int = 256, record_local_versions: int = 0,
                 max_staleness: float | None = None, on_stale: str = "serve",
                 cache_dir: str | os.PathLike[str] | None = None,
                 decision_log: DecisionLog | None = None) -> None:
        # A directory or a postgresql:// url names a store (store.open_store); a store
        # object is used as it is.
        self.registry: RegistryStore | None = (
            open_store(registry) if isinstance(registry, str | os.PathLike) else registry)
        self._owns_store = isinstance(registry, str | os.PathLike)
        self._owns_scorers = scorers is None
        # A declared HTTP scorer's service takes as many requests at once as a scorer has
        # threads (at least 32).
        self.scorers = scorers or Scorers(http_connections=max(32, scorer_threads))
        self.random = rng or _random.Random()
        self._notifier = notifier
        try:
            self._webhook_policy = WebhookPolicy.of(webhook_allow_hosts, webhook_allow_networks)
        except ValueError as exc:
            raise InvalidRequest(f"webhook_allow_networks: {exc}") from None
        self.deliver_webhooks = deliver_webhooks
        if scorer_threads < 1:
            raise InvalidRequest("scorer_threads is at least 1")
        self._pools = ScorerPools(scorer_threads)
        self._table = Snapshot({})
        # Bounded: a service meets arbitrarily many pinned versions and local rulesets.
        self._pinned = LRU(cache_size)
        self._local = LRU(cache_size)
        # Local rulesets recorded as versions: at most this many per stage, written by a
        # background thread, never on the decision path (0: none are recorded).
        self._recorder = LocalRecorder(self.registry, record_local_versions)
        # One event per decision, if asked (runtime/decision_log.py); the runtime closes it.
        self.decision_log = decision_log
        self._logs_payload: dict[tuple[str, str], bool] = {}
        self.shadow = ShadowRunner(self.scorers.find, self._pools, decision_log)
        self._files: dict[tuple[str, str], LoadedStage] = {}
        self.load_errors: dict[str, str] = {}
        self._signature: object = None
        self._sync = SyncStatus()
        self._index: Index | None = None  # the registry as last read, patched by its events
        # How old a view of the registry may get before decisions stop (on_stale
        # "fail_closed": they answer `error` and say why) or go on regardless ("serve").
        if on_stale not in ("serve", "fail_closed"):
            raise InvalidRequest(f"on_stale is 'serve' or 'fail_closed', not {on_stale!r}")
        if max_staleness is not None and not max_staleness > 0:
            raise InvalidRequest("max_staleness is a number of seconds above 0")
        if on_stale == "fail_closed" and max_staleness is None:
            raise InvalidRequest("on_stale fail_closed needs max_staleness")
        self._stale_after = max_staleness if on_stale == "fail_closed" else None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # The last good snapshot on local disk (snapshot_cache): written after each reload,
        # served at start when the store cannot be read.
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._served_bytes: dict[tuple[str, str], bytes] = {}
        if self.registry is not None:
            self.refresh()
            if self._cache_dir is not None and "index" in self.load_errors:
                self._load_cache()
            if poll_interval:
                self.watch(poll_interval)

    @classmethod
    def from_files(cls, *paths: str | os.PathLike[str], **kwargs: Any) -> Runtime:
        rt = cls(**kwargs)
        for p in paths:
            rt.load_file(p)
        return rt

    # ---- loading ---------------------------------------------------------------------------

    def load_file(self, path: str | os.PathLike[str]) -> LoadedStage:
        """Serve one artifact file (raises RegistryError for a bad file)."""
        stage = load_path(Path(path))
        self._files[stage.key] = stage
        self._publish_table({**self._table.stages, stage.key: stage}, self._table.versions)
        return stage

    def _publish_table(self, stages: dict[tuple[str, str], LoadedStage],
                       versions: dict[tuple[str, str], tuple[int, ...]],
                       local_digests: dict[tuple[str, str], dict[str, int]] | None = None,
                       candidates: dict[tuple[str, str], tuple[Candidate, LoadedStage]]
                       | None = None) -> None:
        # One assignment: a reader that took the previous snapshot keeps a coherent view.
        self._table = Snapshot(stages, versions,
                               self._table.local_digests if local_digests is None
                               else local_digests,
                               self._table.candidates if candidates is None else candidates)


    def close(self, flush_timeout: float | None = 10.0) -> None:
        """Stop watching, deliver queued webhooks (waiting up to `flush_timeout`), stop
        scorer threads."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._notifier is not None:
            self._notifier.close(flush_timeout)
        self._recorder.close()
        self.shadow.close()
        if self.decision_log is not None:
            self.decision_log.close(flush_timeout or 0.0)
        self._pools.shutdown()
        if self._owns_scorers:
            self.scorers.close()  # their HTTP connections
        closing = getattr(self.registry, "close", None)
        if self._owns_store and callable(closing):  # a database connection, say
            closing()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for queued webhooks, local versions being recorded, shadow decisions and the
        decision log; False on timeout."""
        recorded = self._recorder.flush(timeout)
        shadowed = self.shadow.flush(timeout)
        logged = self.decision_log.flush(10.0 if timeout is None else timeout) \
            if self.decision_log is not None else True
        return (self._notifier.flush(timeout) if self._notifier is not None else True) \
            and recorded and shadowed and logged

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def scorer_pools(self) -> ScorerPools:
        """The threads scorers run on: one bounded pool per scorer, made on first use."""
        return self._pools

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(policy=self._webhook_policy)
        return self._notifier

    # ---- finding stages --------------------------------------------------------------------

    def _key(self, project: str | None, stage: str | None, stage_id_: str | None,
             table: Snapshot | None = None) -> tuple[str, str]:
        return self._latest(project, stage, stage_id_, table).key

    def _latest(self, project: str | None, stage: str | None, stage_id_: str | None,
                table: Snapshot | None = None) -> LoadedStage:
        """The latest version of the stage these arguments name, as the snapshot found it
        for them before (the same answer every time)."""
        table = table or self._table
        try:
            found = table.found.get((project, stage, stage_id_))
        except TypeError:  # not a name at all: _find_key says what is wrong
            found = None
        if found is None:
            found = self._stage(self._find_key(project, stage, stage_id_, table), None, table)
            if len(table.found) < 1024:  # callers choose the names: bounded
                table.found[(project, stage, stage_id_)] = found
        return found

    def _find_key(self, project: str | None, stage: str | None, stage_id_: str | None,
                  table: Snapshot) -> tuple[str, str]:
        project = arguments.optional_name("project", project)
        stage = arguments.optional_name("stage name", stage)
        stage_id_ = arguments.optional_name("stage id", stage_id_)
        return identity.find_stage(table.keys, project, stage, stage_id_)

    def _stage(self, key: tuple[str, str], version: int | None,
               table: Snapshot | None = None) -> LoadedStage:
        current = (table or self._table).stages.get(key)
        if current is None:
            raise StageNotFound(f"no stage {key[1]!r} in project {key[0]!r}")
        if version is None or version == current.artifact.version:
            return current
        pinned = self._pinned.get((*key, version))
        if pinned is None:
            if self.registry is None:
                raise StageNotFound(f"stage {key[1]!r} has only version "
                                    f"{current.artifact.version} loaded")
            try:
                pinned = load_model(self.registry.load(key[0], key[1], version))
            except VersionNotFound as exc:
                raise StageNotFound(str(exc)) from None  # a damaged file stays an error
            self._pinned.put((*key, version), pinned)
        return pinned.with_paused(current.paused)

    def artifact(self, *, project: str | None = None, stage_name: str | None = None,
                 stage_id: str | None = None, version: int | None = None) -> Artifact:
        """The artifact a decision would use (latest unless `version` is given)."""
        return self._stage(self._key(project, stage_name, stage_id), version).artifact

    # ---- deciding --------------------------------------------------------------------------

    def invoke(self, payload: Payload | Mapping[str, Any], stage: str | None = None, *,
               project: str | None = None, stage_id: str | None = None,
               version: int | None = None, rulesets: Sequence[Any] | None = None,
               timeout: float = DEFAULT_TIMEOUT, metadata: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None, scorers: bool = True,
               allow_subscriptions: bool = True) -> Response:
        """Decide one payload (docs/semantics.md, "One invocation"). Scorer failures and timeouts
        become statuses; only a request that cannot be decided raises (InvalidRequest,
        StageNotFound). Scored metrics are computed concurrently, each on its scorer's pool
        (docs/semantics.md, "Scored metrics").

        `scorers=False` raises NeedsScorer, having done nothing, where the decision would
        have to wait for a scorer. `allow_subscriptions=False` refuses local rulesets that
        subscribe webhooks (SubscriptionsNotAllowed)."""
        call = self._begin(payload, stage, project, stage_id, version, rulesets, timeout,
                           metadata, headers, allow_subscriptions)
        if isinstance(call, Response):
            return call
        if not scorers:
            raise NeedsScorer
        return self._finish_call(call, decide_with_threads(call.loaded.score_plan,
                                                           call.resolution))

    async def ainvoke(self, payload: Payload | Mapping[str, Any], stage: str | None = None, *,
                      project: str | None = None, stage_id: str | None = None,
                      version: int | None = None, rulesets: Sequence[Any] | None = None,
                      timeout: float = DEFAULT_TIMEOUT,
                      metadata: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None,
                      allow_subscriptions: bool = True) -> Response:
        """`invoke` on the running event loop: precomputed payloads are decided in place,
        async scorers run on the loop and sync ones on their pools, so a scored decision
        never blocks the loop; what the decision no longer needs is cancelled."""
        call = self._begin(payload, stage, project, stage_id, version, rulesets, timeout,
                           metadata, headers, allow_subscriptions)
        if isinstance(call, Response):
            return call
        return self._finish_call(call, await decide_on_loop(call.loaded.score_plan,
                                                            call.resolution))

    def _begin(self, payload: Payload | Mapping[str, Any], stage: str | None,
               project: str | None, stage_id: str | None, version: int | None,
               rulesets: Sequence[Any] | None, timeout: float,
               metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
               allow_subscriptions: bool) -> Response | _Call:
        """Everything before waiting for scorers: the arguments checked, the stage found,
        and the response when the payload's metrics suffice (or nothing is to be decided);
        else the call, for the caller to schedule its scorers and `_finish_call`."""
        received = time.time_ns()
        started = time.perf_counter()
        given_in: object
        given_out: object
        given_metrics: object
        if payload.__class__ is dict:  # the usual case: no ABC check
            given_in, given_out = payload.get("input"), payload.get("output")
            given_metrics = payload.get("metrics")
        elif isinstance(payload, Payload):
            given_in, given_out, given_metrics = payload.input, payload.output, payload.metrics
        elif isinstance(payload, Mapping):
            given_in, given_out = payload.get("input"), payload.get("output")
            given_metrics = payload.get("metrics")
        else:
            raise InvalidRequest("payload is a Payload or a mapping with input/output")
        # (ASCII strings, the usual case, need no surrogate check: no call for them)
        text_in = given_in if given_in.__class__ is str and given_in.isascii() else \
            "" if given_in is None else arguments.text("payload input", given_in)
        text_out = given_out if given_out.__class__ is str and given_out.isascii() else \
            "" if given_out is None else arguments.text("payload output", given_out)
        raw_metrics = arguments.metrics(given_metrics)
        if timeout != DEFAULT_TIMEOUT:
            timeout = arguments.timeout(timeout)
        if metadata is not None:
            metadata = arguments.string_map("metadata", metadata)
        if headers is not None:
            headers = arguments.string_map("headers", headers)
        if version is not None:
            version = arguments.version(version)
        if not (text_out or text_in):
            raise InvalidRequest("payload needs a non-empty input or output")
        table = self._table  # one snapshot for the whole decision
        loaded = self._latest(project, stage, stage_id, table)
        if version is not None:
            loaded = self._stage(loaded.key, version, table)
        served = "active"
        shadow: LoadedStage | None = None
        if rulesets is not None and not (
                loaded.artifact.stage.type is StageType.CENTRAL and _empty(rulesets)):
            # (galileo-core's Request always sends a ruleset list; an empty one on a central
            # stage means "the stage's own", as in Galileo.)
            loaded = self._local_stage(loaded, rulesets, allow_subscriptions, table)
            served = "local"
        elif version is not None:
            served = "pinned"
        elif table.candidates:
            cand = table.candidates.get(loaded.key)
            if cand is not None:
                terms, cand_stage = cand
                if terms.mode == "shadow":
                    shadow = cand_stage
                elif terms.key is not None and metadata is not None:
                    caller_key = metadata.get(terms.key)
                    if caller_key is not None and takes_candidate(
                            loaded.key[0], loaded.key[1], caller_key, terms.percent):
                        loaded = cand_stage
                        served = "candidate"
        # A local stage decides with the rulesets this invocation brought; without any it has
        # none (its latest version may hold an earlier invocation's, recorded for history),
        # unless a version is pinned, which replays that version's recorded rulesets.
        local_without = rulesets is None and version is None and loaded.local
        refused: str | None = None
        if self._stale_after is not None and self.registry is not None:
            age = self._sync.staleness
            if age is None or age > self._stale_after:
                refused = ("the registry was last read " + (
                    "never" if age is None else f"{age:.1f} s ago") + ", more than "
                    f"max_staleness ({self._stale_after:g} s) allows: not deciding (on_stale "
                    "fail_closed)")
        undecided = (Status.ERROR if refused is not None else Status.PAUSED if loaded.paused
                     else Status.SKIPPED if local_without or not loaded.rulesets else None)
        if undecided is not None:
            return self._finish(loaded, (), undecided, received, started, text_in, text_out,
                                timeout, metadata, headers, served, shadow, None, None,
                                refused)
        values: dict[str, object] = {}
        if raw_metrics:
            canonical = _CANONICAL
            try:
                for name, value in raw_metrics.items():
                    key = canonical.get(name)
                    if key is None:
                        key = canonical_name(name)
                        if len(canonical) < _CANONICAL_SIZE:
                            canonical[name] = key
                    kind = value.__class__
                    # Numbers and labels are taken as they are, a list of labels as a tuple
                    # (normalise_value's first cases, without the call).
                    if kind is float or kind is str or kind is int or value is None:
                        values[key] = value
                    elif kind is list:
                        labels = tuple(value)
                        for label in labels:
                            if label.__class__ is not str:
                                values[key] = normalise_value(value)  # converts, or refuses
                                break
                        else:
                            values[key] = labels
                    else:
                        values[key] = normalise_value(value)
            except InvalidValue as exc:
                raise InvalidRequest(f"metric {name!r}: {exc}") from None
        quick = loaded.decide_precomputed
        found = quick(values) if quick is not None else None
        if found is not None:
            # (Given values never fail: a stage that nothing triggered is not_triggered.)
            return self._finish(loaded, found, None if _T in found else _NT, received,
                                started, text_in, text_out, timeout, metadata, headers,
                                served, shadow, values)
        # Some metric must come from a scorer.
        scorers = self.scorers
        catalog = loaded.catalog
        return _Call(loaded, received, started, text_in, text_out, timeout, metadata, headers,
                     served, shadow, values, Resolution(
                         lambda name: scorers.find(name, catalog.get(name)), self._pools,
                         text_in, text_out, metadata, started + timeout, timeout, values,
                         catalog))

    def _finish_call(self, call: _Call, outcomes: Outcomes) -> Response:
        return self._finish(call.loaded, outcomes, None, call.received, call.started,
                            call.text_in, call.text_out, call.timeout, call.metadata,
                            call.headers, call.served, call.shadow, call.values,
                            call.resolution)

    def _finish(self, loaded: LoadedStage, outcomes: Outcomes, status: Status | None,
                received: int, started: float, text_in: str, text_out: str, timeout: float,
                metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                served: str, shadow: LoadedStage | None, values: dict[str, object] | None,
                resolution: Resolution | None = None, refused: str | None = None
                ) -> Response:
        """The response of a decided invocation (`status`: what it is when nothing was
        decided, else None), and what follows it: webhooks, the decision log, the shadow.
        Taken as arguments, not as an object: a decision without scorers builds none."""
        text = text_out or text_in
        action = None
        if status is None:
            if _T in outcomes:
                status = _T
                first = outcomes.index(_T)
                winner = loaded.rulesets[first].action
                if winner.type is ActionType.OVERRIDE:
                    # One result per choice, built once per stage; a lone choice needs no
                    # draw.
                    choices = loaded.results.overrides(first)
                    action = choices[0] if len(choices) == 1 else self.random.choice(choices)
                    text = action.value
                else:
                    action = ActionResult(winner.type, text)
            else:
                status = outcomes_status(outcomes)
        response = Response(
            text, status,
            (received, started, time.perf_counter()),
            action, loaded.metadata, metadata, headers, loaded.results, outcomes, values,
            resolution.timings if resolution is not None else None, refused)
        if loaded.any_subscriptions and outcomes and self.deliver_webhooks:
            self._notify(loaded, response)
        decisions = self.decision_log
        logged = None
        if decisions is not None:
            # The id drawn here, before the log's thread (and the shadow's) reads it: drawn
            # lazily by two threads at once, it could differ between the log and the caller.
            response.decision_id  # noqa: B018
            wants = self._logs_payload.get(loaded.key)
            if wants is None:
                wants = self._logs_payload[loaded.key] = decisions.wants_payload(
                    f"{loaded.key[0]}/{loaded.key[1]}")
            logged = Decision(response, loaded.artifact.digest,
                              self._sync.revision if self.registry is not None else None,
                              served, (text_in, text_out) if wants else None)
        if shadow is not None and values is not None:
            scored = frozenset(n for n, (_, source) in resolution.timings.items()
                               if source == "scorer") if resolution is not None else frozenset()
            job = ShadowJob(shadow, dict(values), text_in, text_out, metadata, timeout, logged,
                            scored)
            if self.shadow.offer(response, job):
                logged = None  # the shadow completes the event with its own decision
        if logged is not None and decisions is not None:
            decisions.record(logged)
        return response

    def _notify(self, loaded: LoadedStage, response: Response) -> None:
        notifier = self.notifier
        body = _Once(response.to_json_bytes)  # one encoding for every webhook of a decision
        for subs, status in zip(loaded.subscriptions, response.ruleset_statuses, strict=True):
            for url, wanted in subs:
                if status in wanted:
                    notifier.send(url, body, response.trace_metadata.id)

    # ---- local stages ----------------------------------------------------------------------

    def _local_stage(self, base: LoadedStage, rulesets: Sequence[Any],
                     allow_subscriptions: bool, table: Snapshot) -> LoadedStage:
        """The stage deciding with an invocation's rulesets. Its version is the one these
        rulesets were recorded as, else the local stage's own (docs/runtime.md)."""
        if base.artifact.stage.type is not StageType.LOCAL:
            raise InvalidRequest(f"stage {base.key[1]!r} is central: its rulesets are part of "
                                 "its definition (update_stage makes a new version)")
        specs = self.ruleset_specs(rulesets, base.catalog)
        if not allow_subscriptions and any(rs.action.subscriptions for rs in specs):
            raise SubscriptionsNotAllowed(
                "an invocation's rulesets may not subscribe webhooks here: that takes an "
                "admin token, or a server started with --invoke-subscriptions")
        doc = document(base.artifact, specs)
        version = (table.local_digests.get(base.key, {}).get(doc.digest)
                   or self._recorder.version(base.key, doc.digest))
        if version is None:
            version = table.stages.get(base.key, base).artifact.version
            self._recorder.offer(doc, base.key)
        cache_key = (*base.key, doc.digest, version)
        cached = self._local.get(cache_key)
        if cached is None:
            cached = self._local.put(cache_key, load_model(doc.to_artifact(version)))
        return cached.with_paused(table.stages.get(base.key, base).paused)

    def ruleset_specs(self, rulesets: Sequence[Any],
                      catalog: Mapping[str, MetricSpec]) -> tuple[RulesetSpec, ...]:
        """Rulesets given as RulesetSpec models or Galileo-shaped dicts. (Source text is the
        compiler's business: `stageguard.api` accepts it.)"""
        if isinstance(rulesets, str):
            raise InvalidRequest("rulesets as source text need the compiler: use "
                                 "stageguard.api")
        if isinstance(rulesets, Mapping) or not isinstance(rulesets, Sequence):
            raise InvalidRequest("rulesets are a list of rulesets, not a "
                                 f"{type(rulesets).__name__}")
        try:
            specs = rulesets_from_galileo(rulesets, catalog)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        self.check_webhooks(specs)
        return specs

    def check_webhooks(self, rulesets: Sequence[RulesetSpec]) -> None:
        """Refuse subscriptions the notifier would drop: not http(s), a host outside the
        allowlist, an address that is not public. Checked when a stage or an invocation's
        rulesets are accepted, so a governance change cannot silently point alerts nowhere
        (a host name is resolved only at delivery, and checked again there)."""
        problems = sorted({f"{s.url} ({problem})" for rs in rulesets
                           for s in rs.action.subscriptions
                           if (problem := self._webhook_policy.url_problem(s.url))})
        if problems:
            raise InvalidRequest(f"webhook url{'s' if len(problems) > 1 else ''} not allowed: "
                                 f"{', '.join(problems)}")

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return self._webhook_policy

    # ---- what the service and the publish path read ----------------------------------------

    def notifier_stats(self) -> NotifierStats:
        notifier = self._notifier  # None until a webhook is first sent
        if notifier is None:
            return NotifierStats()
        return NotifierStats(notifier.sent, notifier.dropped, notifier.pending)

    @property
    def stage_count(self) -> int:
        """How many stages are being served."""
        return len(self._table.stages)

    def resolve_project(self, ref: str) -> str:
        """A project by name or by id (identity.resolve_project)."""
        return identity.resolve_project(self._table.keys, ref)

    def resolve_stage(self, project_ref: str, stage_ref: str) -> tuple[str, str]:
        """A served stage by project (name or id) and stage (name or id)."""
        return identity.resolve_stage(self._table.keys, project_ref, stage_ref)

