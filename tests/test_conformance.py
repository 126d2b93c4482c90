"""The conformance corpus (tests/conformance/*.json): docs/semantics.md as data.

Every truth-table case is checked against the reference interpreter and the compiled fast
path (and galileo-core's Rule.evaluate when installed); every invocation case is decided by
the runtime from a registry built from the corpus's policy."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.compiler.analysis import StageModel, decide
from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.engine import Runtime
from stageguard.runtime.evaluate import (
    compile_decider,
    normalise_value,
    reference_decide,
    rule_holds,
)
from stageguard.runtime.model import Action, ActionType, Operator, RulesetSpec, RuleSpec, Status
from stageguard.runtime.scorers import Scorers
from tests.profiles import examples
from tests.runtime_helpers import build
from tests.strategies import payloads, source_of, stage_models

CORPUS = Path(__file__).parent / "conformance"
TRUTH = json.loads((CORPUS / "truth_table.json").read_text(encoding="utf-8"))
STATUSES = json.loads((CORPUS / "statuses.json").read_text(encoding="utf-8"))


def _value(raw: object) -> object:
    return float(raw["float"]) if isinstance(raw, dict) else raw  # type: ignore[index]


def _id(case: dict[str, Any]) -> str:
    return f"{case['row']}: {case['operator']} {case['target']!r} on {case['value']!r}"


@pytest.mark.parametrize("case", TRUTH["cases"], ids=_id)
def test_truth_table(case: dict[str, Any]) -> None:
    op = Operator(case["operator"])
    target = tuple(case["target"]) if isinstance(case["target"], list) else case["target"]
    value = normalise_value(_value(case["value"]))
    assert rule_holds(op, target, value) is case["holds"]
    # The generated code must agree, whatever the checker would have made of the rule. Its
    # input is artifact data, where numeric targets are floats (RuleSpec makes them so).
    if isinstance(target, int) and not isinstance(target, bool):
        target = float(target)
    rule = RuleSpec.model_construct(metric="m", operator=op, target_value=target)
    ruleset = RulesetSpec.model_construct(name="r", rules=(rule,),
                                          action=Action(type=ActionType.PASSTHROUGH))
    decide = compile_decider([ruleset], fail_closed=False, codegen=True)
    values = {"m": value} if value is not None else {"m": None}
    assert decide(values, lambda name: None) == ((Status.TRIGGERED,) if case["holds"] else (0,))


def test_truth_table_against_galileo_core() -> None:
    rule_mod = pytest.importorskip("galileo_core.schemas.protect.rule",
                                   reason="galileo-core is not installed")
    for case in TRUTH["cases"]:
        rule = rule_mod.Rule(metric="m", operator=case["operator"],
                             target_value=case["target"])
        assert rule.evaluate(_value(case["value"])) is case["holds"], _id(case)


def test_every_row_of_the_truth_table_is_covered() -> None:
    rows = {c["row"].split(" (")[0] for c in TRUTH["cases"]}
    assert {"number vs number", "label vs string", "label vs list", "list vs string",
            "list vs list", "list vs none", "missing / none: never true",
            "NaN is false for every operator but neq", "no string-number coercion",
            "anything not listed is false"} <= rows
    assert {c["operator"] for c in TRUTH["cases"]} == {o.value for o in Operator}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conformance") / "registry"
    build(path, STATUSES["policy"], "conformance.sg")
    return path


@pytest.mark.parametrize("case", STATUSES["cases"], ids=lambda c: c["rule"])
def test_invocation_rules(case: dict[str, Any], registry: Path) -> None:
    calls: Counter[str] = Counter()
    release = threading.Event()
    scorers = Scorers(entry_point_group=None)
    for metric, how in case.get("scorers", {}).items():
        def scorer(req: object, metric: str = metric, how: dict[str, Any] = how) -> object:
            calls[metric] += 1
            if "raise" in how:
                raise RuntimeError(how["raise"])
            if "hang" in how:
                release.wait(5)
            return how.get("value")
        scorers.register(metric, scorer)
    with Runtime(registry, scorers=scorers, deliver_webhooks=False) as rt:
        if case.get("paused"):
            rt.pause_stage(project="conf", stage_name=case["stage"])
        try:
            r = rt.invoke(case["payload"], case["stage"], timeout=case.get("timeout", 5.0))
        finally:
            release.set()
            if case.get("paused"):
                rt.resume_stage(project="conf", stage_name=case["stage"])
    expect = case["expect"]
    assert r.status.value == expect["status"]
    if "text" in expect:
        assert r.text == expect["text"]
    if "ruleset_statuses" in expect:
        assert [s.value for s in r.ruleset_statuses] == expect["ruleset_statuses"]
    if "winner" in expect:
        first = r.ruleset_statuses.index(Status.TRIGGERED)
        assert r.ruleset_results[first].ruleset.name == expect["winner"]
    if "wire_status" in expect:
        assert json.loads(r.to_json())["status"] == expect["wire_status"]
    for metric, n in expect.get("scorer_calls", {}).items():
        assert calls[metric] == n, metric


@examples(2,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(stage=stage_models(), data=st.data())
def test_interpreter_fast_path_and_invoke_agree(tmp_path: Path, stage: StageModel,
                                                data: st.DataObject) -> None:
    """Generated policies, compiled from source and served: the runtime's invoke, the
    reference interpreter and the analysis's decision agree on generated payloads."""
    compiled = compile_text(source_of(stage), "g.sg")
    assert compiled.ok
    doc = compiled.artifacts[0]
    path = tmp_path / f"{uuid.uuid4().hex}.json"
    path.write_bytes(doc.to_bytes(1))
    with Runtime.from_files(path, deliver_webhooks=False) as rt:
        for payload in data.draw(st.lists(payloads(stage.catalog), min_size=5, max_size=5)):
            metrics = {k: list(v) if isinstance(v, tuple) else v for k, v in payload.items()}
            r = rt.invoke({"output": "text", "metrics": metrics}, "s")
            expected = reference_decide(stage.rulesets, lambda m, p=payload: p.get(m),
                                        stage.fail_closed)
            assert r.ruleset_statuses == expected
            decision = decide(stage, payload)
            assert r.status is decision.status
            if decision.ruleset is not None:
                assert r.ruleset_results[expected.index(Status.TRIGGERED)].ruleset.name == \
                    decision.ruleset
