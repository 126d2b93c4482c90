"""The CLI as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POLICIES

EXE = Path(sys.executable).with_name("stageguard")


def run(*args: str, cwd: Path | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, input=input, env={**os.environ, "STAGEGUARD_DEBUG": ""})


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies")
    return tmp_path


def test_check_examples_ok(policies: Path) -> None:
    p = run("check", "policies/", cwd=policies)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok: 4 files, 3 stages"


def test_check_reports_errors_with_exit_1(policies: Path) -> None:
    bad = policies / "policies" / "output_guard.sg"
    bad.write_text(bad.read_text().replace("output_toxicity >= 0.7", "output_toxicty >= 0.7"))
    p = run("check", "policies/", cwd=policies)
    assert p.returncode == 1
    assert "error[SG0201]: unknown metric `output_toxicty`" in p.stderr
    assert " --> policies/output_guard.sg:19:10" in p.stderr
    no_traceback(p)


def test_check_json(policies: Path) -> None:
    (policies / "policies" / "x.sg").write_text("project support_bot\nstage x {\n  typo\n}\n")
    p = run("check", "policies/", "--format", "json", cwd=policies)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["ok"] is False
    assert [(d["code"], d["span"]["file"], d["span"]["line"]) for d in doc["diagnostics"]] == [
        ("SG0001", "policies/x.sg", 3)]


def test_build_then_rebuild_then_change(policies: Path) -> None:
    p = run("build", "policies/", "--registry", "reg", cwd=policies)
    assert p.returncode == 0, p.stderr
    assert "support_bot/output_guard: v1 (new)" in p.stdout
    p = run("build", "policies/", "--registry", "reg", "--format", "json", cwd=policies)
    doc = json.loads(p.stdout)
    assert {(s["stage"], s["version"], s["created"]) for s in doc["stages"]} == {
        ("agent_tools", 1, False), ("input_guard", 1, False), ("output_guard", 1, False)}
    f = policies / "policies" / "output_guard.sg"
    f.write_text(f.read_text().replace(">= 0.7", ">= 0.6"))
    p = run("build", "policies/", "--registry", "reg", cwd=policies)
    assert "support_bot/output_guard: v2 (new)" in p.stdout
    assert "support_bot/input_guard: v1 (unchanged)" in p.stdout


def test_failed_build_writes_nothing(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    before = {q: q.read_bytes() for q in (policies / "reg").rglob("*") if q.is_file()}
    f = policies / "policies" / "input_guard.sg"
    f.write_text(f.read_text().replace("> 0.85", "> 1.85"))
    p = run("build", "policies/", "--registry", "reg", cwd=policies)
    assert p.returncode == 1
    assert "nothing was written" in p.stderr
    after = {q: q.read_bytes() for q in (policies / "reg").rglob("*") if q.is_file()}
    assert after == before


def test_inspect_registry_and_artifact(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    p = run("inspect", "reg", cwd=policies)
    assert p.returncode == 0, p.stderr
    assert "support_bot/output_guard  (central, fail closed)" in p.stdout
    assert 'when output_pii any ["ssn", "credit_card_info", "account_info", "password"]' in (
        p.stdout)
    assert "[policies/output_guard.sg:9]" in p.stdout
    p = run("inspect", "reg/support_bot/input_guard/v1.json", cwd=policies)
    assert p.returncode == 0 and "1. prompt_injection -> override (1 choice)" in p.stdout


def test_inspect_tampered_artifact_is_refused_clearly(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    art = policies / "reg/support_bot/input_guard/v1.json"
    art.write_bytes(art.read_bytes().replace(b"0.85", b"0.95"))
    p = run("inspect", str(art), cwd=policies)
    assert p.returncode == 1
    assert "v1.json does not match its digest" in p.stderr
    no_traceback(p)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("check", "nowhere/"), 1, "SG0601"),
    (("check",), 2, "usage"),
    (("frobnicate",), 2, "invalid choice"),
    (("build", "policies/"), 2, "--registry"),
    (("check", "--format", "xml", "policies/"), 2, "invalid choice"),
    (("inspect", "missing.json"), 1, "does not exist"),
])
def test_usage_and_input_errors(policies: Path, args: tuple[str, ...], code: int,
                                needle: str) -> None:
    p = run(*args, cwd=policies)
    assert p.returncode == code
    assert needle in p.stderr
    no_traceback(p)


def test_binary_and_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "bin.sg").write_bytes(b"project p\n\xff\xfe\x00garbage")
    (tmp_path / "empty").mkdir()
    p = run("check", "bin.sg", "empty", cwd=tmp_path)
    assert p.returncode == 1
    assert "SG0602" in p.stderr and "SG0603" in p.stderr
    assert "bin.sg:2:1" in p.stderr
    no_traceback(p)


def test_version_flag() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("stageguard ")


# ---- runtime verbs ------------------------------------------------------------------------

OUTPUT_METRICS = ("--metric", "output_toxicity=0.1", "--metric", "context_adherence=0.9",
                  "--metric", "answer_words=8", "--metric", "competitor_mention=0",
                  "--metric", "output_tone=neutral")


def test_invoke_text_and_json(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    p = run("invoke", "output_guard", "--registry", "reg", "--output",
            "Sure, the SSN on file is 123-45-6789.", *OUTPUT_METRICS, cwd=policies)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("TRIGGERED  support_bot/output_guard v1\n")
    assert "text: Sorry, I can't share personal or account details in this chat." in p.stdout
    assert "not delivered (pass --webhooks)" in p.stdout
    p = run("invoke", "support_bot/output_guard", "--registry", "reg", "--output", "All good.",
            *OUTPUT_METRICS, "--json", cwd=policies)
    doc = json.loads(p.stdout)
    assert doc["status"] == "NOT_TRIGGERED" and doc["text"] == "All good."
    assert doc["metric_results"]["output_tone"]["value"] == "neutral"  # bare word: a label


def test_stage_pause_show_history_resume(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    assert run("stage", "pause", "output_guard", "--registry", "reg",
               cwd=policies).stdout.strip() == "support_bot/output_guard: paused"
    p = run("invoke", "output_guard", "--registry", "reg", "--output", "x", cwd=policies)
    assert p.stdout.startswith("PAUSED")
    show = json.loads(run("stage", "show", "output_guard", "--registry", "reg", "--json",
                          cwd=policies).stdout)
    assert show["paused"] is True and show["version"] == 1 and show["type"] == "central"
    run("stage", "resume", "output_guard", "--registry", "reg", cwd=policies)
    hist = run("stage", "history", "output_guard", "--registry", "reg", cwd=policies).stdout
    versions, events = hist.split("\n\n")
    assert versions.startswith("v1  ") and versions.rstrip().endswith("(serving)")
    assert [line.split()[2:] for line in events.splitlines()] == [
        ["published", "v1"], ["paused"], ["resumed"]]


def test_invoke_local_stage_with_source_rulesets(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    (policies / "rules.sg").write_text(
        'ruleset refund_limit {\n  when answer_words > 100\n  override {\n'
        '    choice "A person will review this refund."\n  }\n}\n')
    p = run("invoke", "agent_tools", "--registry", "reg", "--input", "refund please",
            "--metric", "answer_words=150", "--rulesets", "rules.sg", cwd=policies)
    assert p.returncode == 0, p.stderr
    # The local stage's own version: an invocation's rulesets are not recorded by default.
    assert "TRIGGERED  support_bot/agent_tools v1" in p.stdout
    (policies / "bad.sg").write_text("ruleset bad {\n  when answer_wrds > 100\n}\n")
    p = run("invoke", "agent_tools", "--registry", "reg", "--input", "x", "--rulesets", "bad.sg",
            cwd=policies)
    assert p.returncode == 1
    assert "--> <rulesets>:2:8" in p.stderr and "did you mean `answer_words`?" in p.stderr
    (policies / "rules.json").write_text(json.dumps({"prioritized_rulesets": [
        {"rules": [{"metric": "answer_words", "operator": "gt", "target_value": 100}],
         "action": {"type": "OVERRIDE", "choices": ["json says no"]}}]}))
    p = run("invoke", "agent_tools", "--registry", "reg", "--input", "x", "--metric",
            "answer_words=101", "--rulesets", "rules.json", "--json", cwd=policies)
    assert json.loads(p.stdout)["text"] == "json says no"


@pytest.mark.parametrize(("args", "needle"), [
    (("invoke", "nope", "--registry", "reg", "--input", "x"), "no stage named 'nope'"),
    (("invoke", "output_guard", "--registry", "reg"), "non-empty input or output"),
    (("stage", "pause", "ghost", "--registry", "reg"), "no stage named 'ghost'"),
    (("invoke", "output_guard", "--registry", "reg", "--input", "x", "--version", "7"),
     "no version 7"),
])
def test_runtime_verbs_report_bad_requests(policies: Path, args: tuple[str, ...],
                                           needle: str) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    p = run(*args, cwd=policies)
    assert p.returncode == 1
    assert needle in p.stderr
    no_traceback(p)


# ---- defects a new user hit (issue 19), each pinned ---------------------------------------------

def test_invoke_text_output_shows_failed_metrics_instead_of_crashing(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    p = run("invoke", "input_guard", "--registry", "reg", "--input", "hello", cwd=policies)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "(value: <error>)" in p.stdout
    assert "metric prompt_injection: error: no source for metric" in p.stdout


def test_a_malformed_metric_flag_is_a_command_line_mistake(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    p = run("invoke", "input_guard", "--registry", "reg", "--input", "x", "--metric",
            "toxicity", cwd=policies)
    assert p.returncode == 2 and "write NAME=VALUE" in p.stderr


def test_inspect_of_a_source_directory_says_it_is_not_a_registry(policies: Path) -> None:
    p = run("inspect", "policies/", cwd=policies)
    assert p.returncode == 2 and "is not a registry" in p.stderr and "stageguard check" in \
        p.stderr
    assert p.stdout == ""


def test_version_flags_and_python_dash_m(policies: Path) -> None:
    import sys

    short, long = run("-V"), run("--version")
    assert short.returncode == long.returncode == 0 and short.stdout == long.stdout
    assert short.stdout.startswith("stageguard ")
    module = subprocess.run([sys.executable, "-m", "stageguard", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout == short.stdout


def test_typos_get_suggestions_and_the_subcommands_usage() -> None:
    p = run("chek", "x")
    assert p.returncode == 2 and "did you mean 'check'?" in p.stderr
    p = run("lint", "x", "--strct")
    assert p.returncode == 2 and "did you mean '--strict'?" in p.stderr
    assert p.stderr.startswith("usage: stageguard lint")
    p = run("check", "x", "--bogus")
    assert p.returncode == 2 and p.stderr.startswith("usage: stageguard check")


def test_check_reads_standard_input() -> None:
    bad = "project p\nstage s {\n  ruleset r {\n    when output_toxicty > 0.5\n  }\n}\n"
    p = subprocess.run([str(EXE), "check", "-"], input=bad, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "<stdin>:4:10" in p.stderr and "output_toxicity" in p.stderr
    good = bad.replace("toxicty", "toxicity")
    p = subprocess.run([str(EXE), "check", "-"], input=good, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "ok: 1 file, 1 stage" in p.stdout


def test_fmt_diff_and_check_combine_and_fail_on_changes(tmp_path: Path) -> None:
    messy = tmp_path / "m.sg"
    messy.write_text("project p\nstage s {\n ruleset r {\n   when output_toxicity>0.5\n }\n}\n")
    diff = run("fmt", "--diff", str(messy))
    assert diff.returncode == 1 and diff.stdout.startswith("---")
    both = run("fmt", "--check", "--diff", str(messy))
    assert both.returncode == 1 and "+    when output_toxicity > 0.5" in both.stdout
    assert "would be reformatted" in both.stderr
    assert run("fmt", "--write", "--check", str(messy)).returncode == 2
    assert run("fmt", "--write", str(messy)).returncode == 0
    clean = run("fmt", "--check", "--diff", str(messy))
    assert clean.returncode == 0 and clean.stdout == ""


def test_check_strict_fails_on_warnings(tmp_path: Path) -> None:
    warned = tmp_path / "w.sg"
    warned.write_text("project p\nstage s {\n  description \"nothing yet\"\n}\n")  # SG0310
    assert run("check", str(warned)).returncode == 0
    strict = run("check", "--strict", str(warned))
    assert strict.returncode == 1 and "SG0310" in strict.stderr and "--strict" in strict.stderr
    as_json = run("check", "--strict", "--format", "json", str(warned))
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["ok"] is False


def test_invoke_fail_on_and_one_format_spelling(policies: Path) -> None:
    run("build", "policies/", "--registry", "reg", cwd=policies)
    base = ("invoke", "output_guard", "--registry", "reg", "--output", "x", "--metric",
            "output_toxicity=0.95", "--metric", "output_pii=[]")
    assert run(*base, cwd=policies).returncode == 0
    failing = run(*base, "--fail-on", "triggered", "error", cwd=policies)
    assert failing.returncode == 1 and failing.stdout.startswith("TRIGGERED")
    assert run(*base, "--fail-on", "error", cwd=policies).returncode == 0
    as_json = run(*base, "--format", "json", "--fail-on", "triggered", cwd=policies)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["status"] == "TRIGGERED"
    older = run(*base, "--json", cwd=policies)  # the older spelling is still accepted
    assert older.returncode == 0 and json.loads(older.stdout)["status"] == "TRIGGERED"
    shown = run("stage", "show", "output_guard", "--registry", "reg", "--format", "json",
                cwd=policies)
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "output_guard"
    bad = run(*base, "--fail-on", "trigered", cwd=policies)
    assert bad.returncode == 2 and "did you mean 'triggered'?" in bad.stderr
