"""The CI formats (compiler/ci_formats.py) as CI reads them: SARIF validated against the OASIS
SARIF 2.1.0 schema, GitHub annotations parsed back by GitHub's own escaping rules, JUnit
parsed as XML; and every command's JSON validated against its schema in docs/schemas/."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from referencing import Registry, Resource

from stageguard.compiler.ci_formats import annotation
from stageguard.compiler.diagnostics import Span
from tests.conftest import POLICIES
from tests.profiles import examples
from tests.test_cli import no_traceback, run

ROOT = Path(__file__).parent.parent
SARIF = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (ROOT / "docs" / "schemas").glob("*.json")}
CORPUS = Path(__file__).parent / "lint" / "findings.sg"


def validate(command: str, doc: object) -> None:
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
    schema = SCHEMAS[f"{command}.schema.json"]
    jsonschema.Draft202012Validator(schema, registry=registry,
                                    format_checker=jsonschema.FormatChecker()).validate(doc)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies")
    (tmp_path / "corpus").mkdir()
    shutil.copy(CORPUS, tmp_path / "corpus" / "findings.sg")
    return tmp_path


def break_a_case(work: Path) -> Path:
    """One policy test that now fails (its status expected wrongly); its file."""
    case = work / "policies" / "input_guard.test.toml"
    case.write_text(case.read_text().replace(
        'expect = { status = "not_triggered", text = "Please answer briefly." }',
        'expect = { status = "triggered", text = "Please answer briefly." }'))
    return case


# ---- SARIF --------------------------------------------------------------------------------


def test_lint_sarif_validates_and_says_what_json_says(work: Path) -> None:
    sarif = run("lint", "corpus", "--format", "sarif", "--isolated", cwd=work)
    plain = run("lint", "corpus", "--format", "json", "--isolated", cwd=work)
    assert sarif.returncode == plain.returncode == 0
    log = json.loads(sarif.stdout)
    jsonschema.Draft4Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
    [the_run] = log["runs"]
    diagnostics = json.loads(plain.stdout)["diagnostics"]
    results = the_run["results"]
    assert len(results) == len(diagnostics) == 11  # tests/test_lint.py lists them
    level = {"error": "error", "warning": "warning", "info": "note"}
    for r, d in zip(results, diagnostics, strict=True):
        assert r["ruleId"] == d["code"] and r["level"] == level[d["severity"]]
        assert the_run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == d["code"]
        region = r["locations"][0]["physicalLocation"]["region"]
        assert (region["startLine"], region["startColumn"], region["endLine"],
                region["endColumn"]) == (d["span"]["line"], d["span"]["column"],
                                         d["span"]["end_line"], d["span"]["end_column"])
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
            "corpus/findings.sg"
        assert r["message"]["text"].startswith(d["message"])
    shadowed = next(r for r in results if r["ruleId"] == "SG0702")
    assert shadowed["relatedLocations"][0]["physicalLocation"]["region"]["startLine"] == 23
    assert "witness:" in shadowed["message"]["text"]


def test_check_sarif_of_errors_and_of_standard_input(work: Path) -> None:
    p = run("check", "-", "--format", "sarif", cwd=work, input="stage s {\n  typo\n}\n")
    assert p.returncode == 1
    log = json.loads(p.stdout)
    jsonschema.Draft4Validator(SARIF, format_checker=jsonschema.FormatChecker()).validate(log)
    [result] = log["runs"][0]["results"]
    assert result["level"] == "error" and result["ruleId"] == "SG0001"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "%3Cstdin%3E"


def test_output_file_is_written_whole(work: Path) -> None:
    p = run("lint", "corpus", "--format", "sarif", "--output-file", "out/lint.sarif",
            "--isolated", cwd=work)
    assert p.returncode == 0 and p.stdout == ""
    assert json.loads((work / "out" / "lint.sarif").read_text())["version"] == "2.1.0"


# ---- GitHub annotations -------------------------------------------------------------------

_COMMAND = re.compile(r"^::(error|warning|notice) ([^:]*)::(.*)$")


def _unescape(text: str) -> str:
    return (text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
            .replace("%2C", ",").replace("%25", "%"))


def parse_annotation(line: str) -> tuple[str, dict[str, str], str]:
    m = _COMMAND.match(line)
    assert m, line
    props = dict(p.split("=", 1) for p in m.group(2).split(","))
    return m.group(1), {k: _unescape(v) for k, v in props.items()}, _unescape(m.group(3))


@examples(weight=3)
@given(st.text(), st.text(min_size=1), st.text(min_size=1))
def test_annotations_carry_any_text_intact(message: str, title: str, file: str) -> None:
    line = annotation("error", message, title, Span(file, 0, 1, 3, 2, 3, 5))
    assert "\n" not in line and "\r" not in line
    level, props, body = parse_annotation(line)
    assert (level, body, props["title"], props["file"]) == ("error", message, title, file)
    assert (props["line"], props["col"], props["endColumn"]) == ("3", "2", "5")


def test_lint_annotations_point_where_the_findings_are(work: Path) -> None:
    p = run("lint", "corpus", "--format", "github", "--isolated", cwd=work)
    plain = json.loads(run("lint", "corpus", "--format", "json", "--isolated",
                           cwd=work).stdout)["diagnostics"]
    lines = p.stdout.splitlines()
    assert len(lines) == len(plain)
    for line, d in zip(lines, plain, strict=True):
        level, props, body = parse_annotation(line)
        assert level == {"error": "error", "warning": "warning", "info": "notice"}[
            d["severity"]]
        assert props["file"] == "corpus/findings.sg" and int(props["line"]) == d["span"]["line"]
        assert props["title"].startswith(d["code"]) and body.startswith(d["message"])


def test_test_and_diff_annotations(work: Path) -> None:
    case = break_a_case(work)
    p = run("test", "policies", "--format", "github", cwd=work)
    assert p.returncode == 1
    [line] = p.stdout.splitlines()
    level, props, body = parse_annotation(line)
    assert (level, props["file"]) == ("error", "policies/input_guard.test.toml")
    assert case.read_text().splitlines()[int(props["line"]) - 1] == \
        'name = "simple instructions alone are not an injection"'
    assert "status: expected triggered, got not_triggered" in body
    shutil.copytree(work / "policies", work / "after")
    guard = work / "after" / "input_guard.sg"
    guard.write_text(guard.read_text().replace("input_toxicity > 0.85", "input_toxicity > 0.8"))
    p = run("diff", "policies", "after", "--format", "github", cwd=work)
    assert p.returncode == 1
    [line] = p.stdout.splitlines()
    level, props, body = parse_annotation(line)
    assert level == "warning" and "support_bot/input_guard" in props["title"]
    assert "9 regions change fate" in body


# ---- JUnit --------------------------------------------------------------------------------


def test_test_junit_is_what_ci_reporters_read(work: Path) -> None:
    break_a_case(work)
    p = run("test", "policies", "--format", "junit", cwd=work)
    assert p.returncode == 1
    assert p.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')
    root = ET.fromstring(p.stdout)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "policies/agent_tools.test.toml", "policies/input_guard.test.toml",
        "policies/output_guard.test.toml"]
    assert root.get("tests") == str(sum(int(s.get("tests", "")) for s in suites))
    assert root.get("failures") == "1"
    [failure] = root.iter("failure")
    assert failure.get("message") == "status: expected triggered, got not_triggered"
    assert "expected" in (failure.text or "") and "actual" in (failure.text or "")
    for case_el in root.iter("testcase"):
        assert float(case_el.get("time", "x")) >= 0 and case_el.get("file")


def test_lint_junit_fails_the_files_with_errors(work: Path) -> None:
    p = run("lint", "corpus", "policies", "--format", "junit", "--strict", "--isolated",
            cwd=work)
    assert p.returncode == 1
    root = ET.fromstring(p.stdout)
    failed = {c.get("name"): c.find("failure") for c in root.iter("testcase")}
    assert failed["corpus/findings.sg"] is not None
    assert failed["policies/input_guard.sg"] is None  # only informational findings there
    message = failed["corpus/findings.sg"].get("message", "")  # type: ignore[union-attr]
    assert message.startswith("corpus/findings.sg:12:5: SG0701 ") and "more)" in message


# ---- JSON, against docs/schemas -----------------------------------------------------------


def test_the_schemas_are_valid_schemas() -> None:
    assert set(SCHEMAS) == {"check.schema.json", "lint.schema.json", "test.schema.json",
                            "diff.schema.json", "diagnostic.schema.json", "region.schema.json"}
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_commands_json_matches_its_schema(work: Path) -> None:
    outputs = {
        "check": [run("check", "policies", "--format", "json", cwd=work),
                  run("check", "-", "--format", "json", cwd=work, input="stage {")],
        "lint": [run("lint", "corpus", "--format", "json", "--isolated", cwd=work),
                 run("lint", "policies", "--format", "json", "--strict", cwd=work)],
        "test": [run("test", "policies", "--format", "json", cwd=work)],
    }
    shutil.copytree(work / "policies", work / "after")
    guard = work / "after" / "input_guard.sg"
    guard.write_text(guard.read_text().replace("input_toxicity > 0.85", "input_toxicity > 0.8")
                     .replace("notify", "# notify", 1))
    outputs["diff"] = [run("diff", "policies", "after", "--format", "json", cwd=work),
                       run("diff", "policies", "after", "--format", "json",
                           "--max-regions", "2", cwd=work),
                       run("diff", "policies", "policies", "--format", "json", cwd=work)]
    for command, runs in outputs.items():
        for p in runs:
            no_traceback(p)
            validate(command, json.loads(p.stdout))
    # JSON is never capped: --max-regions is for the text and Markdown forms.
    capped = json.loads(outputs["diff"][1].stdout)
    assert capped == json.loads(outputs["diff"][0].stdout)
    changed = next(s for s in capped["stages"] if s["regions"])
    assert len(changed["regions"]) == 9


def test_the_schemas_reject_what_the_commands_never_print() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate("check", {"ok": True, "diagnostics": [{"code": "SG01"}]})
    with pytest.raises(jsonschema.ValidationError):
        validate("test", {"passed": 1, "failed": 0, "results": [], "coverage": {},
                          "extra": 1})
