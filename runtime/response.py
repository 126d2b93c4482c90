"""The Response of docs/semantics.md and its Galileo wire shape.

The decision path fills the cheap fields (text, status, trace metadata, action result, stage
metadata) and keeps the ruleset statuses and the metric values it resolved. Per-rule results
are rebuilt on first access by the reference interpreter from those same values, so a caller
who only reads `text` and `status` pays nothing for them; a property test proves the fast
path's statuses and the reference's agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageguard.runtime.evaluate import (
    NOT_REACHED,
    Failure,
    RuleOutcome,
    ruleset_outcome,
    values_getter,
)
from stageguard.runtime.galileo import ruleset_to_galileo, wire_value
from stageguard.runtime.model import ActionType, RulesetSpec, Status

if TYPE_CHECKING:
    from stageguard.runtime.engine import LoadedStage


@dataclass(frozen=True, slots=True)
class TraceMetadata:
    id: str
    received_at: int  # epoch ns
    response_at: int  # epoch ns
    execution_time: float  # seconds

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at, "response_at": self.response_at,
                "execution_time": self.execution_time}


@dataclass(frozen=True, slots=True)
class ActionResult:
    type: ActionType
    value: str


@dataclass(frozen=True, slots=True)
class StageMetadata:
    project: str
    stage_name: str
    stage_id: str
    stage_version: int
    stage_type: str


@dataclass(frozen=True, slots=True)
class MetricResult:
    name: str
    value: object
    status: str  # success | failed | timeout | error
    source: str  # payload | scorer | none
    execution_time: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": wire_value(self.value), "status": self.status, "source": self.source,
                "execution_time": self.execution_time, "error": self.error}


@dataclass(frozen=True, slots=True)
class RuleResult:
    metric: str
    operator: str
    target_value: float | str | tuple[str, ...] | None
    status: str  # triggered | not_triggered | failed | timeout | error | skipped (not reached)
    value: object
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RulesetResult:
    name: str
    status: Status
    ruleset: RulesetSpec
    rule_results: tuple[RuleResult, ...]


def _rule_status(outcome: RuleOutcome) -> str:
    if not outcome.evaluated:
        return "skipped"
    if outcome.failure is not None:
        return outcome.failure.status.value
    return "triggered" if outcome.holds else "not_triggered"


def _wire_value(value: object) -> object:
    return None if isinstance(value, Failure) else wire_value(value)


class Response:
    """One decision. `to_dict()`/`model_dump()` give the Galileo wire shape (statuses in
    UPPERCASE); `to_json()` the same as JSON."""

    __slots__ = (
        "_metric_results",
        "_ruleset_results",
        "_rulesets",
        "_stage",
        "_statuses",
        "_timings",
        "_values",
        "action_result",
        "headers",
        "metadata",
        "stage_metadata",
        "status",
        "text",
        "trace_metadata",
    )

    def __init__(self, text: str, status: Status, trace_metadata: TraceMetadata,
                 action_result: ActionResult | None, stage_metadata: StageMetadata,
                 metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                 stage: LoadedStage | None = None, statuses: tuple[Status, ...] = (),
                 values: dict[str, object] | None = None,
                 timings: dict[str, tuple[float, str]] | None = None) -> None:
        self.text = text
        self.status = status
        self.trace_metadata = trace_metadata
        self.action_result = action_result
        self.stage_metadata = stage_metadata
        self.metadata = metadata
        self.headers = headers
        self._stage = stage
        self._statuses = statuses
        self._values = values
        self._timings = timings
        self._ruleset_results: tuple[RulesetResult, ...] | None = None
        self._metric_results: dict[str, MetricResult] | None = None

    def __repr__(self) -> str:
        return (f"Response(status={self.status.value!r}, text={self.text!r}, "
                f"stage={self.stage_metadata.stage_name!r}@v{self.stage_metadata.stage_version})")

    @property
    def ruleset_statuses(self) -> tuple[Status, ...]:
        return self._statuses

    @property
    def ruleset_results(self) -> tuple[RulesetResult, ...]:
        if self._ruleset_results is None:
            self._ruleset_results = self._build_ruleset_results()
        return self._ruleset_results

    def _build_ruleset_results(self) -> tuple[RulesetResult, ...]:
        stage, values = self._stage, self._values
        if stage is None or values is None or not self._statuses:
            return ()
        out = []
        for spec, status in zip(stage.rulesets, self._statuses, strict=True):
            _, outcomes = ruleset_outcome(spec.rules, values_getter(values), stage.fail_closed)
            rules = tuple(
                RuleResult(rule.metric, rule.operator.value, rule.target_value,
                           _rule_status(o), values.get(rule.metric) if o is not NOT_REACHED
                           else None, o.failure.message if o.failure else None)
                for rule, o in zip(spec.rules, outcomes, strict=True))
            out.append(RulesetResult(spec.name, status, spec, rules))
        return tuple(out)

    @property
    def metric_results(self) -> dict[str, MetricResult]:
        if self._metric_results is None:
            results = {}
            timings = self._timings or {}
            for name, value in (self._values or {}).items():
                elapsed, source = timings.get(name, (0.0, "payload"))
                if isinstance(value, Failure):
                    results[name] = MetricResult(name, None, value.status.value, source,
                                                 elapsed, value.message)
                else:
                    results[name] = MetricResult(name, value, "success", source, elapsed)
            self._metric_results = results
        return self._metric_results

    def to_dict(self) -> dict[str, Any]:
        sm = self.stage_metadata
        return {
            "text": self.text,
            "status": self.status.value.upper(),
            "trace_metadata": self.trace_metadata.to_dict(),
            "action_result": None if self.action_result is None else {
                "type": self.action_result.type.value, "value": self.action_result.value},
            "stage_metadata": {"project": sm.project, "stage_name": sm.stage_name,
                               "stage_id": sm.stage_id, "stage_version": sm.stage_version,
                               "stage_type": sm.stage_type},
            "ruleset_results": [
                {"name": r.name, "status": r.status.value.upper(),
                 "ruleset": ruleset_to_galileo(r.ruleset),
                 "rule_results": [{"metric": x.metric, "operator": x.operator,
                                   "target_value": _wire_value(x.target_value),
                                   "status": x.status.upper(), "value": _wire_value(x.value),
                                   "error": x.error} for x in r.rule_results]}
                for r in self.ruleset_results],
            "metric_results": {n: m.to_dict() for n, m in self.metric_results.items()},
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "headers": dict(self.headers) if self.headers is not None else None,
        }

    model_dump = to_dict

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, **kwargs)
