"""Diff meets traffic: how many logged decisions lie in each region `stageguard diff` found.

Each logged event of a stage is a point of metric space (its logged values; a metric the
decision never computed is one neither version needs there, so it is left missing). An
event counts in a region when it lies in one of the region's boxes; events that the old or
the new version cannot decide from the logged values alone, or whose values lie outside the
analysed domain, are counted apart, as `stageguard replay` counts them, so that the region
counts add up to the events replay shows changing decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stageguard.compiler.diff import DiffReport, StageDiff
from stageguard.runtime.decision_log import decided_nothing, metric_values
from stageguard.runtime.evaluate import outcomes_status, reference_outcomes, stage_fail_closed
from stageguard.runtime.model import Artifact, Status


class _Lacking(Exception):
    pass


@dataclass
class StageTraffic:
    events: int = 0  # logged decisions of the stage
    judged: int = 0  # decided by both versions from the logged values
    regions: list[int] = field(default_factory=list)  # per region of the diff, in order
    examples: list[list[str]] = field(default_factory=list)
    lacking: int = 0  # a version needs a metric the event does not hold
    outside: int = 0  # a value outside the domain the analysis covers
    undecided: int = 0  # paused, skipped or refused when logged
    unreadable: int = 0
    first: str | None = None  # the oldest and newest decision times counted
    last: str | None = None

    def share(self, count: int) -> float:
        return count / self.judged if self.judged else 0.0

    def to_data(self) -> dict[str, Any]:
        return {"events": self.events, "judged": self.judged, "in_changed_regions":
                sum(self.regions), "lacking_metrics": self.lacking,
                "outside_domain": self.outside, "undecided": self.undecided,
                "unreadable": self.unreadable, "from": self.first, "to": self.last}


def _decide(artifact: Artifact, values: Mapping[str, object]) -> tuple[str, str | None]:
    def get(name: str) -> object:
        if name not in values:
            raise _Lacking(name)
        return values[name]

    outcomes = reference_outcomes(artifact.rulesets, get,  # type: ignore[arg-type]
                                  stage_fail_closed(artifact))
    if Status.TRIGGERED in outcomes:
        return Status.TRIGGERED.value, artifact.rulesets[outcomes.index(Status.TRIGGERED)].name
    return outcomes_status(outcomes).value, None


def stage_traffic(stage: StageDiff, events: Iterable[Mapping[str, Any] | None]) -> StageTraffic:
    out = StageTraffic(regions=[0] * len(stage.regions),
                       examples=[[] for _ in stage.regions])
    if stage.old is None or stage.new is None or stage.space is None:
        return out
    space = stage.space
    for event in events:
        if event is None:
            out.unreadable += 1
            continue
        if (event.get("project"), event.get("stage")) != (stage.project, stage.name):
            continue
        out.events += 1
        at = event.get("at")
        if isinstance(at, str):
            out.first = at if out.first is None or at < out.first else out.first
            out.last = at if out.last is None or at > out.last else out.last
        if decided_nothing(event):
            out.undecided += 1
            continue
        values = metric_values(event)
        if values is None:
            out.unreadable += 1
            continue
        try:
            _decide(stage.old, values)
            _decide(stage.new, values)
        except _Lacking:
            out.lacking += 1
            continue
        try:
            inside = [i for i, r in enumerate(stage.regions)
                      if any(space.contains(b, values) for b in r.boxes)]
        except ValueError:
            out.outside += 1
            continue
        out.judged += 1
        for i in inside[:1]:  # regions are disjoint; the first is the one
            out.regions[i] += 1
            if len(out.examples[i]) < 3:
                out.examples[i].append(str(event.get("decision_id")))
    return out


def with_traffic(report: DiffReport, events: list[Mapping[str, Any] | None]) -> DiffReport:
    """The report with each changed stage's traffic (events read once, per stage)."""
    stages = tuple(replace(s, traffic=stage_traffic(s, events)) if s.behaviour_changed
                   and s.old is not None and s.new is not None else s for s in report.stages)
    return replace(report, stages=stages)
