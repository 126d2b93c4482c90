"""Diagnostics: what every pass returns instead of raising for a user's mistake.

A diagnostic has a stable code (documented in docs/diagnostics.md), a severity, a message, a
primary span with a short label, optional help and related spans. `render` prints it the way
rustc does; `to_json` gives the same facts for tools.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from stageguard.runtime.unicode import without_surrogates

# Where each code is explained (SARIF rules and editors link here).
PROJECT_URL = "https://github.com/stageguard/stageguard"
DOCS_URL = f"{PROJECT_URL}/blob/main/docs/diagnostics.md"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Span(NamedTuple):
    """A region of one source file. Lines and columns are 1-based; offsets are 0-based.

    A named tuple rather than a frozen dataclass: the parser makes one per token, and a tuple
    is ten times cheaper to build (see benchmarks/RESULTS.md)."""

    file: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def contains(self, offset: int) -> bool:
        return self.start <= offset < max(self.end, self.start + 1)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Related:
    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span
    label: str = ""
    help: str | None = None
    related: tuple[Related, ...] = field(default=())
    # Extra facts for the reader (the analysis's witness payloads), and the same as data.
    notes: tuple[str, ...] = field(default=())
    data: Mapping[str, object] | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "label": self.label,
            "help": self.help,
            "span": _span_json(self.span),
            "related": [
                {"message": r.message, "span": _span_json(r.span)} for r in self.related
            ],
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"data": dict(self.data)} if self.data is not None else {}),
        }


def from_json(data: Mapping[str, object]) -> Diagnostic:
    """The Diagnostic `Diagnostic.to_json` gave (for a process that sends diagnostics to
    another, as the language server's analysis worker does)."""
    def span(d: object) -> Span:
        assert isinstance(d, Mapping)
        return Span(str(d["file"]), *(int(d[k]) for k in (
            "start", "end", "line", "column", "end_line", "end_column")))

    related = data.get("related") or []
    notes = data.get("notes") or []
    assert isinstance(related, list) and isinstance(notes, list)
    extra = data.get("data")
    return Diagnostic(str(data["code"]), Severity(str(data["severity"])), str(data["message"]),
                      span(data["span"]), str(data.get("label") or ""),
                      None if data.get("help") is None else str(data["help"]),
                      tuple(Related(span(r["span"]), str(r["message"])) for r in related),
                      tuple(str(n) for n in notes),
                      dict(extra) if isinstance(extra, Mapping) else None)


def _span_json(span: Span) -> dict[str, object]:
    return {
        "file": span.file,
        "start": span.start,
        "end": span.end,
        "line": span.line,
        "column": span.column,
        "end_line": span.end_line,
        "end_column": span.end_column,
    }


def span_at(file: str, text: str, start: int, end: int) -> Span:
    """The span of offsets [start, end) of `text`, with its lines and columns."""
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(file, start, end, line, column, end_line, end_column)


def error(code: str, message: str, span: Span, label: str = "", help: str | None = None,
          related: Iterable[Related] = ()) -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, span, label, help, tuple(related))


def warning(code: str, message: str, span: Span, label: str = "", help: str | None = None,
            related: Iterable[Related] = ()) -> Diagnostic:
    return Diagnostic(code, Severity.WARNING, message, span, label, help, tuple(related))


def info(code: str, message: str, span: Span, label: str = "", help: str | None = None,
         related: Iterable[Related] = ()) -> Diagnostic:
    return Diagnostic(code, Severity.INFO, message, span, label, help, tuple(related))


def did_you_mean(word: str, candidates: Iterable[str], quoted: bool = False) -> str | None:
    """A `help:` line suggesting the closest candidate, or None when nothing is close.
    `quoted` shows the suggestion as a string literal (labels are written in quotes)."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    if not matches:
        return None
    return f'did you mean "{matches[0]}"?' if quoted else f"did you mean `{matches[0]}`?"


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    return (d.span.file, d.span.start, d.span.end, d.code)


# ---- rendering ----------------------------------------------------------------------------


def plain(role: str, text: str) -> str:
    """The identity painter: `render` without colour."""
    return text


Painter = Callable[[str, str], str]  # (role, text) -> text; roles: see cli/style.py


def render(diagnostic: Diagnostic, sources: Mapping[str, str], paint: Painter = plain) -> str:
    """rustc-style text: header, location arrow, the source line(s) and carets, then help.

    `sources` maps a span's file to its text; a file we cannot show still gets its header and
    location so the diagnostic is never lost. `paint` colours the parts (the CLI's, on a
    terminal); the words are the same either way.
    """
    d = diagnostic
    sev = d.severity.value
    lines = [paint(sev, f"{sev}[{d.code}]") + paint("message", f": {d.message}")]
    text = sources.get(d.span.file)
    gutter = len(str(max(d.span.end_line, *(r.span.end_line for r in d.related), 1)))
    pad = " " * gutter
    bar = paint("gutter", f"{pad} |")
    lines.append(paint("gutter", f"{pad}--> ") + d.span.location)
    if text is not None:
        lines.append(bar)
        lines.extend(_excerpt(d.span, d.label, text, gutter, paint, sev))
        lines.append(bar)
    for rel in d.related:
        lines.append(paint("gutter", f"{pad} = ") + paint("note", "note") + f": {rel.message}")
        lines.append(paint("gutter", f"{pad}   --> ") + rel.span.location)
        rel_text = sources.get(rel.span.file)
        if rel_text is not None:
            lines.append(bar)
            lines.extend(_excerpt(rel.span, "", rel_text, gutter, paint, "related", caret="-"))
            lines.append(bar)
    for note in d.notes:
        lines.append(paint("gutter", f"{pad} = ") + note)
    if d.help:
        lines.append(paint("gutter", f"{pad} = ") + paint("help", "help") + f": {d.help}")
    return "\n".join(lines)


def _excerpt(span: Span, label: str, text: str, gutter: int, paint: Painter, role: str,
             caret: str = "^") -> list[str]:
    source_lines = text.splitlines() or [""]
    out: list[str] = []
    first = span.line
    # Multi-line spans show their first line only, underlined to its end: a block such as a
    # ruleset would otherwise print dozens of lines for one finding.
    last_line = source_lines[first - 1] if 0 < first <= len(source_lines) else ""
    shown = last_line.expandtabs(1)
    start_col = span.column
    if span.end_line == span.line:
        end_col = max(span.end_column, start_col + 1)
    else:
        end_col = max(len(shown) + 1, start_col + 1)
    out.append(paint("gutter", f"{str(first).rjust(gutter)} | ") + shown)
    marker = (caret * (end_col - start_col) + (" " + label if label else "")).rstrip()
    out.append(paint("gutter", f"{' ' * gutter} | ") + " " * (start_col - 1)
               + paint(role, marker))
    return out


def render_all(diagnostics: Sequence[Diagnostic], sources: Mapping[str, str],
               paint: Painter = plain) -> str:
    blocks = [render(d, sources, paint) for d in sorted(diagnostics, key=sort_key)]
    # A source handed over by an API may hold lone surrogates (reported as SG0002); shown
    # as U+FFFD, one for one, so the rendering can be written and the carets still line up.
    blocks = [without_surrogates(b) for b in blocks]
    if blocks:
        summary = []
        for severity in Severity:
            n = sum(1 for d in diagnostics if d.severity is severity)
            if n:
                plural = "s" if n != 1 and severity is not Severity.INFO else ""
                summary.append(f"{n} {severity.value}{plural}")
        blocks.append(paint("summary", " and ".join(summary) + " emitted"))
    return "\n\n".join(blocks)


def as_data(diagnostics: Sequence[Diagnostic]) -> list[dict[str, object]]:
    """The diagnostics as JSON data, in reading order."""
    return [d.to_json() for d in sorted(diagnostics, key=sort_key)]


def to_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps(as_data(diagnostics), indent=2, ensure_ascii=False)
