"""Galileo JSON import and export: faithful, or a diagnostic; never a silent change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given

from stageguard.cli import main
from stageguard.compiler.analysis import StageModel
from stageguard.compiler.diff import behaviour
from stageguard.compiler.galileo_interop import (
    AMBIGUOUS_METRIC,
    BAD_INPUT,
    CUSTOM_METRIC,
    DROPPED,
    export_galileo,
    import_galileo,
    metric_name,
)
from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.model import ActionType, MetricType, Operator, Status
from tests.profiles import examples
from tests.strategies import source_of, stage_models

EXAMPLES = Path(__file__).parent / "galileo"


@pytest.mark.parametrize(("written", "name"), [
    ("output_pii", "output_pii"), ("pii", "output_pii"), ("Output PII", "output_pii"),
    ("PII", "output_pii"), ("Input PII", "input_pii"), ("toxicity", "output_toxicity"),
    ("Input Toxicity", "input_toxicity"), ("Context Adherence (Luna)", "context_adherence"),
    ("adherence_nli", "context_adherence"), ("Prompt Injection", "prompt_injection"),
    ("Tone", "output_tone"), ("Input Sexism", "input_sexist"), ("sexist", "output_sexist"),
    ("Tool Error Rate", "tool_error_rate"), ("Brand Risk", "brand_risk"),
    ("3rd party", "m_3rd_party"),
])
def test_metric_spellings(written: str, name: str) -> None:
    assert metric_name(written) == name


def _import(path: Path, **kw: str) -> tuple[str, list[str], StageModel]:
    result = import_galileo(path.read_text(encoding="utf-8"), str(path), **kw)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.source is not None
    compiled = compile_text(result.source, "imported.sg")
    assert compiled.ok
    art = compiled.artifacts[0].to_artifact()
    return result.source, [d.code for d in result.diagnostics], StageModel.of(art)


def test_semantics_examples_import_faithfully() -> None:
    source, codes, stage = _import(EXAMPLES / "semantics_examples.json")
    # `rulesets` is ignored because `prioritized_rulesets` is present (the first wins).
    assert codes == [DROPPED]
    assert [r.name for r in stage.rulesets] == ["pii_in_the_answer", "toxic_answer",
                                                 "ruleset_3", "quiet_sadness"]
    first, second, third, fourth = stage.rulesets
    assert first.rules[0].metric == "output_pii" and first.action.type is ActionType.OVERRIDE
    assert first.action.subscriptions[0].statuses == (Status.TRIGGERED,)  # the default
    assert second.rules[0].metric == "output_toxicity"
    assert third.action.type is ActionType.PASSTHROUGH  # null action
    assert third.rules[1].operator is Operator.NOT_EMPTY and third.rules[1].target_value is None
    assert fourth.action.type is ActionType.PASSTHROUGH  # {} action
    assert [r.metric for r in fourth.rules] == ["output_tone", "context_adherence", "output_pii"]
    assert 'when output_pii contains "ssn"' in source and "fail" not in source


def test_an_invoke_request_imports_with_its_custom_metric_declared() -> None:
    source, codes, stage = _import(EXAMPLES / "agent_local_invoke.json")
    assert codes.count(CUSTOM_METRIC) == 1 and DROPPED in codes  # timeout, metadata, payload
    assert "project agents" in source and "stage tool_guard" in source
    assert "metric intent {\n  type label" in source
    assert stage.catalog["intent"].type is MetricType.LABEL
    hook = stage.rulesets[1].action.subscriptions[0]
    assert hook.statuses == (Status.TRIGGERED, Status.TIMEOUT)


def test_upper_case_subscription_statuses_are_read_with_a_warning() -> None:
    body = [{"rules": [{"metric": "pii", "operator": "not_empty"}], "action": {
        "type": "PASSTHROUGH", "subscriptions": [{"url": "https://h.example.com",
                                                  "statuses": ["TIMEOUT"]}]}}]
    result = import_galileo(json.dumps(body), "in.json", stage="s")
    assert result.ok and result.rulesets[0].action.subscriptions[0].statuses == (
        Status.TIMEOUT,)
    assert any("lower case" in d.message for d in result.diagnostics)


@pytest.mark.parametrize(("rule", "code", "words"), [
    ({"metric": "toxicity", "operator": "between", "target_value": 1}, BAD_INPUT,
     "unknown operator"),
    ({"metric": "toxicity", "operator": "gt"}, BAD_INPUT, "required"),
])
def test_malformed_rules_are_errors_at_their_json_path(rule: dict, code: str,  # type: ignore[type-arg]
                                                       words: str) -> None:
    text = json.dumps({"name": "s", "prioritized_rulesets": [{"rules": [rule]}]}, indent=2)
    result = import_galileo(text, "in.json")
    assert not result.ok
    (d,) = [d for d in result.diagnostics if d.is_error]
    assert d.code == code and words in d.message
    assert d.message.startswith("prioritized_rulesets[0].rules[0]")
    # {, "name", "prioritized_rulesets": [, {, "rules": [, then the rule from line 6: the
    # span is the rule, or the very field at fault.
    rule_text = text[text.index("{", text.index('"rules"')):]
    assert rule_text.startswith(text[d.span.start:d.span.end]) or d.message.split(":")[
        0].endswith((".operator", ".target_value"))
    assert 6 <= d.span.line <= 9


@pytest.mark.parametrize(("rule", "truth", "written"), [
    # Rules stageguard would not write, but Galileo accepts and evaluates the same way for
    # every value of the metric: imported with that truth, and a warning saying it.
    ({"metric": "output_pii", "operator": "eq", "target_value": "ssn"}, "never true",
     "output_pii any []"),
    ({"metric": "pii", "operator": "contains", "target_value": "social"}, "never true",
     "output_pii any []"),
    ({"metric": "toxicity", "operator": "gt", "target_value": 1.5}, "never true",
     "output_toxicity > 1"),
    ({"metric": "context_adherence", "operator": "lte", "target_value": 1.5}, "always true",
     "context_adherence >= 0"),
    ({"metric": "input_tone", "operator": "neq", "target_value": "0.5"}, "always true",
     "input_tone any ["),
    ({"metric": "toxicity", "operator": "gt", "target_value": "high"}, "never true",
     "output_toxicity > 1"),
    ({"metric": "output_pii", "operator": "empty", "target_value": ["ssn"]}, "never true",
     "output_pii any []"),
    ({"metric": "output_pii", "operator": "any", "target_value": ["ssn", "social"]},
     "never match", "output_pii any [\"ssn\"]"),
])
def test_rules_galileo_evaluates_uniformly_are_imported_with_that_truth(
        rule: dict, truth: str, written: str) -> None:  # type: ignore[type-arg]
    text = json.dumps({"name": "s", "prioritized_rulesets": [{"rules": [rule]}]}, indent=2)
    result = import_galileo(text, "in.json")
    assert result.ok, [d.message for d in result.diagnostics]
    (d,) = [d for d in result.diagnostics if d.code == "SG0906"]
    assert truth in d.message and d.message.startswith("prioritized_rulesets[0].rules[0]")
    assert written in (result.source or "")


def test_a_custom_metric_used_two_ways_is_an_error() -> None:
    body = [{"rules": [{"metric": "risk", "operator": "gt", "target_value": 1}]},
            {"rules": [{"metric": "risk", "operator": "eq", "target_value": "high"}]}]
    result = import_galileo(json.dumps(body), "in.json", stage="s")
    assert [d.code for d in result.diagnostics if d.is_error] == [AMBIGUOUS_METRIC]


def test_bad_json_points_at_the_error() -> None:
    result = import_galileo('{"name": "s",\n "rulesets": [}', "in.json")
    (d,) = result.diagnostics
    assert d.code == BAD_INPUT and (d.span.line, d.span.column) == (2, 15)
    assert not import_galileo('"text"', "in.json").ok


@examples(1.5, suppress_health_check=[HealthCheck.too_slow])
@given(stage_models())
def test_export_then_import_keeps_behaviour(stage: StageModel) -> None:
    compiled = compile_text(source_of(stage), "g.sg")
    assert compiled.ok
    artifact = compiled.artifacts[0].to_artifact()
    for names in (True, False):
        body, _ = export_galileo(artifact, names=names)
        result = import_galileo(json.dumps(body), "export.json", stage="s")
        assert result.ok, [d.message for d in result.diagnostics]
        assert [r.rules for r in result.rulesets] == [r.rules for r in artifact.rulesets]
        assert [r.action for r in result.rulesets] == [r.action for r in artifact.rulesets]
        back = StageModel("s", result.rulesets, {m.name: m for m in result.metrics})
        original = StageModel.of(artifact)
        rename = {b.name: a.name for a, b in zip(original.rulesets, back.rulesets, strict=True)}
        if stage.fail_closed:  # Galileo has no fail-closed: compare the fail-open meaning
            original = StageModel(original.name, original.rulesets, original.catalog, False)
        assert behaviour(original, back, rename)[1] == []  # proved equal, failures included
        if names:
            assert [r.name for r in back.rulesets] == [r.name for r in artifact.rulesets]


def test_cli_import_build_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policies" / "imported.sg"
    out.parent.mkdir()
    assert main(["import", "galileo", str(EXAMPLES / "semantics_examples.json"),
                 "--project", "support", "--output", str(out)]) == 0
    assert main(["fmt", "--check", str(out)]) == 0
    assert main(["build", str(out.parent), "--registry", str(tmp_path / "reg")]) == 0
    capsys.readouterr()
    assert main(["export", "galileo", "support_output", "--registry", str(tmp_path / "reg"),
                 "--project-id", "8f1c4fd5-4a42-4b4a-9d0e-0d3c0f2a6b11"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["type"] == "central" and len(body["prioritized_rulesets"]) == 4
    assert body["prioritized_rulesets"][0]["rules"][0] == {
        "metric": "output_pii", "operator": "contains", "target_value": "ssn"}
    # ... and importing that export gives the same source back.
    (tmp_path / "again.json").write_text(json.dumps(body), encoding="utf-8")
    assert main(["import", "galileo", str(tmp_path / "again.json"), "--project",
                 "support"]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")


def test_cli_export_of_a_local_stage_is_its_ruleset_list(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import POLICIES

    assert main(["build", str(POLICIES), "--registry", str(tmp_path / "reg")]) == 0
    capsys.readouterr()
    assert main(["export", "galileo", "agent_tools", "--registry", str(tmp_path / "reg")]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["export", "galileo", "output_guard", "--registry", str(tmp_path / "reg")]) == 0
    captured = capsys.readouterr()
    assert "fails closed" in captured.err and "answer_words" in captured.err
    assert main(["import", "galileo", str(tmp_path / "missing.json")]) == 1


def test_cli_export_a_pinned_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(tmp_path / "reg")
    for threshold in ("0.5", "0.7"):
        src = tmp_path / "p.sg"
        src.write_text("project p\nstage s {\n  type central\n  ruleset r {\n"
                       f"    when output_toxicity > {threshold}\n    passthrough\n  }}\n}}\n",
                       encoding="utf-8")
        assert main(["build", str(src), "--registry", reg]) == 0
    capsys.readouterr()
    assert main(["export", "galileo", "p/s", "--registry", reg, "--version", "1"]) == 0
    rule = json.loads(capsys.readouterr().out)["prioritized_rulesets"][0]["rules"][0]
    assert rule["target_value"] == 0.5
    assert main(["export", "galileo", "s", "--registry", reg, "--version", "3"]) == 1
    assert "no version 3" in capsys.readouterr().err


def test_a_uniform_truth_with_no_rule_to_write_it_is_an_error_that_states_it() -> None:
    # `risk` is a custom number metric with no range: nothing written on it is always true.
    text = json.dumps({"name": "s", "prioritized_rulesets": [
        {"rules": [{"metric": "risk", "operator": "lt", "target_value": 1e400}]}]})
    result = import_galileo(text, "in.json")
    (d,) = [d for d in result.diagnostics if d.is_error]
    assert d.code == "SG0902" and "as always true for every value of `risk`" in d.message


def test_a_stages_galileo_id_is_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stageguard.compiler.pipeline import compile_text
    from stageguard.runtime.engine import Runtime
    from stageguard.runtime.identity import stage_id
    from stageguard.runtime.registry import Registry

    kept = "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e8b7c5d"
    body = {"name": "guard", "id": kept.upper(), "project_id": "anything", "type": "central",
            "prioritized_rulesets": [{"rules": [
                {"metric": "toxicity", "operator": "gt", "target_value": 0.5}]}]}
    result = import_galileo(json.dumps(body), "in.json", project="shop")
    assert result.ok and f'id "{kept}"' in (result.source or "")
    compiled = compile_text(result.source or "", "guard.sg")
    assert compiled.ok
    Registry(tmp_path).publish(compiled.artifacts)
    with Runtime(tmp_path) as rt:
        info = rt.get_stage(stage_id=kept)
        assert info is not None and info.id == kept and info.name == "guard"
        r = rt.invoke({"output": "x", "metrics": {"output_toxicity": 0.9}}, stage_id=kept)
        assert r.stage_metadata.stage_id == kept and r.status.value == "triggered"
        assert rt.get_stage(stage_id=stage_id("shop", "guard")) is None  # it answers to one id
        # A new version keeps it.
        assert rt.update_stage(stage_id=kept, prioritized_rulesets=[]).id == kept


def test_two_stages_cannot_keep_one_id() -> None:
    from stageguard.compiler.pipeline import compile_text

    text = ('project p\nstage a {\n  id "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e8b7c5d"\n  type local\n}\n'
            'stage b {\n  id "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e8b7c5d"\n  type local\n}\n')
    result = compile_text(text, "p.sg")
    assert [d.code for d in result.diagnostics if d.is_error] == ["SG0312"]


def test_import_never_overwrites_a_file_unless_forced(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine.sg"
    out.write_text("# written by hand\n", encoding="utf-8")
    args = ["import", "galileo", str(EXAMPLES / "semantics_examples.json"), "--project",
            "support", "--output", str(out)]
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "# written by hand\n"
    assert main([*args, "--force"]) == 0
    assert out.read_text(encoding="utf-8").startswith("project support")
