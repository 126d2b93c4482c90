"""Conformance against galileo-core, Galileo's own models and rule evaluation.

galileo-core comes with the `conformance` extra (scripts/setup.sh installs it); without it
these tests skip and say so."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

protect = pytest.importorskip(
    "galileo_core.schemas.protect",
    reason="galileo-core is not installed (pip install -e '.[conformance]')")
from galileo_core.schemas.protect.response import Response as GalileoResponse  # noqa: E402
from galileo_core.schemas.protect.rule import Rule as GalileoRule  # noqa: E402
from galileo_core.schemas.protect.ruleset import Ruleset as GalileoRuleset  # noqa: E402
from galileo_core.schemas.protect.stage import StageWithRulesets  # noqa: E402

from stageguard.compiler.galileo_interop import export_galileo, import_galileo  # noqa: E402
from stageguard.compiler.pipeline import compile_paths, compile_text  # noqa: E402
from stageguard.runtime.engine import Runtime  # noqa: E402
from stageguard.runtime.evaluate import (  # noqa: E402
    normalise_value,
    reference_decide,
    rule_holds,
    values_getter,
)
from stageguard.runtime.model import Artifact, Operator, StageType, Status  # noqa: E402
from tests.conftest import POLICIES  # noqa: E402
from tests.profiles import examples  # noqa: E402
from tests.strategies import source_of, stage_models  # noqa: E402

EXAMPLES = Path(__file__).parent / "galileo"


def _validate(artifact: Artifact) -> None:
    data, _ = export_galileo(artifact, project_id=str(uuid.uuid4()))
    if artifact.stage.type is StageType.LOCAL:
        rulesets = [GalileoRuleset.model_validate(r) for r in data]  # type: ignore[union-attr]
    else:
        stage = StageWithRulesets.model_validate(data)
        assert stage.name == artifact.stage.name and stage.type.value == "central"
        rulesets = list(stage.rulesets)
    assert len(rulesets) == len(artifact.rulesets)
    for ours, theirs in zip(artifact.rulesets, rulesets, strict=True):
        assert theirs.action.type.value == ours.action.type.value
        assert [(r.metric, r.operator.value, r.target_value) for r in theirs.rules] == [
            (r.metric, r.operator.value,
             list(r.target_value) if isinstance(r.target_value, tuple) else r.target_value)
            for r in ours.rules]
        # pydantic's Url may add a trailing slash to a bare host.
        assert [(str(t.url).rstrip("/"), [x.value for x in t.statuses])
                for t in theirs.action.subscriptions] == [
            (o.url.rstrip("/"), [x.value for x in o.statuses])
            for o in ours.action.subscriptions]

def test_exports_of_the_example_policies_validate() -> None:
    compilation = compile_paths([str(POLICIES)])
    assert compilation.ok
    for doc in compilation.artifacts:
        _validate(doc.to_artifact())


def test_imported_examples_export_to_valid_galileo() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        result = import_galileo(path.read_text(encoding="utf-8"), str(path))
        assert result.ok and result.source is not None
        compiled = compile_text(result.source, "x.sg")
        _validate(compiled.artifacts[0].to_artifact())


@examples(2, suppress_health_check=[HealthCheck.too_slow])
@given(stage_models())
def test_exports_of_generated_stages_validate(stage: object) -> None:
    compiled = compile_text(source_of(stage), "g.sg")  # type: ignore[arg-type]
    assert compiled.ok
    _validate(compiled.artifacts[0].to_artifact())


LABELS = st.sampled_from(["ssn", "email", "joy", "anger", "", "SSN"])
TARGETS = st.one_of(
    st.none(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False), LABELS,
    st.lists(LABELS, max_size=3))
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1.0]), LABELS,
    st.lists(LABELS, max_size=4))


@examples(50,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.sampled_from(list(Operator)), TARGETS, VALUES)
def test_single_rule_evaluation_equals_galileo(op: Operator, target: object,
                                               value: object) -> None:
    theirs = GalileoRule(metric="m", operator=op.value, target_value=target).evaluate(value)
    ours = rule_holds(op, tuple(target) if isinstance(target, list) else target,
                      normalise_value(value))
    assert ours == theirs


def test_responses_parse_as_galileo_responses(tmp_path: Path) -> None:
    compilation = compile_paths([str(POLICIES)])
    runtime = Runtime.from_files(*[_write(tmp_path, d) for d in compilation.artifacts],
                                 deliver_webhooks=False)
    cases = [
        {"output": "my ssn is 078-05-1120", "metrics": {"output_pii": ["ssn"]}},
        {"output": "hello", "metrics": {"output_pii": [], "output_toxicity": 0.1,
                                         "context_adherence": 0.9, "answer_words": 3,
                                         "competitor_mention": 0.0, "output_tone": "joy"}},
        {"output": "hello", "metrics": {"output_pii": []}},  # scorers missing: an error
    ]
    for payload in cases:
        ours = runtime.invoke(payload, "output_guard", metadata={"k": "v"})
        theirs = GalileoResponse.model_validate_json(ours.to_json())
        assert theirs.text == ours.text
        assert theirs.status.value == ours.status.value
        assert theirs.trace_metadata.execution_time >= 0
        assert json.loads(ours.to_json())["status"] == ours.status.value.upper()


def _write(tmp_path: Path, doc: object) -> Path:
    art = doc.to_artifact()  # type: ignore[attr-defined]
    path = tmp_path / f"{art.stage.name}.json"
    path.write_bytes(doc.to_bytes(1))  # type: ignore[attr-defined]
    return path


PII = ["ssn", "email", "phone_number", "password"]
METRIC_VALUES = {
    "output_pii": st.lists(st.sampled_from(PII), max_size=3),
    "input_pii": st.lists(st.sampled_from(PII), max_size=3),
    "prompt_injection": st.lists(st.sampled_from(["impersonation", "new_context"]), max_size=2),
    "output_toxicity": st.sampled_from([0.0, 0.5, 0.50001, 0.8, 0.99, 1.0]),
    "context_adherence": st.sampled_from([0.0, 0.3, 0.31, 1.0]),
    "tool_error_rate": st.sampled_from([0.0, 0.49, 0.5, 1.0]),
    "output_tone": st.sampled_from(["sadness", "fear", "joy"]),
    "intent": st.sampled_from(["destructive", "benign"]),
}


def _galileo_decision(body: object, values: dict[str, object]) -> tuple[str, str | None]:
    """First-match over galileo-core's own Rule.evaluate: the decision Galileo makes."""
    from stageguard.compiler.galileo_interop import metric_name

    items = body if isinstance(body, list) else (  # type: ignore[union-attr]
        body.get("prioritized_rulesets") or body.get("rulesets"))  # type: ignore[union-attr]
    for item in items:
        rs = GalileoRuleset.model_validate(item)
        if all(r.evaluate(values.get(metric_name(r.metric))) for r in rs.rules):
            return "triggered", rs.action.type.value
    return "not_triggered", None


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
@examples(2, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_imported_stages_decide_as_galileo_does(example: str, data: st.DataObject,
                                               tmp_path_factory: pytest.TempPathFactory
                                               ) -> None:
    body = json.loads((EXAMPLES / example).read_text(encoding="utf-8"))
    result = import_galileo(json.dumps(body), example)
    compiled = compile_text(result.source or "", "x.sg")
    doc = compiled.artifacts[0]
    runtime = Runtime.from_files(_write(tmp_path_factory.mktemp("g"), doc),
                                 deliver_webhooks=False)
    values = {m: data.draw(s) for m, s in METRIC_VALUES.items()}
    response = runtime.invoke({"output": "text", "metrics": values},
                              doc.to_artifact().stage.name)
    status, action = _galileo_decision(body, values)
    assert response.status.value == status
    if action is not None:
        assert response.to_dict()["action_result"]["type"] == action


# ---- every rule galileo-core accepts imports with Galileo's truth --------------------------

def _catalog_value(metric: str) -> st.SearchStrategy[object]:
    """Values the catalog lets the metric take: its range (with its ends), its labels."""
    from stageguard.runtime.catalog import BUILTIN_METRICS
    from stageguard.runtime.model import MetricType

    spec = BUILTIN_METRICS[metric]
    if spec.type in (MetricType.SCORE, MetricType.NUMBER):
        low = spec.minimum if spec.minimum is not None else -1e6
        high = spec.maximum if spec.maximum is not None else 1e6
        return st.one_of(st.sampled_from([low, high]), st.floats(low, high))
    labels = st.sampled_from(list(spec.labels or ("a", "b")))
    if spec.type is MetricType.LABEL:
        return labels
    return st.lists(labels, max_size=3, unique=True)


def _catalog_target(metric: str) -> st.SearchStrategy[object]:
    from stageguard.runtime.catalog import BUILTIN_METRICS

    spec = BUILTIN_METRICS[metric]
    words = st.sampled_from([*(spec.labels or ())[:3], "social", "0.5", ""])
    return st.one_of(st.none(), st.sampled_from([-1, 0, 0.5, 1, 1.5, 2, 1e9, -0.5]),
                     st.floats(-3, 3, allow_nan=False), words, st.lists(words, max_size=3))


@examples(5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_rule_galileo_accepts_imports_with_its_truth(data: st.DataObject) -> None:
    from stageguard.runtime.catalog import BUILTIN_METRICS

    metric = data.draw(st.sampled_from(sorted(BUILTIN_METRICS)))
    op = data.draw(st.sampled_from(list(Operator)))
    target = data.draw(_catalog_target(metric))
    try:
        theirs = GalileoRule(metric=metric, operator=op.value, target_value=target)
    except ValueError:
        return  # galileo-core refuses it too
    body = {"name": "s", "prioritized_rulesets": [
        {"rules": [theirs.model_dump(mode="json")],
         "action": {"type": "OVERRIDE", "choices": ["hit"]}}]}
    result = import_galileo(json.dumps(body), "in.json")
    assert result.ok, [d.message for d in result.diagnostics]
    compiled = compile_text(result.source or "", "x.sg")
    assert compiled.ok, [d.message for d in compiled.diagnostics]
    art = compiled.artifacts[0].to_artifact()
    for _ in range(5):
        value = data.draw(_catalog_value(metric))
        ours = reference_decide(art.rulesets, values_getter({metric: normalise_value(value)}),
                                False)
        assert (ours[0] is Status.TRIGGERED) == theirs.evaluate(value), (op, target, value)
