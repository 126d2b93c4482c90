"""What a team chooses to see: inline suppressions, `--select`/`--ignore`, severity overrides,
`--strict` and `--max-errors`, applied to the diagnostics of `check` and `lint` in one place.

A suppression is a comment `# stageguard: allow SG0706[, SG0702…] [reason]`:

- at the end of a line, it covers findings that start on that line;
- on a line of its own, it covers the declaration that starts on the next line of code (a
  whole ruleset, stage or metric declaration, or one rule), every finding inside it.

Errors are never suppressed, filtered or demoted: a policy with an error does not build, and
hiding it would only move the failure to `build`. `lint` reports a suppression that covered
nothing (`SG1101`), so stale ones do not pile up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Diagnostic, Severity, Span, sort_key, warning

UNUSED = "SG1101"
MALFORMED = "SG1102"

_DIRECTIVE = re.compile(r"#\s*stageguard\s*:\s*allow\b(?P<rest>.*)", re.IGNORECASE)
_CODES = re.compile(r"\s*(?P<codes>SG\d{4}(?:\s*,\s*SG\d{4})*)(?P<reason>\s.*)?$")
CODE_PATTERN = re.compile(r"^(ALL|SG\d{0,4})$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Which non-error findings are shown, and how severe each is. Patterns are codes or
    code prefixes (`SG07` is every analysis finding), as in ruff; `ALL` matches every code."""

    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    strict: bool = False
    max_errors: int | None = None


@dataclass(frozen=True, slots=True)
class Suppression:
    file: str
    codes: tuple[str, ...]
    comment: Span
    scope: tuple[int, int]  # source offsets [start, end) it covers


def matches(code: str, patterns: Iterable[str]) -> bool:
    return any(p == "ALL" or code.startswith(p) for p in patterns)


def _spans(node: object) -> Iterator[Span]:
    """Every span of a declaration and of what it holds (rulesets, rules, properties)."""
    if not is_dataclass(node):
        return
    span = getattr(node, "span", None)
    if isinstance(span, Span):
        yield span
    for f in fields(node):
        value = getattr(node, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if is_dataclass(item):
                yield from _spans(item)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")
    return starts


def suppressions(file: ast.PolicyFile, text: str) -> tuple[list[Suppression], list[Diagnostic]]:
    """The file's suppression comments and a warning for each one that cannot be read."""
    found: list[Suppression] = []
    problems: list[Diagnostic] = []
    directives = [(c, m) for c in file.comments if (m := _DIRECTIVE.match(c.text))]
    if not directives:
        return found, problems
    starts = _line_starts(text)
    lines = text.split("\n")
    by_line: dict[int, Span] = {}
    for item in file.items:
        for span in _spans(item):
            widest = by_line.get(span.line)
            if widest is None or span.end - span.start > widest.end - widest.start:
                by_line[span.line] = span
    for comment, m in directives:
        codes = _CODES.match(m.group("rest"))
        if not codes:
            problems.append(warning(
                MALFORMED, "this suppression names no diagnostic code", comment.span,
                "not read", help="write `# stageguard: allow SG0706` (codes separated by "
                "commas, then an optional reason)"))
            continue
        names = tuple(dict.fromkeys(c.strip().upper() for c in codes.group("codes").split(",")))
        line = comment.span.line
        before = text[starts[line - 1]:comment.span.start]
        if before.strip():
            scope = (starts[line - 1], comment.span.start)
        else:
            nxt = line + 1
            while nxt <= len(lines) and (not lines[nxt - 1].strip()
                                         or lines[nxt - 1].lstrip().startswith("#")):
                nxt += 1
            if nxt > len(lines):
                problems.append(warning(
                    MALFORMED, "this suppression is followed by no declaration",
                    comment.span, "covers nothing",
                    help="put it on the line before a ruleset, rule or stage, or at the end "
                    "of the line it is about"))
                continue
            node = by_line.get(nxt)
            end = starts[nxt] if nxt < len(starts) else len(text)
            scope = (node.start, node.end) if node else (starts[nxt - 1], end)
        found.append(Suppression(file.path, names, comment.span, scope))
    return found, problems


def _covers(s: Suppression, d: Diagnostic) -> bool:
    start, end = s.scope
    return d.span.file == s.file and d.code in s.codes and start <= d.span.start < max(
        end, start + 1)


def _with_severity(d: Diagnostic, severity: Severity) -> Diagnostic:
    if d.severity is severity:
        return d
    return Diagnostic(d.code, severity, d.message, d.span, d.label, d.help, d.related,
                      d.notes, d.data)


def apply(diagnostics: Sequence[Diagnostic], files: Sequence[ast.PolicyFile],
          sources: Mapping[str, str], settings: Settings,
          report_unused: bool = False) -> list[Diagnostic]:
    """The diagnostics a run reports: suppressed and unselected findings dropped (never an
    error), severities overridden, `strict` applied, unreadable and (when `report_unused`,
    i.e. every code has been computed) unused suppressions reported."""
    allows: list[Suppression] = []
    out: list[Diagnostic] = []
    for f in files:
        text = sources.get(f.path)
        if text is not None:
            found, problems = suppressions(f, text)
            allows.extend(found)
            out.extend(problems)
    used: set[tuple[int, str]] = set()
    for d in diagnostics:
        if d.is_error:
            out.append(d)
            continue
        covering = [(i, s) for i, s in enumerate(allows) if _covers(s, d)]
        if covering:
            used.update((i, d.code) for i, _ in covering)
            continue
        out.append(d)
    if report_unused:
        errors = {(d.span.file, d.code) for d in diagnostics if d.is_error}
        for i, s in enumerate(allows):
            for code in s.codes:
                if (i, code) in used:
                    continue
                why = (f"`{code}` is an error here, and errors cannot be allowed"
                       if (s.file, code) in errors else f"no `{code}` finding is covered by it")
                out.append(warning(UNUSED, f"unused suppression of `{code}`", s.comment,
                                   why, help="remove it (or the code from its list)"))
    shown = []
    for d in out:
        if d.is_error:
            shown.append(d)
            continue
        if not matches(d.code, settings.select) or matches(d.code, settings.ignore):
            continue
        severity = _override(d.code, settings.severity)
        if severity is not None:
            d = _with_severity(d, severity)
        if settings.strict and d.severity is Severity.WARNING:
            d = _with_severity(d, Severity.ERROR)
        shown.append(d)
    return shown


def _override(code: str, table: Mapping[str, Severity]) -> Severity | None:
    """The most specific override: `SG0706` before `SG07` before `ALL`."""
    best: tuple[int, Severity] | None = None
    for pattern, severity in table.items():
        if pattern == "ALL" or code.startswith(pattern):
            rank = -1 if pattern == "ALL" else len(pattern)
            if best is None or rank > best[0]:
                best = (rank, severity)
    return best[1] if best else None


def limit_errors(diagnostics: Sequence[Diagnostic],
                 max_errors: int | None) -> tuple[list[Diagnostic], int]:
    """At most `max_errors` errors (the first in reading order), every other finding kept;
    and how many errors were left out."""
    if max_errors is None:
        return list(diagnostics), 0
    kept: list[Diagnostic] = []
    errors = 0
    for d in sorted(diagnostics, key=sort_key):
        if d.is_error:
            errors += 1
            if errors > max_errors:
                continue
        kept.append(d)
    return kept, max(0, errors - max_errors)
