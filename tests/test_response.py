"""The Response: per-rule results assembled from what the decision computed agree with the
reference interpreter's outcomes, and the wire shape is fresh for every caller."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.runtime.evaluate import (
    FailClosed,
    Failure,
    RuleOutcome,
    compile_decider,
    ruleset_outcome,
    stage_status,
    statuses_of,
    values_getter,
)
from stageguard.runtime.model import Action, ActionType, Operator, RulesetSpec, RuleSpec, Status
from stageguard.runtime.response import Response, StageMetadata, StageResults, TraceMetadata
from tests.profiles import examples
from tests.strategies import METRICS, fail_modes, metric_values, ruleset_lists

_META = StageMetadata("p", "s", "id", 1, "central")


def _response(rulesets: list[RulesetSpec], values: dict[str, object],
              fail_closed: FailClosed) -> Response:
    outcomes = compile_decider(rulesets, fail_closed)(
        values, lambda name: values.setdefault(name, Failure(Status.ERROR, "no value")))
    # As the runtime records them (Resolution.store): every failure has a timing.
    timings = {n: (0.0, "none") for n, v in values.items() if isinstance(v, Failure)}
    return Response("t", stage_status(statuses_of(outcomes)), TraceMetadata("x", 1, 2, 0.0),
                    None, _META, None, None, StageResults(tuple(rulesets)), outcomes, values,
                    timings or None)


def _reference_status(outcome: RuleOutcome) -> str:
    if not outcome.evaluated:
        return "skipped"
    if outcome.failure is not None:
        return outcome.failure.status.value
    return "triggered" if outcome.holds else "not_triggered"


@examples(4, suppress_health_check=[HealthCheck.too_slow])
@given(ruleset_lists(), st.fixed_dictionaries({m: metric_values for m in METRICS}),
       fail_modes)
def test_rule_results_equal_the_reference_interpreter(rulesets: list[RulesetSpec],
                                                      raw: dict[str, object],
                                                      fail_closed: FailClosed) -> None:
    values = {k: v for k, v in raw.items() if v != "absent"}
    response = _response(rulesets, values, fail_closed)
    get = values_getter(values)  # every metric a reached rule needs is in `values` now
    for spec, result in zip(rulesets, response.ruleset_results, strict=True):
        status, outcomes = ruleset_outcome(spec.rules, get, fail_closed)
        assert result.status is status and result.name == spec.name
        assert [r.status for r in result.rule_results] == [_reference_status(o)
                                                           for o in outcomes]
        for rule, r, o in zip(spec.rules, result.rule_results, outcomes, strict=True):
            assert (r.metric, r.operator, r.target_value) == (
                rule.metric, rule.operator.value, rule.target_value)
            assert r.value is (values.get(rule.metric) if o.evaluated else None)
            assert r.error == (o.failure.message if o.failure else None)
    # The wire shape says the same, and to_json is to_dict encoded.
    wire = response.to_dict()
    assert [[x["status"] for x in rs["rule_results"]] for rs in wire["ruleset_results"]] == [
        [r.status.upper() for r in rs.rule_results] for rs in response.ruleset_results]
    # Byte for byte what json.dumps makes of to_dict(), though its fixed text is pre-encoded.
    assert response.to_json() == json.dumps(wire, ensure_ascii=False, allow_nan=False)
    assert response.to_json(indent=1) == json.dumps(wire, ensure_ascii=False, allow_nan=False,
                                                    indent=1)


def test_to_dict_is_the_callers_to_change() -> None:
    from stageguard.runtime.model import Action, ActionType, Operator, RuleSpec

    rs = [RulesetSpec(name="a", rules=(RuleSpec(metric="m", operator=Operator.ANY,
                                                target_value=("x", "y")),),
                      action=Action(type=ActionType.OVERRIDE, choices=("no",)))]
    response = _response(rs, {"m": "x"}, False)
    first = response.to_dict()
    first["ruleset_results"][0]["ruleset"]["rules"][0]["target_value"].append("z")
    first["ruleset_results"][0]["ruleset"]["action"]["choices"].clear()
    first["ruleset_results"][0]["rule_results"][0]["target_value"].append("z")
    again = response.to_dict()
    assert again["ruleset_results"][0]["ruleset"]["rules"][0]["target_value"] == ["x", "y"]
    assert again["ruleset_results"][0]["ruleset"]["action"]["choices"] == ["no"]
    assert again["ruleset_results"][0]["rule_results"][0]["target_value"] == ["x", "y"]
    assert json.loads(response.to_json()) == again
    # Another response of the same stage shares nothing a caller could have changed.
    assert _response(rs, {"m": "x"}, False).to_dict()["ruleset_results"] == \
        again["ruleset_results"]


def test_winner_is_the_first_triggered_ruleset() -> None:
    from stageguard.runtime.model import Action, ActionType, Operator, RuleSpec

    def ruleset(name: str, target: float) -> RulesetSpec:
        return RulesetSpec(name=name, rules=(RuleSpec(metric="m", operator=Operator.GT,
                                                      target_value=target),),
                           action=Action(type=ActionType.PASSTHROUGH))

    rs = [ruleset("high", 0.9), ruleset("mid", 0.5), ruleset("low", 0.1)]
    assert _response(rs, {"m": 0.6}, False).winner == rs[1]
    assert _response(rs, {"m": 0.05}, False).winner is None


def test_to_json_equals_json_dumps_through_the_runtime(tmp_path) -> None:
    import random

    from stageguard.runtime.engine import Runtime
    from tests.runtime_helpers import build
    from tests.test_runtime import STAGE

    build(tmp_path / "reg", STAGE)
    with Runtime(tmp_path / "reg", rng=random.Random(7)) as rt:
        responses = [
            rt.invoke({"output": "x", "metrics": {"a": 0.9, "b": 0.1, "tone2": "angry"}}, "s",
                      metadata={"user": "ü \"1\""}, headers={"x-req": "9\n"}),
            rt.invoke({"output": "x", "metrics": {"a": 0.2, "b": 0.1, "tone2": "calm"}}, "s"),
            # the one-format path (no metadata): a triggered action, and text with %
            rt.invoke({"output": '50% "ü" %s', "metrics": {"a": 0.9, "b": 0.1, "tone2": "angry"}},
                      "s"),
            rt.invoke({"output": "x"}, "empty_local"),  # skipped: nothing decided
        ]
        rt.pause_stage(project="p", stage_name="s")
        responses.append(rt.invoke({"output": "x", "metrics": {"a": 0.9}}, "s"))
    assert [r.status for r in responses] == [Status.TRIGGERED, Status.NOT_TRIGGERED,
                                             Status.TRIGGERED, Status.SKIPPED, Status.PAUSED]
    assert responses[2].action_result is not None
    for r in responses:
        assert r.to_json() == json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False)
        assert r.to_json_bytes() == r.to_json().encode()
        assert r.to_plain_json() == json.dumps(r.to_plain_dict(), ensure_ascii=False,
                                               allow_nan=False)
        assert r.to_plain_dict() == {k: r.to_dict()[k] for k in ("text", "status",
                                                                  "trace_metadata")}


def test_a_scored_response_is_written_as_to_dict_says(tmp_path) -> None:
    """Scored metrics (source, execution time) in the one-body form, and a failure in the
    general form: both byte for byte json.dumps of to_dict."""
    import random

    from stageguard.runtime.engine import Runtime
    from stageguard.runtime.scorers import Scorers
    from tests.runtime_helpers import build
    from tests.test_runtime import STAGE

    build(tmp_path / "reg", STAGE)
    scorers = Scorers(entry_point_group=None)
    scorers.register("b", lambda req: 0.7 if req.output == "high" else 0.1)
    scorers.register("tone2", lambda req: 1 / 0)
    with Runtime(tmp_path / "reg", rng=random.Random(7), scorers=scorers) as rt:
        responses = [rt.invoke({"output": text, "metrics": metrics}, "s") for text, metrics in (
            ("low", {"a": 0.05}),  # b scored: nothing triggers
            ("high", {"a": 0.05}),  # b scored: `second` triggers
            ("x", {"a": 0.3, "b": 0.1}),  # tone2's scorer fails
        )]
    sources = [{n: m.source for n, m in r.metric_results.items()} for r in responses]
    assert sources[:2] == [{"a": "payload", "b": "scorer"}] * 2
    assert responses[2].metric_results["tone2"].status == "failed"
    assert [r.status for r in responses] == [Status.NOT_TRIGGERED, Status.TRIGGERED,
                                             Status.FAILED]  # tone2 failed, nothing won
    for r in responses:
        assert r.metric_results["a"].execution_time == 0.0
        assert r.to_json() == json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False)
    assert responses[0].metric_results["b"].execution_time > 0


# Where float.__repr__ changes notation, and the floats on either side of each edge.
_EDGES = [e for x in (1e-4, 1e16, 1e-5, 1e22) for e in (x, math.nextafter(x, 0),
                                                     math.nextafter(x, math.inf))]
_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [*_EDGES, *(-e for e in _EDGES), 0.0, -0.0, 5e-324, 1.7976931348623157e308])


@examples(5)
@given(st.lists(_floats, min_size=1, max_size=3), st.lists(_floats, min_size=1, max_size=3))
def test_floats_are_written_as_json_dumps_writes_them(values: list[float],
                                                      elapsed: list[float]) -> None:
    """Values and durations take the one-body path (a decided response, no failures, no
    metadata), where scores are written by orjson and durations kept as text; each must be
    what json.dumps writes, whatever was written before it (-0.0 after 0.0 included)."""
    rs = [RulesetSpec(name="r", rules=tuple(
        RuleSpec(metric=f"m{i}", operator=Operator.GT, target_value=0.5)
        for i in range(len(values))), action=Action(type=ActionType.PASSTHROUGH))]
    metrics: dict[str, object] = {f"m{i}": v for i, v in enumerate(values)}
    for seconds in elapsed:
        outcomes = compile_decider(rs, False)(dict(metrics), lambda name: None)
        response = Response("t", stage_status(statuses_of(outcomes)),
                            TraceMetadata("x", 1, 2, seconds), None, _META, None, None,
                            StageResults(tuple(rs)), outcomes, dict(metrics))
        assert response.to_json() == json.dumps(response.to_dict(), ensure_ascii=False,
                                                allow_nan=False)
