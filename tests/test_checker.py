"""Resolution and typing rules of the checker (the error corpus lives in test_diagnostics)."""

from __future__ import annotations

import pytest

from stageguard.compiler.checker import check
from stageguard.compiler.parser import parse
from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.model import ActionType, FailMode, MetricType, Operator, StageType
from tests.conftest import codes, stage_src


def one_stage(body: str, extra: str = ""):
    result = check([parse(stage_src(body, extra), "t.sg")])
    assert result.ok, result.diagnostics
    (stage,) = result.stages
    return stage


# Every cell of docs/semantics.md's truth table that can be true must be writable and compile.
@pytest.mark.parametrize(("rule", "op", "target"), [
    ("output_toxicity > 0.5", Operator.GT, 0.5),
    ("output_toxicity < 0.5", Operator.LT, 0.5),
    ("output_toxicity >= 0", Operator.GTE, 0.0),
    ("output_toxicity <= 1", Operator.LTE, 1.0),
    ("output_toxicity == 0.25", Operator.EQ, 0.25),
    ("output_toxicity != 0.25", Operator.NEQ, 0.25),
    ('output_tone == "joy"', Operator.EQ, "joy"),
    ('output_tone != "joy"', Operator.NEQ, "joy"),
    ('output_tone any ["joy", "love"]', Operator.ANY, ("joy", "love")),
    ('output_pii contains "ssn"', Operator.CONTAINS, "ssn"),
    ('output_pii all ["ssn", "email"]', Operator.ALL, ("ssn", "email")),
    ('output_pii any ["ssn"]', Operator.ANY, ("ssn",)),
    ("output_pii is empty", Operator.EMPTY, None),
    ("output_pii is not empty", Operator.NOT_EMPTY, None),
])
def test_truth_table_cells_compile(rule: str, op: Operator, target: object) -> None:
    stage = one_stage(f"  ruleset r {{\n    when {rule}\n  }}\n")
    (checked,) = stage.rulesets[0].rules
    assert (checked.operator, checked.target) == (op, target)


@pytest.mark.parametrize(("rule", "code"), [
    ('output_pii == "ssn"', "SG0206"),   # eq on a list: false in Galileo's code, rejected here
    ('output_pii != "ssn"', "SG0206"),
    ("output_pii > 0.5", "SG0202"),
    ('output_tone contains "joy"', "SG0202"),
    ("output_tone is empty", "SG0202"),
    ('output_toxicity any ["x"]', "SG0202"),
    ("output_toxicity is not empty", "SG0202"),
    ('output_toxicity == "0.5"', "SG0203"),  # no string/number coercion
    ('output_tone == 1', "SG0203"),
    ('output_pii contains ["ssn"]', "SG0203"),
    ('output_pii any [1]', "SG0203"),
    ("output_toxicity >= -0.01", "SG0204"),
])
def test_invalid_combinations(rule: str, code: str) -> None:
    result = compile_text(stage_src(f"  ruleset r {{\n    when {rule}\n  }}\n"), "t.sg")
    assert codes(result) == [code]
    assert result.artifacts == ()


def test_legacy_aliases_resolve_to_canonical_names() -> None:
    stage = one_stage('  ruleset r {\n    when toxicity > 0.5\n    when pii contains "ssn"\n'
                      '    when tone == "joy"\n    when adherence_nli < 0.2\n  }\n')
    assert [r.metric for r in stage.rulesets[0].rules] == [
        "output_toxicity", "output_pii", "output_tone", "context_adherence"]
    assert [m.name for m in stage.metrics] == [
        "context_adherence", "output_pii", "output_tone", "output_toxicity"]


def test_custom_metrics_with_range_and_vocabulary() -> None:
    extra = ('metric words {\n  type number\n  min 0\n  max 100\n}\n'
             'metric topic {\n  type label\n  labels ["a", "b"]\n}\n'
             'metric tags {\n  type labels\n}\n')
    stage = one_stage('  ruleset r {\n    when words > 50\n    when topic any ["a"]\n'
                      '    when tags contains "anything"\n  }\n', extra)
    specs = {m.name: m for m in stage.metrics}
    assert specs["words"].type is MetricType.NUMBER and specs["words"].maximum == 100
    assert specs["topic"].labels == ("a", "b")
    assert specs["tags"].labels is None  # open vocabulary: any label is accepted
    bad = compile_text(stage_src('  ruleset r {\n    when words > 101\n    when topic == "c"\n'
                                 "  }\n", extra), "t.sg")
    assert codes(bad) == ["SG0204", "SG0205"]


def test_custom_score_is_pinned_to_unit_range() -> None:
    stage = one_stage("  ruleset r {\n    when brand > 0.5\n  }\n",
                      "metric brand {\n  type score\n}\n")
    (spec,) = stage.metrics
    assert (spec.minimum, spec.maximum, spec.builtin) == (0.0, 1.0, False)


def test_broken_metric_declaration_does_not_cascade_into_rules() -> None:
    result = compile_text(stage_src("  ruleset r {\n    when brand > 0.5\n  }\n",
                                    "metric brand {\n  type scor\n}\n"), "t.sg")
    assert codes(result) == ["SG0501"]


def test_actions_and_subscriptions_resolve() -> None:
    stage = one_stage('  fail closed\n  ruleset r {\n    when output_toxicity > 0.5\n'
                      '    override {\n      choice "a"\n      choice "b"\n    }\n'
                      '    notify "https://h.example/1"\n'
                      '    notify "http://h.example/2" on failed, timeout\n  }\n'
                      "  ruleset q {\n    when input_toxicity > 0.5\n  }\n")
    assert stage.fail_mode is FailMode.CLOSED and stage.type is StageType.CENTRAL
    r, q = stage.rulesets
    assert r.action is ActionType.OVERRIDE and r.choices == ("a", "b")
    assert [(s.url, [x.value for x in s.statuses]) for s in r.subscriptions] == [
        ("https://h.example/1", ["triggered"]), ("http://h.example/2", ["failed", "timeout"])]
    assert q.action is ActionType.PASSTHROUGH and q.choices is None


def test_projects_span_files_and_stage_names_are_unique_across_them() -> None:
    a = parse("project p\nmetric brand {\n  type score\n}\n"
              "stage s {\n  ruleset r {\n    when brand > 0.1\n  }\n}\n", "a.sg")
    b = parse("project p\nstage s {\n  type local\n}\n", "b.sg")
    result = check([a, b])
    assert [d.code for d in result.diagnostics] == ["SG0301"]
    assert result.diagnostics[0].span.file == "b.sg"
    assert result.diagnostics[0].related[0].span.file == "a.sg"


def test_same_stage_name_in_two_projects_is_fine() -> None:
    a = parse("project p\nstage s {\n  type local\n}\n", "a.sg")
    b = parse("project q\nstage s {\n  type local\n}\n", "b.sg")
    result = check([a, b])
    assert result.ok
    assert sorted((s.project, s.name) for s in result.stages) == [("p", "s"), ("q", "s")]


def test_local_stage_ships_the_projects_custom_metrics() -> None:
    a = parse("project p\nmetric brand {\n  type score\n}\nstage s {\n  type local\n}\n",
              "a.sg")
    (stage,) = check([a]).stages
    assert [m.name for m in stage.metrics] == ["brand"]
    assert stage.rulesets == ()


def test_syntax_error_inside_ruleset_does_not_also_report_it_empty() -> None:
    result = compile_text(stage_src("  ruleset r {\n    wen output_toxicity > 0.5\n  }\n"),
                          "t.sg")
    assert codes(result) == ["SG0001"]


def test_every_problem_in_a_file_is_reported_at_once() -> None:
    result = compile_text(stage_src(
        '  type centrl\n  ruleset r {\n    when output_toxicty > 0.5\n'
        '    when output_pii == "ssn"\n    override {\n    }\n'
        '    notify "ftp://x.example" on triggerd\n  }\n'), "t.sg")
    assert sorted(codes(result)) == ["SG0201", "SG0206", "SG0308", "SG0401", "SG0402",
                                     "SG0403"]


def test_empty_ruleset_is_reported_alongside_its_other_problems() -> None:
    result = compile_text(stage_src('  ruleset r {\n    passthrough\n    passthrough\n  }\n'),
                          "t.sg")
    assert sorted(codes(result)) == ["SG0306", "SG0405"]
