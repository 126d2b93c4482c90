"""Rulesets files (`*.rulesets.sg`): a local stage's per-invocation rulesets kept as source,
accepted by check, lint, fmt and `invoke --rulesets`, never published by build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.test_cli import no_traceback, run

RULESETS = """\
# The agent team's rulesets for the local stage agent_tools, sent with each call.
ruleset tools_failing {
  when tool_error_rate >= 0.5
  override {
    choice "Let me hand you over to a person."
  }
}

ruleset long_answers {
  when answer_words > 400
  passthrough
}

ruleset never {
  when tool_error_rate >= 0.9
  override {
    choice "x"
  }
}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies")
    (tmp_path / "policies" / "agent_tools.rulesets.sg").write_text(RULESETS)
    return tmp_path


def test_check_sees_the_projects_own_metrics(work: Path) -> None:
    p = run("check", "policies", cwd=work)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok: 5 files, 3 stages"  # answer_words is from metrics.sg
    f = work / "policies" / "agent_tools.rulesets.sg"
    f.write_text(RULESETS.replace("when tool_error_rate >= 0.5", "when tool_eror_rate >= 0.5"))
    p = run("check", "policies", "--format", "json", cwd=work)
    [d] = json.loads(p.stdout)["diagnostics"]
    assert (d["code"], d["span"]["file"], d["span"]["line"]) == (
        "SG0201", "policies/agent_tools.rulesets.sg", 3)
    assert d["help"] == "did you mean `tool_error_rate`?"


def test_a_rulesets_file_holds_rulesets_only(work: Path) -> None:
    f = work / "policies" / "agent_tools.rulesets.sg"
    f.write_text(RULESETS + "\nstage sneaky {\n}\n")
    p = run("check", "policies", "--format", "json", cwd=work)
    assert p.returncode == 1
    [d] = json.loads(p.stdout)["diagnostics"]
    assert d["code"] == "SG0001" and d["span"]["line"] == RULESETS.count("\n") + 2
    no_traceback(p)


def test_lint_analyses_it_as_a_stage(work: Path) -> None:
    p = run("lint", "policies", "--format", "json", "--isolated", "--ignore", "SG0706",
            cwd=work)
    [d] = json.loads(p.stdout)["diagnostics"]
    assert (d["code"], d["span"]["file"], d["span"]["line"]) == (
        "SG0702", "policies/agent_tools.rulesets.sg", 14)
    assert "`never` is shadowed" in d["message"]


def test_fmt_formats_it_and_keeps_it_rulesets(work: Path) -> None:
    f = work / "policies" / "agent_tools.rulesets.sg"
    f.write_text(RULESETS.replace("ruleset long_answers {", "ruleset   long_answers  {")
                 .replace("  when answer_words > 400", "      when answer_words>400"))
    assert run("fmt", "--check", "policies", cwd=work).returncode == 1
    assert run("fmt", "--write", str(f), cwd=work).returncode == 0
    assert f.read_text() == RULESETS


def test_build_does_not_publish_it_and_invoke_takes_it(work: Path) -> None:
    p = run("build", "policies", "--registry", "reg", "--format", "json", cwd=work)
    assert p.returncode == 0
    assert sorted(s["stage"] for s in json.loads(p.stdout)["stages"]) == [
        "agent_tools", "input_guard", "output_guard"]
    p = run("invoke", "agent_tools", "--registry", "reg", "--input", "refund my order",
            "--rulesets", "policies/agent_tools.rulesets.sg", "--metric", "tool_error_rate=0.6",
            "--format", "json", cwd=work)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["status"] == "TRIGGERED" and body["text"] == "Let me hand you over to a person."
