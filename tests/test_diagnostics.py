"""The diagnostics corpus: one policy per error class under tests/diagnostics/.

Each `.sg` file states its expected diagnostics in `# expect: CODE LINE:COL` comments; the
rendered text is compared with the `.txt` beside it (a reviewed snapshot). Regenerate the
snapshots with STAGEGUARD_UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from stageguard.compiler import diagnostics as diag
from stageguard.compiler.pipeline import compile_text

CORPUS = Path(__file__).parent / "diagnostics"
CASES = sorted(CORPUS.glob("*.sg"))
EXPECT = re.compile(r"^# expect: (SG\d{4}) (\d+):(\d+)$", re.MULTILINE)


def _compile(case: Path):
    text = case.read_text(encoding="utf-8")
    return text, compile_text(text, f"diagnostics/{case.name}")


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_expected_codes_and_positions(case: Path) -> None:
    text, result = _compile(case)
    expected = sorted((c, int(line), int(col)) for c, line, col in EXPECT.findall(text))
    assert expected, "every corpus file states what it expects"
    got = sorted((d.code, d.span.line, d.span.column) for d in result.diagnostics)
    assert got == expected
    # Any error means no artifact; warnings alone never block a build.
    assert bool(result.artifacts) == result.ok
    assert result.ok == all(d.severity is diag.Severity.WARNING for d in result.diagnostics)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_rendered_snapshot(case: Path) -> None:
    _, result = _compile(case)
    rendered = diag.render_all(result.diagnostics, result.sources) + "\n"
    snapshot = case.with_suffix(".txt")
    if os.environ.get("STAGEGUARD_UPDATE_SNAPSHOTS"):
        snapshot.write_text(rendered, encoding="utf-8")
    assert rendered == snapshot.read_text(encoding="utf-8")


def test_corpus_covers_every_documented_code() -> None:
    documented = set(re.findall(r"^\| `(SG\d{4})`", (CORPUS.parent.parent / "docs" /
                                                      "diagnostics.md").read_text(),
                                re.MULTILINE))
    covered = set()
    for case in CASES:
        covered.update(c for c, _, _ in EXPECT.findall(case.read_text()))
    # I/O problems and string-level lexing problems are covered in test_parser/test_cli.
    elsewhere = {"SG0005", "SG0006", "SG0007", "SG0208", "SG0601", "SG0602", "SG0603"}
    # Limits: test_parser (SG0008) and test_limit_check (SG0311), at sizes no corpus holds.
    elsewhere |= {"SG0008", "SG0311"}
    # The analysis's findings and the formatter's refusal: test_lint and test_formatter.
    elsewhere |= {"SG0701", "SG0702", "SG0703", "SG0704", "SG0705", "SG0706", "SG0707",
                  "SG0708", "SG0801"}
    # Galileo import: test_galileo_interop.
    elsewhere |= {"SG0901", "SG0902", "SG0903", "SG0904", "SG0905", "SG0906"}
    # Publishing source to the server: test_server.
    elsewhere |= {"SG1001", "SG1002", "SG1003"}
    # Suppressions, judged after the analysis: test_lint_control.
    elsewhere |= {"SG1101", "SG1102"}
    assert documented - covered == elsewhere


def test_rendering_shape_is_rustc_like() -> None:
    text = "project p\nstage s {\n  ruleset a {\n    when output_toxicty > 0.5\n  }\n}\n"
    result = compile_text(text, "x.sg")
    out = diag.render(result.diagnostics[0], result.sources).splitlines()
    assert out[0] == "error[SG0201]: unknown metric `output_toxicty`"
    assert out[1] == " --> x.sg:4:10"
    assert out[3] == "4 |     when output_toxicty > 0.5"
    # The carets sit exactly under the misspelt name.
    caret_line = out[4]
    start = caret_line.index("^")
    assert caret_line[start:].startswith("^" * len("output_toxicty") + " ")
    assert out[3][start] == "o" and out[3][start + len("output_toxicty")] == " "
    assert out[-1] == "  = help: did you mean `output_toxicity`?"


def test_json_format_carries_the_same_facts() -> None:
    result = compile_text("project p\nstage s {\n  ruleset a {\n    when x > 1\n  }\n}\n",
                          "x.sg")
    (d,) = json.loads(diag.to_json(result.diagnostics))
    assert d["code"] == "SG0201" and d["severity"] == "error"
    assert d["span"]["file"] == "x.sg" and d["span"]["line"] == 4 and d["span"]["column"] == 10
    assert d["span"]["end"] - d["span"]["start"] == 1


def test_diagnostics_survive_json() -> None:
    """What the language server's analysis worker sends back is what it found."""
    from stageguard.compiler.lint import lint

    text = (CORPUS.parent / "lint" / "findings.sg").read_text()
    result = compile_text(text, "findings.sg")
    found = [*result.diagnostics, *lint(result)]
    assert found and any(d.related for d in found) and any(d.data for d in found)
    assert [diag.from_json(json.loads(json.dumps(d.to_json()))) for d in found] == found
