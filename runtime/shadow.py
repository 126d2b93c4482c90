"""Shadow decisions: the candidate of a central stage decides every request its active
version decides, on a background thread, with the metric values the active decision had
(scorers it needs beyond those run there, under their own deadline), and never touches the
response. Agreements and disagreements are counted by stage and by (from, to) status, and
each pair of decisions goes to the decision log as one event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from stageguard.runtime.evaluate import Failure, outcomes_status, statuses_of
from stageguard.runtime.model import MetricSpec, Status
from stageguard.runtime.resolution import Resolution, ScorerPools
from stageguard.runtime.scheduling import decide_with_threads
from stageguard.runtime.workers import WorkQueue

if TYPE_CHECKING:
    from stageguard.runtime.decision_log import Decision, DecisionLog
    from stageguard.runtime.scorers import Scorer
    from stageguard.runtime.served import LoadedStage

log = logging.getLogger("stageguard.runtime")

_T = Status.TRIGGERED


@dataclass(frozen=True, slots=True)
class ShadowJob:
    candidate: LoadedStage
    values: dict[str, object]
    text_in: str
    text_out: str
    metadata: Mapping[str, str] | None
    timeout: float
    logged: Decision | None  # the active decision's log record, completed here
    scored: frozenset[str] = frozenset()  # which of `values` came from scorers


def shadow_status(candidate: LoadedStage, resolution: Resolution
                  ) -> tuple[Status, tuple[Status, ...]]:
    """The candidate's stage status and per-ruleset statuses, decided as `invoke` decides it
    (the scheduler's rules for what follows the winner included), over the active decision's
    values: a metric the active decision scored is not scored again."""
    values = resolution.values
    found = None
    if not resolution.scored and not any(isinstance(v, Failure) for v in values.values()):
        quick = candidate.decide_precomputed
        found = quick(values) if quick is not None else None
    if found is None:
        found = decide_with_threads(candidate.score_plan, resolution)
    status = _T if _T in found else outcomes_status(found)
    return status, statuses_of(found)


@dataclass(frozen=True, slots=True)
class ShadowStats:
    decided: dict[tuple[str, str], int]
    disagreements: dict[tuple[str, str, str, str], int]
    dropped: int  # shadow decisions skipped: the queue was full


class ShadowRunner:
    def __init__(self, find: Callable[[str, MetricSpec | None], Scorer | None],
                 pools: ScorerPools, decision_log: DecisionLog | None,
                 max_queue: int = 10_000) -> None:
        self._find = find
        self._pools = pools
        self._log = decision_log
        self._lock = threading.Lock()
        self.decided: dict[tuple[str, str], int] = {}
        # (project, stage, active status, candidate status) -> count, for differing statuses
        self.disagreements: dict[tuple[str, str, str, str], int] = {}
        self.dropped = 0
        self._work: WorkQueue[tuple[Any, ShadowJob]] = WorkQueue(
            self._run, name="stageguard-shadow", workers=2, max_queue=max_queue)

    def offer(self, response: Any, job: ShadowJob) -> bool:
        if self._work.offer((response, job)):
            return True
        with self._lock:
            self.dropped += 1
        return False

    def _run(self, item: tuple[Any, ShadowJob]) -> None:
        response, job = item
        started = time.perf_counter()
        catalog = job.candidate.catalog
        resolution = Resolution(lambda name: self._find(name, catalog.get(name)), self._pools,
                                job.text_in, job.text_out, job.metadata,
                                started + job.timeout, job.timeout, job.values, catalog,
                                scored=job.scored)
        status, statuses = shadow_status(job.candidate, resolution)
        project, stage = job.candidate.key
        active = response.status.value
        with self._lock:
            self.decided[project, stage] = self.decided.get((project, stage), 0) + 1
            if status.value != active:
                key = (project, stage, active, status.value)
                self.disagreements[key] = self.disagreements.get(key, 0) + 1
        if self._log is not None and job.logged is not None:
            names = [rs.name for rs in job.candidate.rulesets]
            self._log.record(replace(job.logged, shadow={
                "version": job.candidate.artifact.version,
                "digest": job.candidate.artifact.digest,
                "status": status.value,
                "agrees": status.value == active,
                "rulesets": [{"name": n, "status": s.value}
                             for n, s in zip(names, statuses, strict=True)],
                "latency_ms": (time.perf_counter() - started) * 1000}))

    def snapshot(self) -> ShadowStats:
        with self._lock:
            return ShadowStats(dict(self.decided), dict(self.disagreements), self.dropped)

    def flush(self, timeout: float | None = None) -> bool:
        return self._work.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._work.close(timeout)
