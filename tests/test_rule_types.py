"""The rule typing table agrees with the reference interpreter: an operator fits a metric
kind exactly when some value of that kind and some target of the table's kind make the rule
true, and some make it false; a misfit is never true."""

from __future__ import annotations

import itertools

import pytest

from stageguard.runtime.evaluate import rule_holds
from stageguard.runtime.model import MetricSpec, MetricType, Operator, RuleSpec
from stageguard.runtime.rule_types import (
    RULE_TYPES,
    TARGETS,
    VALID_OPERATORS,
    Fits,
    Misfit,
    Target,
    rule_problem,
    target_of,
)

VALUES: dict[MetricType, list[object]] = {
    MetricType.SCORE: [0.0, 0.3, 0.5, 1.0],
    MetricType.NUMBER: [-2.0, 0.0, 3.0, 10.0],
    MetricType.LABEL: ["a", "b", "c"],
    MetricType.LABELS: [(), ("a",), ("a", "b"), ("c",)],
}
TARGET_SAMPLES: dict[Target, list[object]] = {
    Target.NONE: [None],
    Target.NUMBER: [0.0, 0.5, 3.0],
    Target.LABEL: ["a", "b"],
    Target.LABELS: [(), ("a",), ("a", "b"), ("b", "c")],
}
EVERY_TARGET = [t for samples in TARGET_SAMPLES.values() for t in samples]


@pytest.mark.parametrize(("kind", "op"), sorted(RULE_TYPES, key=str))
def test_table_agrees_with_the_interpreter(kind: MetricType, op: Operator) -> None:
    fit = RULE_TYPES[kind, op]
    if isinstance(fit, Fits):
        outcomes = {rule_holds(op, t, v)
                    for v, t in itertools.product(VALUES[kind], TARGET_SAMPLES[fit.target])}
        assert outcomes == {True, False}, "a fitting rule can both hold and fail"
    else:
        assert not any(rule_holds(op, t, v)
                       for v, t in itertools.product(VALUES[kind], EVERY_TARGET))


def test_derived_views() -> None:
    assert VALID_OPERATORS[MetricType.LABEL] == {Operator.EQ, Operator.NEQ, Operator.ANY}
    assert TARGETS[Operator.EQ] == {Target.NUMBER, Target.LABEL}
    assert TARGETS[Operator.EMPTY] == {Target.NONE}
    assert isinstance(RULE_TYPES[MetricType.LABELS, Operator.EQ], Misfit)
    assert RULE_TYPES[MetricType.LABELS, Operator.EQ].never_matches  # type: ignore[union-attr]
    assert not RULE_TYPES[MetricType.SCORE, Operator.ANY].never_matches  # type: ignore[union-attr]


def test_target_kinds() -> None:
    assert target_of(0) is Target.NUMBER and target_of(0.5) is Target.NUMBER
    assert target_of(True) is None and target_of(float("nan")) is None
    assert target_of(["a"]) is Target.LABELS and target_of(("a", 1)) is None
    assert target_of("x") is Target.LABEL and target_of(None) is Target.NONE


def test_model_validator_and_json_readers_consult_the_table() -> None:
    with pytest.raises(ValueError, match="cannot take target"):
        RuleSpec(metric="m", operator=Operator.CONTAINS, target_value=0.5)
    assert RuleSpec(metric="m", operator=Operator.EQ, target_value="x").target_value == "x"
    labels = MetricSpec(name="tags", type=MetricType.LABELS, labels=("a", "b"))
    score = MetricSpec(name="s", type=MetricType.SCORE, minimum=0.0, maximum=1.0)
    assert "never matches" in (rule_problem(labels, Operator.EQ, "a") or "")
    assert "has no label 'z'" in (rule_problem(labels, Operator.ANY, ["a", "z"]) or "")
    assert "outside the range" in (rule_problem(score, Operator.GT, 2) or "")
    assert "finite number" in (rule_problem(score, Operator.GT, "high") or "")
    assert "(gt, lt, gte, lte, eq, neq)" in (rule_problem(score, Operator.ANY, ["a"]) or "")
    assert rule_problem(labels, Operator.EMPTY, None) is None
