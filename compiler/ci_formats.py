"""Findings in the formats CI systems read: SARIF 2.1.0 (code scanning), GitHub workflow
annotations, and JUnit XML (test summaries). The JSON form is each command's own
(`Diagnostic.to_json`, with a JSON Schema per command under docs/schemas/)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree as ET

from stageguard.compiler.diagnostics import (
    DOCS_URL,
    PROJECT_URL,
    Diagnostic,
    Severity,
    Span,
    render,
    sort_key,
)

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_ANNOTATION = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


# ---- SARIF --------------------------------------------------------------------------------


def _uri(file: str) -> str:
    return quote(file, safe="/:@-._~")


def _region(span: Span) -> dict[str, int]:
    # SARIF's endColumn is the column after the region, as our spans' end_column is.
    return {"startLine": span.line, "startColumn": span.column,
            "endLine": span.end_line, "endColumn": max(span.end_column, 1)}


def _location(span: Span, message: str | None = None, id: int | None = None) -> dict[str, object]:
    location: dict[str, object] = {"physicalLocation": {
        "artifactLocation": {"uri": _uri(span.file), **(
            {} if Path(span.file).is_absolute() else {"uriBaseId": "SRCROOT"})},
        "region": _region(span)}}
    if id is not None:
        location["id"] = id
    if message:
        location["message"] = {"text": message}
    return location


def sarif(diagnostics: Sequence[Diagnostic], tool_version: str, command: str) -> dict[str, object]:
    """One SARIF log with one run. Rules are the codes that occur, each linking to its entry
    in docs/diagnostics.md; a finding's label, help and witness notes are in its message."""
    ordered = sorted(diagnostics, key=sort_key)
    codes = sorted({d.code for d in ordered})
    index = {code: i for i, code in enumerate(codes)}
    default = {d.code: d.severity for d in ordered}
    rules = [{"id": code, "helpUri": DOCS_URL,
              "defaultConfiguration": {"level": _LEVEL[default[code]]}} for code in codes]
    results = []
    for d in ordered:
        text = d.message + (f" ({d.label})" if d.label else "")
        extra = [*(f"= {n}" for n in d.notes), *([f"help: {d.help}"] if d.help else [])]
        result: dict[str, object] = {
            "ruleId": d.code, "ruleIndex": index[d.code], "level": _LEVEL[d.severity],
            "message": {"text": "\n".join([text, *extra])},
            "locations": [_location(d.span)],
        }
        if d.related:
            result["relatedLocations"] = [_location(r.span, r.message, i)
                                          for i, r in enumerate(d.related, 1)]
        if d.data is not None:
            result["properties"] = {"data": dict(d.data)}
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "stageguard", "version": tool_version,
                                "informationUri": PROJECT_URL,
                                "rules": rules}},
            "originalUriBaseIds": {"SRCROOT": {"uri": Path.cwd().resolve().as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True,
                             "commandLine": f"stageguard {command}"}],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


# ---- GitHub workflow annotations ----------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, title: str, span: Span | None = None) -> str:
    """One `::error file=…,line=…::message` command (GitHub's workflow command syntax)."""
    props = []
    if span is not None:
        props.append(f"file={_escape_property(span.file)}")
        props += [f"line={span.line}", f"endLine={span.end_line}"]
        if span.line == span.end_line:  # columns are read only on a one-line region
            props += [f"col={span.column}", f"endColumn={max(span.end_column, span.column)}"]
    props.append(f"title={_escape_property(title)}")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def github(diagnostics: Sequence[Diagnostic]) -> str:
    lines = []
    for d in sorted(diagnostics, key=sort_key):
        body = "\n".join([d.message + (f" ({d.label})" if d.label else ""),
                          *(f"= {n}" for n in d.notes),
                          *([f"help: {d.help}"] if d.help else [])])
        lines.append(annotation(_ANNOTATION[d.severity], body, f"{d.code} {d.message}"[:200],
                                d.span))
    return "".join(line + "\n" for line in lines)


# ---- JUnit XML ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JUnitCase:
    suite: str      # the file the case belongs to
    name: str
    seconds: float
    failure: str | None = None  # the one-line message; None: passed
    details: str = ""           # the full report (failure text or system-out)
    kind: str = "failure"       # the failure's type attribute


def junit(cases: Iterable[JUnitCase], name: str, started: float | None = None) -> str:
    """JUnit XML as Jenkins, GitLab and the GitHub test reporters read it: a declaration,
    `<testsuites>` of one `<testsuite>` per file, times in seconds, and failures whose
    `message` is one line and whose text is the whole report."""
    by_suite: dict[str, list[JUnitCase]] = {}
    for c in cases:
        by_suite.setdefault(c.suite, []).append(c)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started or time.time()))
    root = ET.Element("testsuites", name=name)
    total = failures = 0
    seconds = 0.0
    for suite_name, members in by_suite.items():
        failed = sum(1 for c in members if c.failure is not None)
        spent = sum(c.seconds for c in members)
        suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(members)),
                              failures=str(failed), errors="0", skipped="0",
                              time=f"{spent:.3f}", timestamp=stamp)
        for c in members:
            case = ET.SubElement(suite, "testcase", classname=suite_name, name=c.name,
                                 file=suite_name, time=f"{c.seconds:.3f}")
            if c.failure is not None:
                failure = ET.SubElement(case, "failure", message=c.failure, type=c.kind)
                failure.text = c.details
            elif c.details:
                ET.SubElement(case, "system-out").text = c.details
        total += len(members)
        failures += failed
        seconds += spent
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def diagnostics_junit(diagnostics: Sequence[Diagnostic], sources: Mapping[str, str],
                      command: str, seconds: float) -> str:
    """One test case per policy file read (and per other file a diagnostic names): failed
    when the file has an error (after `--strict`), the findings rendered as the text output
    shows them."""
    names = list(dict.fromkeys([*sources, *(d.span.file for d in diagnostics)]))
    cases = []
    for file in names:
        mine = [d for d in sorted(diagnostics, key=sort_key) if d.span.file == file]
        errors = [d for d in mine if d.is_error]
        details = "\n\n".join(render(d, sources) for d in mine)
        failure = None
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            failure = f"{first.span.location}: {first.code} {first.message}{more}"
        cases.append(JUnitCase(f"stageguard {command}", file,
                               seconds / max(len(names), 1), failure, details,
                               errors[0].code if errors else "failure"))
    return junit(cases, f"stageguard {command}")


def case_line(path: str, name: str) -> int | None:
    """The line of a policy test case's `name = "…"` in its file (for annotations)."""
    base = re.sub(r"\[\d+\]$", "", name)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for n, line in enumerate(lines, 1):
        if re.match(r"\s*name\s*=\s*[\"']" + re.escape(base) + r"[\"']\s*$", line):
            return n
    return None
