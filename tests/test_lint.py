"""`stageguard lint`: every finding true, shown by its witness and by evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.cli import main
from stageguard.compiler.analysis import Space, StageModel, decide, subtract_all
from stageguard.compiler.lint import (
    ALWAYS_TRUE,
    NEVER_TRUE,
    OVERLAP,
    REDUNDANT,
    SHADOWED,
    TOO_LARGE,
    UNSATISFIABLE,
    findings,
    lint,
)
from stageguard.compiler.pipeline import compile_paths, compile_text
from stageguard.runtime.evaluate import rule_holds
from stageguard.runtime.model import MetricSpec, Status
from tests.conftest import POLICIES
from tests.profiles import examples
from tests.strategies import payloads, stage_models

FIXTURE = Path(__file__).parent / "lint" / "findings.sg"


def test_fixture_findings_at_hand_checked_positions() -> None:
    found = lint(compile_paths([str(FIXTURE)]))
    got = sorted((d.code, d.span.line, d.span.column) for d in found)
    assert got == sorted([
        (UNSATISFIABLE, 12, 5),   # toxicity > 0.8 and < 0.2
        (UNSATISFIABLE, 18, 5),   # pii contains "ssn" and pii is empty
        (REDUNDANT, 25, 5),       # > 0.3 implied by > 0.5
        (OVERLAP, 29, 3),         # long overlaps toxic
        (SHADOWED, 34, 3),        # very_toxic_long is covered by toxic
        (ALWAYS_TRUE, 42, 5),     # output_toxicity >= 0
        (NEVER_TRUE, 43, 5),      # output_sexist > 1
        # silly triggers for output_sexist above its declared range, which the runtime
        # accepts (a score of 2): there it overlaps toxic and long
        (OVERLAP, 41, 3), (OVERLAP, 41, 3),
        (OVERLAP, 47, 3), (OVERLAP, 47, 3),  # tone overlaps toxic and long
    ])
    shadowed = next(d for d in found if d.code == SHADOWED)
    assert "webhooks still fire" in shadowed.message
    assert shadowed.data is not None and shadowed.data["decision"]["ruleset"] == "toxic"


def test_example_policies_have_no_warnings() -> None:
    found = lint(compile_paths([str(POLICIES)]))
    assert [d for d in found if d.severity != "info"] == []


def _triggers(stage: StageModel, i: int, payload: dict[str, object],
              skip: int | None = None) -> bool:
    return all(rule_holds(r.operator, r.target_value, payload.get(r.metric))  # type: ignore[arg-type]
               for k, r in enumerate(stage.rulesets[i].rules) if k != skip)


def _declared(spec: MetricSpec, value: object) -> bool:
    """A value inside what the catalog declares (SG0704/SG0705 speak of those only)."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value == value and (spec.minimum is None or value >= spec.minimum) and (
            spec.maximum is None or value <= spec.maximum)
    labels = set(spec.labels or ())
    if isinstance(value, str):
        return not labels or value in labels
    if isinstance(value, tuple):
        return not labels or set(value) <= labels
    return False


@examples(1.5,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stage_models(), st.data())
def test_every_finding_holds_under_evaluation(stage: StageModel, data: st.DataObject) -> None:
    found = findings(stage)
    sample = data.draw(st.lists(payloads(stage.catalog), min_size=30, max_size=30))
    for f in found:
        i, rs = f.ruleset, stage.rulesets[f.ruleset]
        if f.witness is not None and f.decision is not None:
            assert decide(stage, f.witness.values) == f.decision
        if f.code == UNSATISFIABLE:
            assert not any(_triggers(stage, i, p) for p in sample)
        elif f.code == NEVER_TRUE:  # over the declared domain, as the finding says
            rule = rs.rules[f.rule]  # type: ignore[index]
            spec = stage.catalog[rule.metric]
            assert not any(rule_holds(rule.operator, rule.target_value, p.get(rule.metric))  # type: ignore[arg-type]
                           for p in sample if _declared(spec, p.get(rule.metric)))
        elif f.code == ALWAYS_TRUE:
            rule = rs.rules[f.rule]  # type: ignore[index]
            spec = stage.catalog[rule.metric]
            assert all(rule_holds(rule.operator, rule.target_value, p.get(rule.metric))  # type: ignore[arg-type]
                       for p in sample if p.get(rule.metric) is not None
                       and _declared(spec, p.get(rule.metric)))
        elif f.code == REDUNDANT:
            assert f.witness is not None and _triggers(stage, i, dict(f.witness.values))
            for p in sample:
                assert _triggers(stage, i, p) == _triggers(stage, i, p, skip=f.rule)
        elif f.code == SHADOWED:
            assert f.witness is not None and _triggers(stage, i, dict(f.witness.values))
            earlier = {r.name for r in stage.rulesets[:i]}
            assert f.decision is not None and f.decision.ruleset in earlier
            assert {stage.rulesets[k].name for k in f.others} <= earlier
            for p in sample:
                if _triggers(stage, i, p):
                    assert decide(stage, p).ruleset != rs.name
                    assert any(_triggers(stage, k, p) for k in f.others)  # the named cover
        elif f.code == OVERLAP:
            (other,) = f.others
            assert f.witness is not None
            w = dict(f.witness.values)
            assert _triggers(stage, i, w) and _triggers(stage, other, w)
            assert f.decision is not None and f.decision.status is Status.TRIGGERED
            assert f.decision.ruleset == stage.rulesets[other].name


def test_lint_command_strict_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(FIXTURE)]) == 0
    text = capsys.readouterr().out
    assert "= witness: output_toxicity=0.91, words=201 → triggered by `toxic`" in text
    assert main(["lint", "--strict", str(FIXTURE)]) == 1
    capsys.readouterr()
    assert main(["lint", "--format", "json", str(FIXTURE)]) == 0
    data = json.loads(capsys.readouterr().out)
    redundant = next(d for d in data["diagnostics"] if d["code"] == REDUNDANT)
    assert redundant["data"]["witness"] == {"metrics": {"output_toxicity": 0.6}}


def test_lint_reports_check_errors_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    bad = tmp_path / "bad.sg"
    bad.write_text("project p\nstage s {\n  ruleset r {\n    when toxicty > 1\n  }\n}\n",
                   encoding="utf-8")
    assert main(["lint", str(bad)]) == 1
    assert "did you mean" in capsys.readouterr().out


def test_a_stage_beyond_the_analysis_gets_a_warning_not_a_crash(tmp_path: Path) -> None:
    labels = [f"l{i}" for i in range(20)]
    rulesets = "\n".join(f'  ruleset r{i} {{\n    when tags contains "{label}"\n'
                         "    passthrough\n  }" for i, label in enumerate(labels))
    path = tmp_path / "big.sg"
    path.write_text("project p\nmetric tags {\n  type labels\n  labels ["
                    + ", ".join(f'"{x}"' for x in labels) + "]\n}\n"
                    f"stage s {{\n  type central\n{rulesets}\n}}\n", encoding="utf-8")
    compilation = compile_paths([str(path)])
    assert compilation.ok, compilation.diagnostics
    (found,) = lint(compilation)
    assert found.code == TOO_LARGE and "tags" in found.message and found.span.line == 6


def test_the_named_cover_is_the_smallest_when_one_ruleset_covers_alone() -> None:
    text = """project p
stage s {
  ruleset a {
    when output_toxicity > 0.95
    passthrough
  }
  ruleset b {
    when output_toxicity > 0.9
    when output_sexist > 0.9
    passthrough
  }
  ruleset c {
    when output_toxicity > 0.5
    passthrough
  }
  ruleset late {
    when output_toxicity > 0.9
    when output_sexist > 0.7
    override {
      choice "never returned"
    }
  }
}
"""
    [shadowed] = [d for d in lint(compile_text(text, "cover.sg")) if d.code == SHADOWED]
    # a and b cover parts of `late`, c covers it alone: c is named, not all three (as a
    # pass in priority order named them).
    assert "triggers `c` first" in shadowed.message
    assert [r.message for r in shadowed.related] == ["triggers first"]


@examples(3, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stage_models())
def test_no_ruleset_of_a_named_cover_can_be_dropped(stage: StageModel) -> None:
    """For every ruleset a shadowing finding names, a payload shows it is needed: it
    triggers the shadowed ruleset and that one, and none of the other named (re-evaluated
    with the reference interpreter)."""
    space = Space(stage.catalog, stage.rulesets)
    for f in findings(stage):
        if f.code != SHADOWED:
            continue
        box = space.ruleset_box(stage.rulesets[f.ruleset].rules)
        assert box is not None
        for k in f.others:
            left = [box]
            for other in f.others:
                if other != k:
                    b = space.ruleset_box(stage.rulesets[other].rules)
                    assert b is not None
                    left = subtract_all(left, b)
            assert left, f"ruleset {k} is not needed in the cover"
            w = dict(space.witness(left[0]).values)
            assert _triggers(stage, f.ruleset, w) and _triggers(stage, k, w)
            assert not any(_triggers(stage, o, w) for o in f.others if o != k)


def test_a_time_limit_stops_with_a_clear_partial_result(tmp_path: Path) -> None:
    """lint and diff --timeout: what was finished is reported, the rest named, no claim."""
    from tests.test_cli import run

    # Large enough that neither analysis finishes within its limit on a fast machine
    # (lint ~2 s, diff ~2.5 s unbounded).
    scores = ("output_toxicity", "input_toxicity", "completeness", "context_adherence",
              "input_sexist", "output_sexist")
    big = "\n".join(f"  ruleset r{i} {{\n    when {scores[i % 6]} > {i / 1200:.4f}\n"
                    f"    when {scores[(i * 7 + 1) % 6]} <= {(i % 97) / 97:.4f}\n"
                    "    passthrough\n  }" for i in range(600))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p.sg").write_text(
        "project p\nstage small {\n  ruleset only {\n    when output_toxicity > 0.5\n"
        f"    passthrough\n  }}\n}}\nstage zbig {{\n{big}\n}}\n")
    p = run("lint", "a", "--format", "json", "--isolated", "--timeout", "0.2", cwd=tmp_path)
    found = json.loads(p.stdout)["diagnostics"]
    [stopped] = [d for d in found if d["code"] == "SG0708"]
    # (on a slow machine even the small stage may not finish: then both are named)
    assert stopped["data"]["not_analysed"] in (["zbig"], ["small", "zbig"])
    assert "0.2 s" in stopped["message"]
    assert p.returncode == 0  # a warning: --strict makes it fail
    assert run("lint", "a", "--isolated", "--strict", "--timeout", "0.2",
               cwd=tmp_path).returncode == 1
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "p.sg").write_text(
        (tmp_path / "a" / "p.sg").read_text().replace("> 0.0025", "> 0.003"))
    p = run("diff", "a", "b", "--format", "json", "--timeout", "0.05", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert json.loads(p.stdout)["incomplete"] in (["p/zbig"], ["p/small", "p/zbig"])
    assert "p/zbig" in p.stderr.split("not compared: ")[1]
    assert run("diff", "a", "b", "--timeout", "0", cwd=tmp_path).returncode == 2
