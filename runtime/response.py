"""The Response of docs/semantics.md and its Galileo wire shape.

The decision hands the Response what it computed: each ruleset's outcome (its status and
where it stopped, `evaluate.Outcome`) and the metric values it resolved. Per-rule results
follow from those without evaluating anything (rules before the stop held, the rule at the
stop ended the ruleset, later rules were not reached), and are assembled only when asked
for, so a caller who reads `text` and `status` pays nothing for them. The Galileo form of
each ruleset is prepared once per served stage (`StageResults`), not per response.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from math import isfinite as _isfinite
from typing import Any

from orjson import dumps as _c_dumps

from stageguard.runtime.clock import micros
from stageguard.runtime.evaluate import (
    Failure,
    Outcome,
    Outcomes,
    outcome_status,
    outcome_stop,
)
from stageguard.runtime.galileo import ruleset_to_galileo, wire_value
from stageguard.runtime.identity import trace_id
from stageguard.runtime.model import ActionType, RulesetSpec, Status


class TraceMetadata:
    """When a decision was made, and its id. A decision's id is drawn when first read (a
    caller who reads only `text` and `status` does not pay for one); read-only."""

    __slots__ = ("_id", "execution_time", "received_at", "response_at")

    def __init__(self, id: str | None, received_at: int, response_at: int,
                 execution_time: float) -> None:
        self._id = id
        self.received_at = received_at  # epoch ns
        self.response_at = response_at  # epoch ns
        self.execution_time = execution_time  # seconds

    @property
    def id(self) -> str:
        found = self._id
        if found is None:
            found = self._id = trace_id()
        return found

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceMetadata):
            return NotImplemented
        return (self.id, self.received_at, self.response_at, self.execution_time) == (
            other.id, other.received_at, other.response_at, other.execution_time)

    def __hash__(self) -> int:
        return hash((self.id, self.received_at, self.response_at))

    def __repr__(self) -> str:
        return (f"TraceMetadata(id={self.id!r}, received_at={self.received_at}, "
                f"response_at={self.response_at}, execution_time={self.execution_time})")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at, "response_at": self.response_at,
                "execution_time": self.execution_time}

    @classmethod
    def of(cls, clock: Clock) -> TraceMetadata:
        """From a decision's clock readings: received at (epoch ns), then started and ended
        (`perf_counter()`). It responded the elapsed time after it was received (on the
        monotonic clock: never before, whatever the wall clock does meanwhile)."""
        received, started, ended = clock
        elapsed = ended - started
        return cls(None, received, received + int(elapsed * 1_000_000_000), micros(elapsed))


# A decision's clock readings, as it hands them to its Response: received at (epoch ns),
# started and ended (perf_counter()).
Clock = tuple[int, float, float]


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


def _wire_value(value: object) -> object:
    return None if isinstance(value, Failure) else wire_value(value)


# The encoder json.dumps(..., ensure_ascii=False, allow_nan=False) builds on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_encode = _ENCODER.encode
_string: Callable[[str], str] = json.encoder.encode_basestring


_UPPER: dict[str, str] = {**{s: s.value.upper() for s in Status},
          **{s: s.upper() for s in ("triggered", "not_triggered", "skipped", "failed",
                                    "timeout", "error")}}


# A float's JSON is `float.__repr__`'s shortest round-trip digits. Where repr writes plain
# decimals, [1e-4, 1e16), orjson writes the same text (tests/test_response.py holds it over
# every float) in C, at a quarter of repr's cost: most metric values are scores in [0, 1].
_FLOAT_LOW = 1e-4
_FLOAT_HIGH = 1e16
_decode = bytes.decode


def _float_json(x: float) -> str:
    """A finite float as json.dumps writes it."""
    if _FLOAT_LOW <= x < _FLOAT_HIGH:
        return _decode(_c_dumps(x))
    return float.__repr__(x)


def _json_value(value: object) -> str:
    """`_encode(_wire_value(value))` for what a metric can hold, without the encoder's
    per-call cost."""
    kind = value.__class__
    if kind is float and _isfinite(value):  # type: ignore[arg-type]
        return _float_json(value)  # type: ignore[arg-type]
    if kind is str:
        return _string(value)  # type: ignore[arg-type]
    if kind is tuple:
        labels: tuple[str, ...] = value  # type: ignore[assignment]
        try:
            found = _LABELS.get(labels)  # label sets come from a small vocabulary: kept
        except TypeError:  # unhashable: not labels
            found = None
        if found is not None:
            return found
        for label in labels:
            if label.__class__ is not str:
                break
        else:
            found = "[" + ", ".join(map(_string, labels)) + "]"
            if len(_LABELS) < _LABELS_SIZE:
                _LABELS[labels] = found
            return found
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return _float_json(float(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if value is None or isinstance(value, Failure):
        return "null"
    if isinstance(value, tuple) and all(isinstance(x, str) for x in value):
        return "[" + ", ".join(map(_string, value)) + "]"
    return _encode(_wire_value(value))


# Label tuples -> their JSON; bounded, since callers choose the labels.
_LABELS: dict[tuple[str, ...], str] = {}
_LABELS_SIZE = 4096


def _json_values(values: Iterable[object]) -> list[str]:
    """`_json_value` of each value; a score (most metric values) without the call."""
    return [_decode(_c_dumps(v)) if v.__class__ is float and _FLOAT_LOW <= v < _FLOAT_HIGH
            else _json_value(v) for v in values]


def _number(x: float) -> str:
    """A float as json.dumps writes it (the encoder's own rule for non-finite values).
    Durations (whole microseconds, `clock.micros`) take few values, each kept as its text
    (bounded)."""
    found = _NUMBERS.get(x)
    if found is None:
        if not math.isfinite(x):
            return _encode(x)
        found = _float_json(x)
        if x > 0 and len(_NUMBERS) < _NUMBERS_SIZE:  # (-0.0 == 0.0, but writes otherwise)
            _NUMBERS[x] = found
    return found


_NUMBERS: dict[float, str] = {}
_NUMBERS_SIZE = 8192


def _stage_json(sm: StageMetadata) -> str:
    found = _STAGE_JSON.get(sm)
    if found is None:
        found = _encode({"project": sm.project, "stage_name": sm.stage_name,
                         "stage_id": sm.stage_id, "stage_version": sm.stage_version,
                         "stage_type": sm.stage_type})
        if len(_STAGE_JSON) < 4096:
            _STAGE_JSON[sm] = found
    return found


_STAGE_JSON: dict[StageMetadata, str] = {}


# One rule as the response reports it: metric, operator, target (artifact form), target
# (wire form).
_Rule = tuple[str, str, "float | str | tuple[str, ...] | None", object]


class StageResults:
    """What every response of one served stage shares: its rulesets, each rule's fixed
    fields, and each ruleset's Galileo wire form. Built once per loaded stage, on the first
    response that needs it (deciding alone never does); read-only afterwards."""

    __slots__ = ("_bodies", "_json", "_overrides", "_rules", "_templates", "_wire", "rulesets")

    def __init__(self, rulesets: tuple[RulesetSpec, ...]) -> None:
        self.rulesets = rulesets
        self._rules: tuple[tuple[_Rule, ...], ...] | None = None
        self._wire: tuple[dict[str, Any], ...] | None = None
        self._json: tuple[tuple[str, str, tuple[str, ...]], ...] | None = None
        self._templates: dict[Outcomes, tuple[list[str], tuple[str, ...]] | None] = {}
        self._bodies: dict[tuple[Outcomes, tuple[str, ...], tuple[bool, ...] | None],
                           tuple[Any, ...]] = {}
        self._overrides: dict[int, tuple[ActionResult, ...]] = {}

    def overrides(self, index: int) -> tuple[ActionResult, ...]:
        """The action results of the override ruleset at `index`, one per choice, in order
        (shared by its responses: they are frozen)."""
        found = self._overrides.get(index)
        if found is None:
            action = self.rulesets[index].action
            found = self._overrides[index] = tuple(
                ActionResult(action.type, choice) for choice in action.choices or ())
        return found

    @property
    def rules(self) -> tuple[tuple[_Rule, ...], ...]:
        if self._rules is None:  # a race only builds the same tuple twice
            self._rules = tuple(
                tuple((r.metric, r.operator.value, r.target_value, wire_value(r.target_value))
                      for r in rs.rules) for rs in self.rulesets)
        return self._rules

    @property
    def wire(self) -> tuple[dict[str, Any], ...]:
        """Shared: never handed to a caller without a copy (`Response.to_dict`)."""
        if self._wire is None:
            self._wire = tuple(ruleset_to_galileo(rs) for rs in self.rulesets)
        return self._wire

    @property
    def json(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """Per ruleset, the JSON text around what a decision fills in: before its status,
        after it up to the rule results, and each rule's text up to its status."""
        if self._json is None:
            self._json = tuple(
                ('{"name": ' + _string(spec.name) + ', "status": "',
                 '", "ruleset": ' + _encode(wire) + ', "rule_results": [',
                 tuple('{"metric": ' + _string(rule[0]) + ', "operator": ' + _string(rule[1])
                       + ', "target_value": ' + _encode(rule[3]) + ', "status": "'
                       for rule in rules))
                for spec, wire, rules in zip(self.rulesets, self.wire, self.rules,
                                             strict=True))
        return self._json

    def template(self, outcomes: Outcomes) -> tuple[list[str], tuple[str, ...]] | None:
        """The `ruleset_results` JSON text of a decision with these outcomes, as the text
        around each reached rule's value (`chunks`, one more than the values) and those rules'
        metrics in order; None when a ruleset ended on a failure (its message is the
        decision's own). A stage's decisions fall into few outcome patterns: each is built
        once (up to a bound). `chunks[1::2]` are placeholders for the values."""
        found = self._templates.get(outcomes, _NO_TEMPLATE)
        if found is not _NO_TEMPLATE:
            return found  # type: ignore[return-value]
        made = self._template(outcomes)
        if len(self._templates) < _TEMPLATES:
            self._templates[outcomes] = made
        return made

    def _template(self, outcomes: Outcomes) -> tuple[list[str], tuple[str, ...]] | None:
        chunks: list[str] = []
        names: list[str] = []
        text = ""
        for i, ((head, middle, rule_heads), rules, outcome) in enumerate(
                zip(self.json, self.rules, outcomes, strict=True)):
            status = outcome_status(outcome)
            if status not in (Status.TRIGGERED, Status.NOT_TRIGGERED, Status.SKIPPED):
                return None
            stop = outcome_stop(outcome, len(rules))
            last = stop - 1 if status is Status.SKIPPED else stop
            text += (", " if i else "") + head + _UPPER[status] + middle
            for j, (rule_head, rule) in enumerate(zip(rule_heads, rules, strict=True)):
                text += ", " if j else ""
                if j > last:
                    text += rule_head + 'SKIPPED", "value": null, "error": null}'
                    continue
                chunks += [text + rule_head + ("TRIGGERED" if j < stop else "NOT_TRIGGERED")
                           + '", "value": ', ""]
                names.append(rule[0])
                text = ', "error": null}'
            text += "]}"
        chunks.append(text)
        return chunks, tuple(names)


    def body(self, outcomes: Outcomes, names: tuple[str, ...], status: Status,
             action: ActionType | None, stage: StageMetadata,
             scored: tuple[bool, ...] | None = None
             ) -> tuple[list[str], tuple[int, ...]] | None:
        """The whole JSON body of a response whose metrics (`names`, in order) all have
        values (none failed), without metadata, headers or error: its text around each value
        (`chunks`, as `template`'s) and, for each reached rule, the index in `names` of its
        metric. `scored` says which metrics came from a scorer (None: all came with the
        payload). The slots (`chunks[1::2]`) take the text, the trace metadata's four
        values, the action's value (if `action`), each reached rule's value and each
        metric's value (followed, for a scored one, by its execution time), all as JSON.
        None where `template` is. Kept by outcomes, names and sources alone (status and
        action follow from the outcomes, and the stage is this one's): hashing the rest
        would cost what the body saves."""
        found = self._bodies.get((outcomes, names, scored))
        if found is not None and found[2] is status and found[3] is action and found[4] is stage:
            return found[:2] if found[0] is not None else None
        made: tuple[list[str], tuple[int, ...]] | None = None
        rulesets = self.template(outcomes)
        if rulesets is not None and set(rulesets[1]) <= set(names):
            # The assembled form (`_head`, `_body`) with a marker in every slot, split there.
            chunks, reached = rulesets
            text = _body(_head(_SLOT, _UPPER[status], _SLOT, _SLOT, _SLOT, _SLOT),
                         "null" if action is None else _action(_string(action.value), _SLOT),
                         _stage_json(stage), _SLOT.join(chunks[::2]),
                         _payload_metrics(names, scored)
                         % ((_SLOT,) * (len(names) + sum(scored or ()))), "null", "null",
                         "null")
            around = text.split(_SLOT)
            body = [""] * (2 * len(around) - 1)
            body[::2] = around
            made = body, tuple(names.index(n) for n in reached)
        if len(self._bodies) < _TEMPLATES:
            self._bodies[(outcomes, names, scored)] = (*(made or (None, None)), status, action,
                                                       stage)
        return made


# A slot in a body built once (`StageResults.body`): never in JSON text, whose encoder
# escapes every control character.
_SLOT = "\x00"


def _head(text: str, status: str, trace_id: str, received: str, responded: str,
          elapsed: str) -> str:
    """The JSON both forms of a response begin with, from its values as JSON, up to the
    trace metadata's last value."""
    return "".join(('{"text": ', text, ', "status": "', status, '", "trace_metadata": {"id": ',
                    trace_id, ', "received_at": ', received, ', "response_at": ', responded,
                    ', "execution_time": ', elapsed))


def _body(head: str, action: str, stage: str, rulesets: str, metrics: str, metadata: str,
          headers: str, error: str) -> str:
    """The rich form from its parts as JSON (`rulesets` and `metrics` without brackets)."""
    return "".join((head, '}, "action_result": ', action, ', "stage_metadata": ', stage,
                    ', "ruleset_results": [', rulesets, '], "metric_results": {', metrics,
                    '}, "metadata": ', metadata, ', "headers": ', headers, ', "error": ',
                    error, "}"))


def _action(type_: str, value: str) -> str:
    return '{"type": ' + type_ + ', "value": ' + value + "}"


def _payload_metrics(names: tuple[str, ...], scored: tuple[bool, ...] | None = None) -> str:
    """`metric_results` of metrics that all have values, a %-format with one slot per value
    and one more per scored metric (`scored`; None: all came with the payload), for its
    execution time."""
    template = _PAYLOAD_METRICS.get((names, scored))
    if template is None:
        template = ", ".join(
            _string(n).replace("%", "%%") + (_SCORED_METRIC if scored and scored[i]
                                             else _PAYLOAD_METRIC)
            for i, n in enumerate(names))
        if len(_PAYLOAD_METRICS) < _TEMPLATES:
            _PAYLOAD_METRICS[(names, scored)] = template
    return template


_NO_TEMPLATE = object()
# metric_results of payloads whose values all came with them, by their metrics' names.
_PAYLOAD_METRICS: dict[tuple[tuple[str, ...], tuple[bool, ...] | None], str] = {}
_PAYLOAD_METRIC = (': {"value": %s, "status": "success", "source": "payload", '
                   '"execution_time": 0.0, "error": null}')
_SCORED_METRIC = (': {"value": %s, "status": "success", "source": "scorer", '
                  '"execution_time": %s, "error": null}')
_TEMPLATES = 4096  # outcome patterns kept per stage


def _rule_rows(rules: tuple[_Rule, ...], outcome: Outcome, values: Mapping[str, object]
               ) -> list[tuple[_Rule, str, object, str | None]]:
    """(rule, status, value, error) per rule of a ruleset that ended with `outcome`. A
    ruleset the decision did not need (scheduling.py) is `skipped` from its stop on."""
    stop = outcome_stop(outcome, len(rules))
    # Skipped at `stop`: rules before it held, it and those after were not reached.
    last = stop - 1 if outcome.__class__ is tuple and outcome[0] is Status.SKIPPED else stop
    rows: list[tuple[_Rule, str, object, str | None]] = []
    for j, rule in enumerate(rules):
        if j > last:
            rows.append((rule, "skipped", None, None))
            continue
        value = values.get(rule[0])
        if isinstance(value, Failure):  # fail open it ended the ruleset; fail closed it held
            rows.append((rule, value.status.value, value, value.message))
        else:
            rows.append((rule, "triggered" if j < stop else "not_triggered", value, None))
    return rows


def _copy(obj: Any) -> Any:
    """A fresh copy of a wire fragment (dicts, lists and scalars only)."""
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


class Response:
    """One decision. `to_dict()`/`model_dump()` give the Galileo wire shape (statuses in
    UPPERCASE); `to_json()` the same as JSON."""

    __slots__ = (
        "_metric_results",
        "_outcomes",
        "_results",
        "_ruleset_results",
        "_statuses",
        "_timings",
        "_trace",
        "_values",
        "action_result",
        "error",
        "headers",
        "metadata",
        "stage_metadata",
        "status",
        "text",
    )

    def __init__(self, text: str, status: Status, trace_metadata: TraceMetadata | Clock,
                 action_result: ActionResult | None, stage_metadata: StageMetadata,
                 metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                 results: StageResults | None = None, outcomes: Outcomes = (),
                 values: dict[str, object] | None = None,
                 timings: dict[str, tuple[float, str]] | None = None,
                 error: str | None = None) -> None:
        self.text = text
        self.error = error  # why the runtime refused to decide (status ERROR), else None
        self.status = status
        # The decision's clock readings until `trace_metadata` is first read (a caller who
        # reads only text and status builds no TraceMetadata, as it draws no id).
        self._trace = trace_metadata
        self.action_result = action_result
        self.stage_metadata = stage_metadata
        self.metadata = metadata
        self.headers = headers
        self._results = results
        self._outcomes = outcomes
        self._statuses: tuple[Status, ...] | None = None
        self._values = values
        # (elapsed, source) of each metric that did not come with the payload: every one a
        # scorer gave, and every failure (Resolution.store); None when all came with it.
        self._timings = timings
        self._ruleset_results: tuple[RulesetResult, ...] | None = None
        self._metric_results: dict[str, MetricResult] | None = None

    @property
    def trace_metadata(self) -> TraceMetadata:
        found = self._trace
        if isinstance(found, TraceMetadata):
            return found
        made = self._trace = TraceMetadata.of(found)
        return made

    def __repr__(self) -> str:
        return (f"Response(status={self.status.value!r}, text={self.text!r}, "
                f"stage={self.stage_metadata.stage_name!r}@v{self.stage_metadata.stage_version})")

    @property
    def ruleset_statuses(self) -> tuple[Status, ...]:
        """One status per ruleset, in priority order (empty when nothing was decided)."""
        if self._statuses is None:
            self._statuses = tuple(outcome_status(o) for o in self._outcomes)
        return self._statuses

    @property
    def ruleset_names(self) -> tuple[str, ...]:
        """The rulesets' names, as `ruleset_statuses` orders them (empty alike)."""
        if self._results is None or not self._outcomes:
            return ()
        return tuple(rs.name for rs in self._results.rulesets)

    @property
    def metric_values(self) -> Mapping[str, object] | None:
        """The metric values the decision had: given, scored, or failures (None when it
        decided nothing)."""
        return self._values

    @property
    def decision_id(self) -> str:
        """The decision's id: its trace id, the key of its decision-log event."""
        return self.trace_metadata.id

    @property
    def winner(self) -> RulesetSpec | None:
        """The ruleset whose action was taken: the first that triggered."""
        if self._results is None or Status.TRIGGERED not in self._outcomes:
            return None
        return self._results.rulesets[self._outcomes.index(Status.TRIGGERED)]

    def _decided(self) -> bool:
        return self._results is not None and self._values is not None and bool(self._outcomes)

    @property
    def ruleset_results(self) -> tuple[RulesetResult, ...]:
        if self._ruleset_results is None:
            self._ruleset_results = self._build_ruleset_results()
        return self._ruleset_results

    def _build_ruleset_results(self) -> tuple[RulesetResult, ...]:
        if not self._decided():
            return ()
        assert self._results is not None and self._values is not None
        shared, values = self._results, self._values
        return tuple(
            RulesetResult(spec.name, outcome_status(outcome), spec, tuple(
                RuleResult(rule[0], rule[1], rule[2], rule_status, value, error)
                for rule, rule_status, value, error in _rule_rows(
                    rules, outcome, values)))
            for spec, rules, outcome in zip(shared.rulesets, shared.rules, self._outcomes,
                                            strict=True))

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

    def _wire_rulesets(self, fresh: bool) -> list[dict[str, Any]]:
        if not self._decided():
            return []
        assert self._results is not None and self._values is not None
        shared, values = self._results, self._values
        return [
            {"name": spec.name, "status": outcome_status(outcome).value.upper(),
             "ruleset": _copy(wire) if fresh else wire,
             "rule_results": [{"metric": rule[0], "operator": rule[1],
                               "target_value": _copy(rule[3]) if fresh else rule[3],
                               "status": rule_status.upper(), "value": _wire_value(value),
                               "error": error}
                              for rule, rule_status, value, error in _rule_rows(
                                  rules, outcome, values)]}
            for spec, rules, wire, outcome in zip(shared.rulesets, shared.rules, shared.wire,
                                                  self._outcomes, strict=True)]

    def _wire(self, fresh: bool, rulesets: bool = True) -> dict[str, Any]:
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
            **({"ruleset_results": self._wire_rulesets(fresh)} if rulesets else {}),
            "metric_results": {n: m.to_dict() for n, m in self.metric_results.items()},
            "metadata": dict(self.metadata) if self.metadata is not None else None,
            "headers": dict(self.headers) if self.headers is not None else None,
            "error": self.error,
        }

    def to_dict(self) -> dict[str, Any]:
        """The wire shape as fresh dicts and lists, the caller's to change."""
        return self._wire(fresh=True)

    model_dump = to_dict

    def to_json(self, **kwargs: Any) -> str:
        """`json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, **kwargs)`, byte
        for byte; without kwargs it is assembled from text encoded once per loaded stage and
        each metric's value encoded once."""
        if kwargs:
            return json.dumps(self._wire(fresh=False), ensure_ascii=False, allow_nan=False,
                              **kwargs)
        values = self._values or {}
        timings = self._timings
        # No failures to write out (a failure always has a timing: Resolution.store).
        plain = not timings or Failure not in map(type, values.values())
        action = self.action_result
        results = self._results
        if (plain and self.metadata is None and self.headers is None and self.error is None
                and results is not None and values and self._outcomes):
            # The common case, one body per outcome pattern (StageResults.body). Without
            # failures, a metric with a timing came from a scorer (Resolution.store).
            scored = tuple(n in timings for n in values) if timings else None
            found = results.body(self._outcomes, tuple(values), self.status,
                                 None if action is None else action.type, self.stage_metadata,
                                 scored)
            if found is not None:
                chunks, reached = found
                encoded_values = _json_values(values.values())
                tm = self.trace_metadata
                slots = [_string(self.text), _string(tm.id), int.__repr__(tm.received_at),
                         int.__repr__(tm.response_at), _number(tm.execution_time),
                         *(() if action is None else (_string(action.value),)),
                         *map(encoded_values.__getitem__, reached)]
                if scored is None:
                    slots += encoded_values
                else:
                    assert timings is not None
                    for name, value, by_scorer in zip(values, encoded_values, scored,
                                                      strict=True):
                        slots.append(value)
                        if by_scorer:
                            slots.append(_number(timings[name][0]))
                filled = chunks.copy()
                filled[1::2] = slots
                return "".join(filled)
        encoded = dict(zip(values, _json_values(values.values()), strict=True))
        return _body(
            self._json_head(),
            "null" if action is None else _action(_string(action.type.value),
                                                  _string(action.value)),
            _stage_json(self.stage_metadata), self._json_rulesets(encoded, plain),
            self._json_metrics(encoded, plain),
            "null" if self.metadata is None else _encode(dict(self.metadata)),
            "null" if self.headers is None else _encode(dict(self.headers)),
            "null" if self.error is None else _string(self.error))

    def _json_metrics(self, encoded: Mapping[str, str], plain: bool) -> str:
        if self._timings is None and plain:  # every value came with the payload
            return _payload_metrics(tuple(encoded)) % tuple(encoded.values())
        timings = self._timings or {}
        parts = []
        for name, value in (self._values or {}).items():
            elapsed, source = timings.get(name, (0.0, "payload"))
            if isinstance(value, Failure):
                status, error = value.status.value, _string(value.message)
            else:
                status, error = "success", "null"
            parts.append(_string(name) + ': {"value": ' + encoded[name] + ', "status": "'
                         + status + '", "source": ' + _string(source) + ', "execution_time": '
                         + _number(elapsed) + ', "error": ' + error + "}")
        return ", ".join(parts)

    def _json_rulesets(self, encoded: Mapping[str, str], plain: bool) -> str:
        if not self._decided():
            return ""
        assert self._results is not None and self._values is not None
        shared, values = self._results, self._values
        if plain:
            found = shared.template(self._outcomes)
            if found is not None:
                chunks, names = found
                filled = chunks.copy()
                filled[1::2] = [encoded[n] for n in names]
                return "".join(filled)
        parts = []
        for (head, middle, rule_heads), rules, outcome in zip(
                shared.json, shared.rules, self._outcomes, strict=True):
            rows = _rule_rows(rules, outcome, values)
            parts.append(
                head + _UPPER[outcome_status(outcome)] + middle
                + ", ".join(
                    rule_head + _UPPER[rule_status] + '", "value": ' + _json_value(value)
                    + ', "error": ' + ("null" if error is None else _string(error)) + "}"
                    for rule_head, (_, rule_status, value, error) in zip(rule_heads, rows,
                                                                         strict=True))
                + "]}")
        return ", ".join(parts)

    def to_json_bytes(self) -> bytes:
        """`to_json()` encoded as UTF-8: the HTTP body and every webhook body."""
        return self.to_json().encode("utf-8")

    def to_plain_dict(self) -> dict[str, Any]:
        """Galileo's plain form: `text`, `status` and `trace_metadata` only (what
        galileo-core's `Response` holds; the rich form adds the per-ruleset and per-metric
        results)."""
        return {"text": self.text, "status": self.status.value.upper(),
                "trace_metadata": self.trace_metadata.to_dict()}

    def to_plain_json(self) -> str:
        """`json.dumps(self.to_plain_dict(), ensure_ascii=False, allow_nan=False)`."""
        return self._json_head() + "}}"

    def _json_head(self) -> str:
        """The JSON both forms begin with: text, status and trace_metadata, up to its last
        value."""
        tm = self.trace_metadata
        return _head(_string(self.text), _UPPER[self.status], _string(tm.id),
                     int.__repr__(tm.received_at), int.__repr__(tm.response_at),
                     _number(tm.execution_time))
