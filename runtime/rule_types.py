"""Which rules are well typed: operator × metric kind → the target the rule takes, or why the
rule cannot be written (docs/semantics.md, "Operators").

This is the one table. The compiler's checker, the runtime's reader of Galileo-shaped
rulesets, the artifact model's validator and the Galileo importer all consult it; each keeps
its own error codes and positions and words the problem for its own input.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from stageguard.runtime.kinds import MetricType, Operator


class Metric(Protocol):
    """What a rule's metric tells about its values (a `model.MetricSpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> MetricType: ...
    @property
    def minimum(self) -> float | None: ...
    @property
    def maximum(self) -> float | None: ...
    @property
    def labels(self) -> Collection[str] | None: ...


class Target(Enum):
    """What a rule's target is."""

    NONE = "no target"
    NUMBER = "a number"
    LABEL = "a label"
    LABELS = "a list of labels"


@dataclass(frozen=True, slots=True)
class Fits:
    target: Target


@dataclass(frozen=True, slots=True)
class Misfit:
    """The operator cannot be used on this kind of metric. `never_matches` marks the one
    misfit users write by mistake and that would silently never fire (equality on a label
    list); the others are plain type errors."""

    never_matches: bool = False


_NUMERIC = (MetricType.SCORE, MetricType.NUMBER)
_COMPARISONS = (Operator.GT, Operator.LT, Operator.GTE, Operator.LTE)


def _table() -> dict[tuple[MetricType, Operator], Fits | Misfit]:
    table: dict[tuple[MetricType, Operator], Fits | Misfit] = {}
    for kind in MetricType:
        for op in Operator:
            table[kind, op] = Misfit()
    for kind in _NUMERIC:
        for op in (*_COMPARISONS, Operator.EQ, Operator.NEQ):
            table[kind, op] = Fits(Target.NUMBER)
    table[MetricType.LABEL, Operator.EQ] = Fits(Target.LABEL)
    table[MetricType.LABEL, Operator.NEQ] = Fits(Target.LABEL)
    table[MetricType.LABEL, Operator.ANY] = Fits(Target.LABELS)
    table[MetricType.LABELS, Operator.CONTAINS] = Fits(Target.LABEL)
    table[MetricType.LABELS, Operator.ANY] = Fits(Target.LABELS)
    table[MetricType.LABELS, Operator.ALL] = Fits(Target.LABELS)
    table[MetricType.LABELS, Operator.EMPTY] = Fits(Target.NONE)
    table[MetricType.LABELS, Operator.NOT_EMPTY] = Fits(Target.NONE)
    table[MetricType.LABELS, Operator.EQ] = Misfit(never_matches=True)
    table[MetricType.LABELS, Operator.NEQ] = Misfit(never_matches=True)
    return table


RULE_TYPES = _table()

# Derived views, for readers that ask one question only.
VALID_OPERATORS: dict[MetricType, frozenset[Operator]] = {
    kind: frozenset(op for op in Operator if isinstance(RULE_TYPES[kind, op], Fits))
    for kind in MetricType}
TARGETS: dict[Operator, frozenset[Target]] = {
    op: frozenset(fit.target for kind in MetricType
                  if isinstance(fit := RULE_TYPES[kind, op], Fits))
    for op in Operator}


def rule_type(kind: MetricType, op: Operator) -> Fits | Misfit:
    return RULE_TYPES[kind, op]


def valid_operators(kind: MetricType) -> list[Operator]:
    """The operators a metric kind takes, in the language's order."""
    return [op for op in Operator if op in VALID_OPERATORS[kind]]


def target_of(value: object) -> Target | None:
    """What kind of target an artifact value is (None: no kind at all). Numbers are finite
    floats or ints, never bools; label lists are lists or tuples of strings."""
    if value is None:
        return Target.NONE
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Target.NUMBER if math.isfinite(value) else None
    if isinstance(value, str):
        return Target.LABEL
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return Target.LABELS
    return None


def rule_problem(spec: Metric, op: Operator, target: object) -> str | None:
    """Why `metric op target` cannot be a rule for this metric, or None when it can: the
    wording of the readers of JSON-shaped rulesets (Galileo's, and the importer)."""
    fit = rule_type(spec.type, op)
    if isinstance(fit, Misfit):
        if fit.never_matches:
            return (f"`{op.value}` on label list `{spec.name}` never matches; use `contains` "
                    "for one label or `any` for several")
        valid = ", ".join(o.value for o in valid_operators(spec.type))
        return f"`{op.value}` does not apply to {spec.type.value} metric `{spec.name}` ({valid})"
    if fit.target is Target.NONE:
        return None if target is None else f"`{op.value}` takes no target_value"
    if target_of(target) is not fit.target:
        if fit.target is Target.NUMBER:
            return f"`{spec.name}` compares with a finite number"
        return f"`{op.value}` compares with {fit.target.value}" + (
            " (a string)" if fit.target is Target.LABEL else "")
    if fit.target is Target.NUMBER:
        assert isinstance(target, int | float)
        if (spec.minimum is not None and target < spec.minimum) or (
                spec.maximum is not None and target > spec.maximum):
            return f"threshold {target} is outside the range of `{spec.name}`"
        return None
    labels = [target] if isinstance(target, str) else list(target)  # type: ignore[call-overload]
    if spec.labels is not None:
        unknown = [t for t in labels if t not in spec.labels]
        if unknown:
            return f"`{spec.name}` has no label {unknown[0]!r}"
    return None


def artifact_target(op: Operator, target: object) -> object:
    """A JSON-shaped target as the artifact holds it: lists become tuples, numbers floats,
    and an operator that takes no target gets none."""
    if TARGETS[op] == {Target.NONE}:
        return None
    if isinstance(target, list | tuple):
        return tuple(target)
    if isinstance(target, int | float) and not isinstance(target, bool):
        return float(target)
    return target
