"""`stageguard test`, its coverage and suggestions, and the pytest plugin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from stageguard.cli import main
from stageguard.compiler.policytest import run_files
from tests.conftest import POLICIES

BROKEN = Path(__file__).parent / "policy_tests" / "broken"


def test_shipped_policy_tests_pass_with_full_ruleset_coverage(
        capsys: pytest.CaptureFixture[str]) -> None:
    result = run_files([str(POLICIES)])
    assert result.outcomes and all(o.passed for o in result.outcomes)
    rulesets, rules, sides = result.coverage.percent()
    assert rulesets == 100.0 and rules == 100.0
    assert sides >= 80.0  # reported; --suggest lists the rest
    assert main(["test", str(POLICIES), "--coverage-min", "80"]) == 0
    assert "rulesets triggered 100%" in capsys.readouterr().out


def test_a_broken_policy_fails_with_expected_beside_actual(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(BROKEN)]) == 1
    out = capsys.readouterr().out
    report = out.split("FAIL  ")[1]
    assert "toxic answers are stopped at 0.7" in report
    assert "status             triggered                    not_triggered" in report
    assert "metric values: output_pii=[], output_toxicity=0.75" in report
    assert "not_triggered when output_toxicity >= 0.9 (value 0.75)" in report
    assert "guard.sg:16]" in report  # the rule's source location
    assert "0 passed, 3 failed" in out


def test_a_false_property_gets_a_counterexample(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_files([str(BROKEN)], "always overridden")
    (outcome,) = result.outcomes
    assert not outcome.passed
    assert outcome.report.startswith('counterexample: output_pii=["email"]')
    assert "decided: not_triggered" in outcome.report


def test_suggestions_are_ready_to_paste_and_pass(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "p"
    work.mkdir()
    (work / "guard.sg").write_text((BROKEN / "guard.sg").read_text(encoding="utf-8"),
                                   encoding="utf-8")
    (work / "guard.test.toml").write_text(
        'stage = "guard"\n\n[[case]]\nname = "one"\noutput = "x"\nmetrics = { output_pii = [], '
        'output_toxicity = 0.95 }\nexpect = { ruleset = "toxic" }\n', encoding="utf-8")
    assert main(["test", str(work), "--suggest"]) == 0
    out = capsys.readouterr().out
    suggested = out.split("# missing boundary cases")[1].split("\n", 1)[1]
    cases = tomllib.loads(suggested)["case"]
    assert {c["name"].rsplit(", ", 1)[1] for c in cases} == {"below", "at"}
    assert [c["metrics"]["output_toxicity"] for c in cases] == [0.89, 0.9]
    with (work / "guard.test.toml").open("a", encoding="utf-8") as f:
        f.write("\n" + suggested)
    assert main(["test", str(work), "--coverage-min", "100"]) == 0


def test_formats_and_filters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(BROKEN), "--format", "junit"]) == 1
    suite = ET.fromstring(capsys.readouterr().out)
    assert suite.get("tests") == "3" and suite.get("failures") == "3"
    assert main(["test", str(POLICIES), "--format", "json", "-k", "ssn"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] == 0 and {r["id"].split("::")[1] for r in data["results"]} == {
        "an ssn in the answer is replaced", "every answer revealing an ssn is overridden"}


def test_bad_test_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.sg").write_text("project p\nstage s {\n  type local\n}\n", encoding="utf-8")
    bad = tmp_path / "x.test.toml"
    for text, words in [("stage = \n", "not valid TOML"),
                        ('[[case]]\nname = "a"\nexpect = { status = "triggered" }\n',
                         "name a stage"),
                        ('stage = "s"\n[[case]]\nname = "a"\n', "`expect` states"),
                        ('stage = "s"\n[[case]]\nexpect = { colour = "red" }\n',
                         "unknown expectation `colour`"),
                        ('stage = "s"\nextra = 1\n', "unknown key `extra`")]:
        bad.write_text(text, encoding="utf-8")
        assert main(["test", str(bad)]) == 1
        assert words in capsys.readouterr().err
    assert main(["test", str(tmp_path / "missing")]) == 1
    bad.write_text('stage = "s"\n[[case]]\nname = "no text"\nexpect = { status = "skipped" }\n',
                   encoding="utf-8")
    assert main(["test", str(bad)]) == 1
    assert "give the case an `input` or `output` text" in capsys.readouterr().out


def test_every_mistake_in_every_test_file_at_once(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.sg").write_text("project p\nstage s {\n  type local\n}\n", encoding="utf-8")
    (tmp_path / "a.test.toml").write_text(
        'stage = "s"\n[[case]]\nname = "one"\ninput = "x"\nexpect = { statuz = "skipped" }\n'
        '[[case]]\nnmae = "two"\nexpect = { status = "skipped" }\n'
        '[[table]]\nname = "three"\nexpect = { status = "skipped" }\n', encoding="utf-8")
    (tmp_path / "b.test.toml").write_text('stge = "s"\n', encoding="utf-8")
    assert main(["test", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 2)[-1] for line in err] == [
        "case 1 (one): unknown expectation `statuz` (did you mean `status`?)",
        "case 2 (unnamed): unknown key `nmae` (did you mean `name`?)",
        "table 1 (three): `rows` lists the payloads",
        "unknown key `stge` (did you mean `stage`?)",
        "4 problems in the test files"]


def _pytest(*args: str, autoload: bool = True) -> subprocess.CompletedProcess[str]:
    """pytest in a process of its own. `autoload=False` loads stageguard's plugin alone,
    by name: every installed plugin is 5 s of start-up here."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        args = ("-p", "stageguard.compiler.pytest_plugin", *args)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent, env=env)


def test_pytest_collects_policy_tests(tmp_path: Path) -> None:
    done = _pytest("policies/")  # found through its entry point, as users' pytest finds it
    assert done.returncode == 0, done.stdout + done.stderr
    n = len(run_files([str(POLICIES)]).outcomes)
    assert f"{n} passed" in done.stdout
    broken = tmp_path / "broken"
    shutil.copytree(BROKEN, broken)
    done = _pytest(str(broken), "--rootdir", str(tmp_path), autoload=False)
    assert done.returncode == 1
    assert "3 failed" in done.stdout
    assert "not_triggered when output_toxicity >= 0.9 (value 0.75)" in done.stdout


def test_registry_versions_and_behaves_like_properties(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "reg"
    src = tmp_path / "src" / "guard.sg"
    src.parent.mkdir()
    policy = (BROKEN / "guard.sg").read_text(encoding="utf-8")
    for text in (policy, policy.replace(">= 0.9", ">= 0.7")):  # v1, then v2 lowers the bar
        src.write_text(text, encoding="utf-8")
        assert main(["build", str(src.parent), "--registry", str(reg)]) == 0
    tests = tmp_path / "guard.test.toml"
    tests.write_text('''registry = "reg"
stage = "guard"

[[case]]
name = "the latest version stops 0.75"
output = "x"
metrics = { output_pii = [], output_toxicity = 0.75 }
expect = { ruleset = "toxic" }

[[case]]
name = "version 1 let 0.75 through"
version = 1
output = "x"
metrics = { output_pii = [], output_toxicity = 0.75 }
expect = { status = "not_triggered" }

[[property]]
name = "v2 behaves like v1 except between the bars"
same_as = 1
when = ["output_toxicity >= 0.7", "output_toxicity < 0.9"]

[[property]]
name = "v2 behaves like v1 (false: the bar moved)"
same_as = 1
''', encoding="utf-8")
    capsys.readouterr()
    assert main(["test", str(tests)]) == 1
    out = capsys.readouterr().out
    assert out.count("PASS") == 3 and out.count("FAIL") == 1
    assert "counterexample: " in out and "version 1: not_triggered" in out
    assert "this version: triggered by `toxic`" in out


def test_suggested_cases_pass_when_pasted(tmp_path: Path) -> None:
    """`test --suggest` proposes each missing threshold side with what the stage decides
    today; pasted as they are, every one passes (issue 19: 12 of 15 failed, because a metric
    left out of a case is an error at run time, not the "missing" the analysis assumed)."""
    for sg in POLICIES.glob("*.sg"):
        shutil.copy(sg, tmp_path / sg.name)
    (tmp_path / "one.test.toml").write_text(
        'policies = ["."]\n\n[[case]]\nname = "clean"\nstage = "output_guard"\n'
        'output = "fine"\nmetrics = { output_toxicity = 0.1, output_pii = [], '
        'context_adherence = 0.9, answer_words = 10, competitor_mention = 0.0, '
        'output_tone = ["joy"] }\nexpect = { status = "not_triggered" }\n')
    from stageguard.compiler.policytest import run_files, suggest

    first = run_files([str(tmp_path / "one.test.toml")])
    assert all(o.passed for o in first.outcomes)
    text = suggest(first.stages, first.coverage)
    assert text.count("[[case]]") >= 10
    (tmp_path / "pasted.test.toml").write_text('policies = ["."]\n\n' + text)
    pasted = run_files([str(tmp_path / "pasted.test.toml")])
    assert len(pasted.outcomes) == text.count("[[case]]")
    assert [o.report for o in pasted.outcomes if not o.passed] == []


def test_a_typo_in_a_case_fails_it_with_a_suggestion(tmp_path: Path) -> None:
    """A metric name no catalog has used to be ignored (the case then passed, testing
    nothing), and an unknown ruleset in `expect` went unflagged (issue 19)."""
    from stageguard.compiler.policytest import run_files

    for sg in POLICIES.glob("*.sg"):
        shutil.copy(sg, tmp_path / sg.name)
    (tmp_path / "typo.test.toml").write_text(
        'policies = ["."]\n\n[[case]]\nname = "typo"\nstage = "output_guard"\n'
        'output = "fine"\nmetrics = { output_toxicty = 0.9 }\n'
        'expect = { status = "not_triggered", ruleset = "toxic_anser" }\n\n'
        '[[case]]\nname = "fine"\nstage = "output_guard"\noutput = "fine"\n'
        'metrics = { toxicity = 0.9, output_pii = [] }\n'
        'expect = { rulesets = { toxic_answer = "triggered" } }\n')
    typo, fine = run_files([str(tmp_path / "typo.test.toml")]).outcomes
    assert not typo.passed
    assert "unknown metric `output_toxicty`" in typo.report
    assert "did you mean `output_toxicity`?" in typo.report
    assert "ruleset `toxic_anser`" in typo.report and "`toxic_answer`" in typo.report
    assert fine.passed, fine.report  # a Galileo label is a known name
