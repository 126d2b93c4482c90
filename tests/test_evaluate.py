"""The evaluator: docs/semantics.md's truth table, and fast path == reference interpreter."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.runtime.evaluate import (
    FailClosed,
    Failure,
    InvalidValue,
    compile_decider,
    compile_precomputed,
    normalise_value,
    outcomes_status,
    reference_decide,
    reference_outcomes,
    rule_holds,
    stage_status,
    statuses_of,
    values_getter,
)
from stageguard.runtime.model import (
    Action,
    ActionType,
    Operator,
    RulesetSpec,
    RuleSpec,
    Status,
)
from tests.profiles import examples
from tests.strategies import METRICS, fail_modes, metric_values, ruleset_lists

Op = Operator
NAN = float("nan")


# One test per row of docs/semantics.md's truth table; each asserts the true cases and a false one.
def test_truth_number_vs_number() -> None:
    assert rule_holds(Op.GT, 0.5, 0.6) and not rule_holds(Op.GT, 0.5, 0.5)
    assert rule_holds(Op.LT, 0.5, 0.4) and not rule_holds(Op.LT, 0.5, 0.5)
    assert rule_holds(Op.GTE, 0.5, 0.5) and not rule_holds(Op.GTE, 0.5, 0.4)
    assert rule_holds(Op.LTE, 0.5, 0.5) and not rule_holds(Op.LTE, 0.5, 0.6)
    assert rule_holds(Op.EQ, 0.5, 0.5) and not rule_holds(Op.EQ, 0.5, 0.6)
    assert rule_holds(Op.NEQ, 0.5, 0.6) and not rule_holds(Op.NEQ, 0.5, 0.5)
    assert rule_holds(Op.GT, 1.0, 2)  # ints are numbers


def test_truth_label_vs_string() -> None:
    assert rule_holds(Op.EQ, "joy", "joy") and not rule_holds(Op.EQ, "joy", "Joy")  # case
    assert rule_holds(Op.NEQ, "joy", "fear") and not rule_holds(Op.NEQ, "joy", "joy")


def test_truth_label_vs_list() -> None:
    assert rule_holds(Op.ANY, ("joy", "love"), "love")
    assert not rule_holds(Op.ANY, ("joy", "love"), "fear")
    assert not rule_holds(Op.ANY, (), "joy")


def test_truth_list_vs_string() -> None:
    assert rule_holds(Op.CONTAINS, "ssn", ("email", "ssn"))
    assert not rule_holds(Op.CONTAINS, "ssn", ("email",))


def test_truth_list_vs_list() -> None:
    assert rule_holds(Op.ALL, ("ssn", "email"), ("email", "ssn", "name"))
    assert not rule_holds(Op.ALL, ("ssn", "email"), ("email",))
    assert rule_holds(Op.ALL, (), ())  # empty target => true
    assert rule_holds(Op.ANY, ("ssn", "email"), ("email",))
    assert not rule_holds(Op.ANY, ("ssn",), ("email",))
    assert not rule_holds(Op.ANY, (), ("email",))  # empty target => false


def test_truth_list_vs_none() -> None:
    assert rule_holds(Op.EMPTY, None, ()) and not rule_holds(Op.EMPTY, None, ("ssn",))
    assert rule_holds(Op.NOT_EMPTY, None, ("ssn",)) and not rule_holds(Op.NOT_EMPTY, None, ())


@pytest.mark.parametrize("op", list(Operator))
def test_truth_missing_value_is_never_true(op: Operator) -> None:
    for target in (0.5, "x", ("x",), None):
        assert not rule_holds(op, target, None)


@pytest.mark.parametrize("op", list(Operator))
def test_truth_nan_is_false_but_for_neq(op: Operator) -> None:
    assert rule_holds(op, 0.5, NAN) is (op is Operator.NEQ)


def test_truth_no_string_number_coercion() -> None:
    assert not rule_holds(Op.EQ, 0.5, "0.5")
    assert not rule_holds(Op.EQ, "0.5", 0.5)
    assert not rule_holds(Op.GT, 0.5, "0.9")


def test_truth_equality_on_a_list_is_false() -> None:
    # Galileo's code never matches eq/neq on a list (its docs suggest otherwise).
    assert not rule_holds(Op.EQ, "ssn", ("ssn",))
    assert not rule_holds(Op.NEQ, "ssn", ("email",))


def test_truth_everything_else_is_false() -> None:
    assert not rule_holds(Op.CONTAINS, "j", "joy")  # contains on a single label
    assert not rule_holds(Op.ALL, ("joy",), "joy")
    assert not rule_holds(Op.EMPTY, None, "")
    assert not rule_holds(Op.GT, 0.5, ("x",))


def test_bool_counts_as_a_number_like_galileo() -> None:
    assert rule_holds(Op.GT, 0.5, True) and not rule_holds(Op.GT, 0.5, False)


def test_normalise_value() -> None:
    assert normalise_value(["a", "b"]) == ("a", "b")
    assert normalise_value(None) is None
    assert type(normalise_value(True)) is bool
    with pytest.raises(InvalidValue):
        normalise_value({"a": 1})
    with pytest.raises(InvalidValue):
        normalise_value(["a", 1])

    class MyFloat(float):
        pass

    assert type(normalise_value(MyFloat(0.5))) is float


def test_stage_status_precedence() -> None:
    T, NT, TO, F, E = (Status.TRIGGERED, Status.NOT_TRIGGERED, Status.TIMEOUT, Status.FAILED,
                       Status.ERROR)
    assert stage_status([NT, E, T]) is T
    assert stage_status([E, F, TO]) is TO
    assert stage_status([E, F, NT]) is F
    assert stage_status([NT, E]) is E
    assert stage_status([NT, NT]) is NT


# ---- fast path == reference interpreter ------------------------------------------------------

@examples(6, suppress_health_check=[HealthCheck.too_slow])
@given(ruleset_lists(), st.lists(st.fixed_dictionaries({m: metric_values for m in METRICS}),
                                 min_size=5, max_size=5), fail_modes)
def test_fast_path_equals_reference(rulesets: list[RulesetSpec],
                                    payloads: list[dict[str, object]],
                                    fail_closed: FailClosed) -> None:
    # 600 stages x 5 payloads x 5 evaluators (generated in one function and in chunks of
    # two rulesets, closures, precomputed in one function and in chunks) per CI run; each
    # evaluator is built once per stage, as a served stage's is.
    deciders = [compile_decider(rulesets, fail_closed, codegen=codegen, chunk=chunk)
                for codegen, chunk in ((True, 128), (True, 2), (False, 128))]
    quicks = [compile_precomputed(rulesets, chunk=chunk) for chunk in (128, 2)]
    used = {r.metric for rs in rulesets for r in rs.rules}
    for raw in payloads:
        present = {k: v for k, v in raw.items() if v != "absent"}
        expected = reference_outcomes(rulesets, values_getter(present), fail_closed)
        assert statuses_of(expected) == reference_decide(rulesets, values_getter(present),
                                                         fail_closed)
        assert outcomes_status(expected) is stage_status(statuses_of(expected))
        for decide in deciders:
            values = dict(present)
            resolved: list[str] = []

            def resolve(name: str, values=values, resolved=resolved) -> object:
                resolved.append(name)
                values[name] = Failure(Status.ERROR, "no value")
                return values[name]

            assert decide(values, resolve) == expected
            assert len(resolved) == len(set(resolved))  # each metric resolved at most once
            assert set(resolved) <= set(METRICS) - set(present)
        # The precomputed path answers exactly when every metric came with the payload
        # (such values are never Failures), and equals the reference then.
        payload_only = {k: v for k, v in present.items() if not isinstance(v, Failure)}
        for quick in quicks:
            assert quick is not None
            got = quick(dict(payload_only))
            if used <= payload_only.keys():
                assert got == reference_outcomes(rulesets, values_getter(payload_only),
                                                 fail_closed)
            else:
                assert got is None


def test_fast_path_resolves_only_what_rules_reach() -> None:
    rs = [RulesetSpec(name="a", rules=(RuleSpec(metric="m_num", operator=Op.GT, target_value=0.5),
                                       RuleSpec(metric="m_list", operator=Op.EMPTY)),
                      action=Action(type=ActionType.PASSTHROUGH))]
    for codegen in (True, False):
        calls: list[str] = []

        def resolve(name: str, calls=calls) -> object:
            calls.append(name)
            return ()

        decide = compile_decider(rs, False, codegen=codegen)
        assert decide({"m_num": 0.1}, resolve) == (0,)  # rule 0 was false
        assert calls == []  # the first rule is false: the second metric is never computed
        assert decide({"m_num": 0.9}, resolve) == (Status.TRIGGERED,)
        assert calls == ["m_list"]


def test_large_stages_agree_across_evaluators() -> None:
    # 1,300 rulesets: the default picks closures; forced codegen splits into chunks.
    rs = [RulesetSpec(name=f"r{i}", rules=(RuleSpec(metric="m", operator=Op.GT,
                                                    target_value=i / 2000),),
                      action=Action(type=ActionType.PASSTHROUGH)) for i in range(1300)]
    expected = reference_outcomes(rs, values_getter({"m": 0.3}), False)
    assert statuses_of(expected).index(Status.NOT_TRIGGERED) == 600
    assert expected[:601] == (Status.TRIGGERED,) * 600 + (0,)
    for codegen in (None, True, False):
        assert compile_decider(rs, False, codegen=codegen)({"m": 0.3}, lambda n: None) == expected


def test_generated_source_holds_no_artifact_text() -> None:
    # Labels and metric names reach the generated function by reference only: a hostile
    # label cannot become code.
    evil = '"); import os; os.system("echo pwned"); ("'
    rs = [RulesetSpec(name="a", rules=(RuleSpec(metric="m", operator=Op.EQ, target_value=evil),),
                      action=Action(type=ActionType.PASSTHROUGH))]
    assert compile_decider(rs, False, codegen=True)({"m": evil}, lambda n: None) == (
        Status.TRIGGERED,)


@pytest.mark.parametrize("length", [31, 33, 1_000])
def test_long_rulesets_on_the_precomputed_path(length: int) -> None:
    # Short rulesets become one nested expression; a stage with a longer one gets flat
    # statements. Both must say which rule was false, as the reference does.
    rules = tuple(RuleSpec(metric=f"m{j % 7}", operator=Op.GT, target_value=j / length)
                  for j in range(length))
    rs = [RulesetSpec(name="long", rules=rules, action=Action(type=ActionType.PASSTHROUGH)),
          RulesetSpec(name="short", rules=rules[:2], action=Action(type=ActionType.PASSTHROUGH))]
    quick = compile_precomputed(rs)
    assert quick is not None
    for high in (0.0, 0.5, 0.9, 1.0):
        values = {f"m{j}": high for j in range(7)}
        assert quick(values) == reference_outcomes(rs, values_getter(values), False)


# ---- fail closed: what docs/semantics.md rule 6 says, over generated stages --------------------

@examples(5, suppress_health_check=[HealthCheck.too_slow])
@given(ruleset_lists(), st.fixed_dictionaries({m: metric_values for m in METRICS}))
def test_fail_closed_triggers_exactly_when_every_had_rule_holds(
        rulesets: list[RulesetSpec], raw: dict[str, object]) -> None:
    values = {k: v for k, v in raw.items() if v != "absent"}
    got = statuses_of(compile_decider(rulesets, True)(
        values, lambda name: values.setdefault(name, Failure(Status.ERROR, "no value"))))
    for rs, status in zip(rulesets, got, strict=True):
        # The definition, written without the interpreter: a failed metric's rules hold,
        # every other rule holds by the truth table.
        expected = all(isinstance(values[r.metric], Failure)
                       or rule_holds(r.operator, r.target_value, values[r.metric])
                       for r in rs.rules)
        assert status is (Status.TRIGGERED if expected else Status.NOT_TRIGGERED)


@examples(5, suppress_health_check=[HealthCheck.too_slow])
@given(ruleset_lists(), st.fixed_dictionaries({m: metric_values for m in METRICS}),
       st.fixed_dictionaries({m: metric_values for m in METRICS}))
def test_fail_closed_is_never_less_strict_than_a_value_the_metric_could_have(
        rulesets: list[RulesetSpec], raw: dict[str, object],
        instead: dict[str, object]) -> None:
    values = {k: v for k, v in raw.items() if v != "absent"}
    with_failures = reference_decide(rulesets, values_getter(values), True)
    # Every failed metric given some concrete value instead (absent stays absent).
    had = {k: (instead[k] if isinstance(v, Failure) and not isinstance(instead[k], Failure)
               and instead[k] != "absent" else v) for k, v in values.items()}
    with_values = reference_decide(rulesets, values_getter(had), True)
    for failed, concrete in zip(with_failures, with_values, strict=True):
        if concrete is Status.TRIGGERED:
            assert failed is Status.TRIGGERED
