"""Suppressions, --select/--ignore, severity overrides, --strict and --max-errors
(compiler/lint_control.py), on the lint corpus whose findings tests/test_lint.py pins."""

from __future__ import annotations

from pathlib import Path

from stageguard.compiler.diagnostics import Diagnostic, Severity
from stageguard.compiler.formatter import format_text
from stageguard.compiler.lint import lint
from stageguard.compiler.lint_control import MALFORMED, UNUSED, Settings, apply, limit_errors
from stageguard.compiler.pipeline import compile_text

CORPUS = Path(__file__).parent / "lint" / "findings.sg"


DEFAULT = Settings()


def findings(text: str, settings: Settings = DEFAULT,
             unused: bool = True) -> list[Diagnostic]:
    c = compile_text(text, "findings.sg")
    found = [*c.diagnostics, *(lint(c) if c.ok else [])]
    return apply(found, c.files, c.sources, settings, report_unused=unused)


def codes(found: list[Diagnostic]) -> list[tuple[str, int]]:
    return sorted((d.code, d.span.line) for d in found)


BASE = CORPUS.read_text()
ALL = codes(findings(BASE))


def test_the_corpus_has_the_findings_the_tests_rely_on() -> None:
    assert ("SG0702", 34) in ALL and ("SG0706", 29) in ALL and ("SG0706", 47) in ALL
    assert ("SG0701", 12) in ALL and ("SG0701", 18) in ALL


def test_a_comment_at_the_end_of_a_line_covers_findings_starting_on_it() -> None:
    text = BASE.replace("  ruleset very_toxic_long {",
                        "  ruleset very_toxic_long {  # stageguard: allow SG0702 on purpose")
    got = codes(findings(text))
    assert got == [c for c in ALL if c != ("SG0702", 34)]


def test_a_comment_on_its_own_line_covers_the_whole_next_declaration() -> None:
    # SG0706 on `tone` twice (it overlaps two rulesets), both inside the ruleset's span.
    text = BASE.replace("  ruleset tone {", "  # stageguard: allow SG0706\n\n  ruleset tone {")
    got = codes(findings(text))
    assert ("SG0706", 48) not in got and ("SG0706", 29) in got
    assert [c for c in got if c[0] != "SG0706"] == [
        (code, line + (2 if line > 46 else 0)) for code, line in ALL if code != "SG0706"]


def test_a_comment_before_a_rule_covers_only_that_rule() -> None:
    text = BASE.replace("    when output_sexist > 1",
                        "    # stageguard: allow SG0704, SG0705\n    when output_sexist > 1")
    got = codes(findings(text))
    # SG0705 on line 44 (was 43) is covered; SG0704 on line 42 is not, and is unused here.
    assert ("SG0705", 44) not in got and ("SG0704", 42) in got
    unused = [d for d in findings(text) if d.code == UNUSED]
    assert [d.message for d in unused] == ["unused suppression of `SG0704`"]


def test_unused_suppressions_are_reported_by_lint_only() -> None:
    text = BASE.replace("  ruleset long {", "  ruleset long {  # stageguard: allow SG0702")
    assert (UNUSED, 29) in codes(findings(text, unused=True))
    assert UNUSED not in {d.code for d in findings(text, unused=False)}


def test_errors_are_never_suppressed_filtered_or_demoted() -> None:
    text = "project p\nstage s {\n  ruleset r {  # stageguard: allow SG0201\n" \
           "    when output_toxicty > 0.5\n    passthrough\n  }\n}\n"
    shown = findings(text, Settings(ignore=("ALL",), severity={"SG02": Severity.INFO}))
    errors = [d for d in shown if d.code == "SG0201"]
    assert errors and all(d.severity is Severity.ERROR for d in errors)
    # With nothing ignored, the suppression that names an error is reported as unused.
    shown = findings(text)
    [unused] = [d for d in shown if d.code == UNUSED]
    assert "errors cannot be allowed" in unused.label


def test_a_malformed_suppression_is_reported_not_ignored() -> None:
    text = BASE.replace("  ruleset long {", "  ruleset long {  # stageguard: allow shadowing")
    found = findings(text, unused=False)
    [bad] = [d for d in found if d.code == MALFORMED]
    assert bad.span.line == 29 and bad.severity is Severity.WARNING
    assert ("SG0706", 29) in codes(found)  # nothing was suppressed by it


def test_select_and_ignore_take_codes_and_prefixes() -> None:
    only_07 = codes(findings(BASE, Settings(select=("SG0701", "SG0702"))))
    assert only_07 == [c for c in ALL if c[0] in ("SG0701", "SG0702")]
    no_info = codes(findings(BASE, Settings(ignore=("SG0706",))))
    assert no_info == [c for c in ALL if c[0] != "SG0706"]
    assert codes(findings(BASE, Settings(select=("SG07",), ignore=("SG070",)))) == []


def test_severity_overrides_take_the_most_specific_pattern() -> None:
    table = {"SG07": Severity.INFO, "SG0702": Severity.ERROR}
    shown = {(d.code, d.span.line): d.severity for d in findings(BASE, Settings(severity=table))}
    assert shown[("SG0702", 34)] is Severity.ERROR
    assert shown[("SG0701", 12)] is Severity.INFO and shown[("SG0706", 29)] is Severity.INFO


def test_strict_applies_after_suppressions_and_overrides() -> None:
    strict = findings(BASE, Settings(strict=True))
    assert {d.severity for d in strict if d.code == "SG0701"} == {Severity.ERROR}
    assert {d.severity for d in strict if d.code == "SG0706"} == {Severity.INFO}
    calm = findings(BASE, Settings(strict=True, severity={"SG07": Severity.INFO}))
    assert not any(d.is_error for d in calm)


def test_max_errors_keeps_the_first_errors_and_counts_the_rest() -> None:
    strict = findings(BASE, Settings(strict=True))
    n = sum(1 for d in strict if d.is_error)
    kept, hidden = limit_errors(strict, 2)
    assert sum(1 for d in kept if d.is_error) == 2 and hidden == n - 2
    assert [d.span.line for d in kept if d.is_error] == [12, 18]
    assert {d.code for d in kept if not d.is_error} == {"SG0706"}  # other findings stay


def test_formatting_keeps_suppressions_working() -> None:
    text = BASE.replace("  ruleset very_toxic_long {",
                        "  ruleset   very_toxic_long {   # stageguard: allow SG0702") \
        .replace("  ruleset tone {", "  # stageguard: allow SG0706\n\n\n  ruleset tone {")
    formatted = format_text(text, "findings.sg")
    assert formatted.ok and formatted.text is not None and formatted.text != text
    before = [(d.code, d.message) for d in findings(text)]
    after = [(d.code, d.message) for d in findings(formatted.text)]
    assert sorted(before) == sorted(after)
    assert "SG0702" not in {c for c, _ in after}
