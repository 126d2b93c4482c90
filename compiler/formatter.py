"""`stageguard fmt`: one canonical layout, comments kept where they were.

The printer walks the AST and places every comment by position: a comment on the line where
a statement ends trails it; a comment on a line of its own leads the statement after it, or
closes its block when nothing follows; a comment inside a one-line statement (between `when`
and its metric, say) is moved to lead that statement; comments inside a list literal stay
beside their items. Blank lines between statements are kept, at most one.

Safety (Cedar's and black's rule): the output is parsed again and must give the same tree,
the same comments in the same order, and format to itself. Otherwise formatting is refused
with an internal-error diagnostic and nothing is written.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Diagnostic, Span, error, has_errors
from stageguard.compiler.parser import parse_file
from stageguard.compiler.unparse import SPELLING, string_literal
from stageguard.runtime import collector

WIDTH = 100
INDENT = "  "
INTERNAL = "SG0801"


@dataclass(frozen=True, slots=True)
class Formatted:
    text: str | None  # None when the file could not be formatted
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.text is not None


def format_text(text: str, path: str = "<input>") -> Formatted:
    with collector.paused():
        return _format_text(text, path)


def _format_text(text: str, path: str) -> Formatted:
    parsed = parse_file(text, path)
    if parsed.file is None or has_errors(parsed.diagnostics):
        return Formatted(None, parsed.diagnostics)
    out = _Printer(text, parsed.file).run()
    problem = _verify(parsed.file, out, path)
    if problem is not None:
        span = Span(path, 0, 0, 1, 1, 1, 1)
        return Formatted(None, (error(
            INTERNAL, f"internal error: the formatter would {problem}; the file is left "
            "unchanged", span, help="please report this with the file attached"),))
    return Formatted(out, ())


def _verify(before: ast.PolicyFile, out: str, path: str) -> str | None:
    again = parse_file(out, path)
    if again.file is None or has_errors(again.diagnostics):
        return "produce text that does not parse"
    if shape(again.file) != shape(before):
        return "change the meaning of the policy"
    if [c.text.rstrip() for c in again.file.comments] != \
            [c.text.rstrip() for c in before.comments]:
        return "lose or reorder comments"
    if _Printer(out, again.file).run() != out:
        return "not reach a fixed point (formatting its output changes it again)"
    return None


_IGNORED = frozenset({"span", "keyword", "operator_span", "text", "multiline", "path",
                      "comments"})


def shape(node: object) -> object:
    """The tree without positions or spelling: what formatting must preserve."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, *(
            (f.name, shape(getattr(node, f.name))) for f in dataclasses.fields(node)
            if f.name not in _IGNORED))
    if isinstance(node, tuple | list):
        return tuple(shape(x) for x in node)
    return node


# ---- the printer ------------------------------------------------------------------------------


def _number(num: ast.Num) -> str:
    t = num.text.lower()
    sign = ""
    if t[0] in "+-":
        sign, t = ("-" if t[0] == "-" else ""), t[1:]
    if t.startswith("."):
        t = "0" + t
    mantissa, e, exponent = t.partition("e")
    if mantissa.endswith("."):
        mantissa += "0"
    return sign + mantissa + (e + exponent.lstrip("+") if e else "")


def _multiline(value: str, indent: str) -> list[str]:
    """Swift-style block: lines at `indent`, closing quotes at `indent`."""
    body = []
    chars = list(value)
    for i, ch in enumerate(chars):
        if ch == "\\":
            body.append("\\\\")
        elif ch == '"' and "".join(chars[i + 1:i + 3]) == '""':
            body.append('\\"')
        elif ch == "\r":
            body.append("\\r")
        elif ch != "\n" and ch != "\t" and ord(ch) < 0x20:
            body.append(f"\\u{ord(ch):04x}")
        else:
            body.append(ch)
    lines = "".join(body).split("\n")
    return ['"""', *[(indent + line) if line else "" for line in lines], indent + '"""']


class _Printer:
    def __init__(self, text: str, file: ast.PolicyFile) -> None:
        self.text = text
        self.file = file
        self.comments = sorted(file.comments, key=lambda c: c.span.start)
        self.starts = [c.span.start for c in self.comments]
        self.placed: set[int] = set()
        self.lines: list[str] = []

    def run(self) -> str:
        self.block(self.file.items, 0, len(self.text), "", top=True)
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "\n".join(self.lines) + "\n" if self.lines else ""

    # -- comments

    def comments_in(self, lo: int, hi: int) -> list[ast.Comment]:
        # Bisected: a file with a comment per statement must not format in quadratic time.
        first, last = bisect_left(self.starts, lo), bisect_left(self.starts, hi)
        return [c for c in self.comments[first:last] if c.span.start not in self.placed]

    def take(self, comment: ast.Comment) -> str:
        self.placed.add(comment.span.start)
        return comment.text.rstrip()

    def blank_between(self, a: int, b: int) -> bool:
        return self.text.count("\n", a, b) >= 2

    def trailing(self, end: int, end_line: int) -> str:
        """A comment after `end` on the same line (a comment runs to the end of its line, so
        there is at most one)."""
        i = bisect_left(self.starts, end)
        if i < len(self.comments):
            c = self.comments[i]
            gap = self.text[end:c.span.start]
            # A list element's comma may sit between the element and its comment.
            if c.span.line == end_line and c.span.start not in self.placed \
                    and not gap.replace(",", "").strip():
                return "  " + self.take(c)
        return ""

    def block(self, items: Sequence[object], lo: int, hi: int, indent: str,
              top: bool = False) -> None:
        """Statements and free comments between offsets lo and hi, in source order."""
        entries: list[tuple[int, int, object]] = [
            (i.span.start, i.span.end, i) for i in items]  # type: ignore[attr-defined]
        starts = [s for s, _, _ in entries]  # items are in source order
        for c in self.comments_in(lo, hi):
            k = bisect_left(starts, c.span.start) - 1  # the last item starting before it
            if k < 0 or not entries[k][1] > c.span.start:  # ... does not hold it: free
                entries.append((c.span.start, c.span.end, c))
        entries.sort(key=lambda t: t[0])
        prev: tuple[int, object] | None = None
        for start, end, entry in entries:
            if isinstance(entry, ast.Comment) and entry.span.start in self.placed:
                continue  # already printed as some statement's trailing comment
            if prev is not None:
                prev_end, prev_entry = prev
                blank = self.blank_between(prev_end, start)
                if top and not isinstance(prev_entry, ast.Comment):
                    blank = True
                if blank:
                    self.lines.append("")
            if isinstance(entry, ast.Comment):
                self.lines.append(indent + self.take(entry))
                end_at = entry.span.end
            else:
                self.item(entry, indent)
                self.lines[-1] += self.trailing(end, entry.span.end_line)  # type: ignore[attr-defined]
                end_at = end
            prev = (end_at, entry)

    def open_brace(self, after: int) -> int:
        """Offset of the `{` that opens a block, skipping space and comments."""
        i = after
        while i < len(self.text):
            ch = self.text[i]
            if ch == "#":
                i = self.text.find("\n", i)
                if i < 0:
                    break
            elif ch == "{":
                return i
            elif not ch.isspace():
                break
            i += 1
        raise AssertionError("a parsed block has an opening brace")

    def braced(self, header: str, node: object, after: Span, items: Sequence[object],
               indent: str, children: Callable[[], None] | None = None) -> None:
        """A block opened by `{` somewhere after the token `after` (its name or keyword)."""
        span: Span = node.span  # type: ignore[attr-defined]
        brace = self.open_brace(after.end)
        for c in self.comments_in(span.start, brace):
            self.lines.append(indent + self.take(c))
        self.lines.append(indent + header + " {")
        brace_line = after.end_line + self.text.count("\n", after.end, brace)
        self.lines[-1] += self.trailing(brace + 1, brace_line)
        if children is not None:
            children()
        else:
            self.block(items, brace + 1, span.end - 1, indent + INDENT)
        self.lines.append(indent + "}")

    # -- statements

    def item(self, node: object, indent: str) -> None:
        if isinstance(node, ast.MetricDecl):
            self.braced(f"metric {node.name.value}", node, node.name.span, node.items,
                        indent)
        elif isinstance(node, ast.Stage):
            self.braced(f"stage {node.name.value}", node, node.name.span, node.items,
                        indent)
        elif isinstance(node, ast.Ruleset):
            self.braced(f"ruleset {node.name.value}", node, node.name.span, node.items,
                        indent)
        elif isinstance(node, ast.Override):
            self.braced("override", node, node.keyword, (), indent,
                        children=lambda: self.choices(node, indent + INDENT))
        else:
            self.leaf(node, indent)

    def choices(self, node: ast.Override, indent: str) -> None:
        brace = self.open_brace(node.keyword.end)
        entries = [_Choice(s) for s in node.choices]
        self.block(entries, brace + 1, node.span.end - 1, indent)

    def leaf(self, node: object, indent: str) -> None:
        span: Span = node.span  # type: ignore[attr-defined]
        lists = [lit for lit in _lists(node)]
        for c in self.comments_in(span.start + 1, span.end):
            if not any(lit.span.start < c.span.start < lit.span.end for lit in lists):
                self.lines.append(indent + self.take(c))
        head, lit, tail = self.parts(node, indent)
        if lit is None:
            self.lines.extend(_indented(head, indent))
            return
        one_line = "[" + ", ".join(self.literal(x, indent) for x in lit.items) + "]"
        has_comments = bool(self.comments_in(lit.span.start, lit.span.end))
        if not has_comments and len(indent) + len(head) + len(one_line) + len(tail) <= WIDTH \
                and "\n" not in one_line:
            self.lines.extend(_indented(head + one_line + tail, indent))
            return
        self.lines.append(indent + head + "[")
        inner = indent + INDENT
        entries = [_Element(x) for x in lit.items]
        # Every element ends with a comma (the grammar allows a trailing one), so elements
        # can be added or reordered without touching their neighbours.
        self.block(entries, lit.span.start + 1, lit.span.end - 1, inner)
        self.lines.append(indent + "]" + tail)

    def literal(self, x: ast.Str | ast.Num, indent: str) -> str:
        if isinstance(x, ast.Num):
            return _number(x)
        return self.string(x, indent)

    def string(self, s: ast.Str, indent: str) -> str:
        if s.multiline and "\n" in s.value:
            return "\n".join(_multiline(s.value, indent + INDENT))
        return string_literal(s.value)

    def parts(self, node: object, indent: str) -> tuple[str, ast.ListLit | None, str]:
        """A one-line statement as text, or (head, list literal, tail) around a list."""
        s = self.string
        if isinstance(node, ast.ProjectDecl):
            return f"project {node.name.value}", None, ""
        if isinstance(node, ast.TypeProp):
            return f"type {node.value.value}", None, ""
        if isinstance(node, ast.FailProp):
            return f"fail {node.value.value}", None, ""
        if isinstance(node, ast.IdProp):
            return f"id {s(node.value, indent)}", None, ""
        if isinstance(node, ast.Description):
            return f"description {s(node.text, indent)}", None, ""
        if isinstance(node, ast.MinProp):
            return f"min {_number(node.value)}", None, ""
        if isinstance(node, ast.MaxProp):
            return f"max {_number(node.value)}", None, ""
        if isinstance(node, ast.LabelsProp):
            return "labels ", node.labels, ""
        if isinstance(node, ast.TimeoutProp):
            unit = node.unit.value if node.unit is not None else ""
            return f"timeout {_number(node.value)}{unit}", None, ""
        if isinstance(node, ast.ScorerProp):
            return f"scorer {s(node.url, indent)}", None, ""
        if isinstance(node, ast.FieldProp):
            return f"field {s(node.path, indent)}", None, ""
        if isinstance(node, ast.Passthrough):
            return "passthrough", None, ""
        if isinstance(node, ast.Notify):
            on = " on " + ", ".join(n.value for n in node.statuses) if node.statuses else ""
            return f"notify {s(node.url, indent)}{on}", None, ""
        if isinstance(node, _Choice):
            return f"choice {s(node.value, indent)}", None, ""
        if isinstance(node, _Element):
            return self.literal(node.value, indent) + ",", None, ""
        if isinstance(node, ast.Rule):
            head = f"when {node.metric.value} {SPELLING[node.operator]}"
            target = node.target
            if target is None:
                return head, None, ""
            if isinstance(target, ast.ListLit):
                return head + " ", target, ""
            return f"{head} {self.literal(target, indent)}", None, ""
        raise AssertionError(f"no layout for {type(node).__name__}")


@dataclass(frozen=True, slots=True)
class _Choice:
    value: ast.Str

    @property
    def span(self) -> Span:
        return self.value.span


@dataclass(frozen=True, slots=True)
class _Element:
    value: ast.Str | ast.Num

    @property
    def span(self) -> Span:
        return self.value.span


def _lists(node: object) -> list[ast.ListLit]:
    if isinstance(node, ast.LabelsProp):
        return [node.labels]
    if isinstance(node, ast.Rule) and isinstance(node.target, ast.ListLit):
        return [node.target]
    return []


def _indented(text: str, indent: str) -> list[str]:
    # Multi-line strings carry their own indentation after the first line.
    first, *rest = text.split("\n")
    return [indent + first, *rest]
