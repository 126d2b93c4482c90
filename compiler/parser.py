"""Source text to the typed AST, with syntax errors as diagnostics.

Lark runs in LALR mode with the AST builder as an inline transformer, so no parse tree is
built: each grammar reduction directly yields an AST node. On a syntax error the parser
recovers (insert a missing token, else pop to an enclosing block that accepts the next token,
else drop the token) so one typo does not hide the problems after it.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_parser_state import ParserState

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Diagnostic, Span, did_you_mean, error
from stageguard.compiler.sources import is_rulesets_file
from stageguard.runtime import limits
from stageguard.runtime.model import Operator
from stageguard.runtime.unicode import first_surrogate, unicode_problem, without_surrogates

MAX_SYNTAX_ERRORS = 50

_COMPARATORS = {
    ">": Operator.GT,
    "<": Operator.LT,
    ">=": Operator.GTE,
    "<=": Operator.LTE,
    "==": Operator.EQ,
    "!=": Operator.NEQ,
}

# Tokens the recovery may invent, in order of preference. Closing brackets first: a missing
# `}` is the most common structural slip and inserting it loses nothing the user wrote.
_INSERTABLE = ("RBRACE", "RSQB", "STRING", "NUMBER", "NAME")
# Tokens that begin a statement or close a block: the only safe places to resynchronise after
# popping. Popping to accept anything else would resume in the middle of an outer construct
# (a stray name would become the next stage's name).
_SYNC = frozenset({"PROJECT", "METRIC", "STAGE", "RULESET", "TYPE", "DESCRIPTION", "MIN", "MAX",
                   "LABELS", "FAIL", "ID", "WHEN", "OVERRIDE", "CHOICE", "PASSTHROUGH", "NOTIFY",
                   "RBRACE"})
_PLACEHOLDER = {"RBRACE": "}", "RSQB": "]", "STRING": '""', "NUMBER": "0",
                "NAME": ""}

_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "CMP": "a comparison (`>`, `>=`, `<`, `<=`, `==`, `!=`)",
    "$END": "end of file",
    "COMMA": "`,`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LSQB": "`[`",
    "RSQB": "`]`",
}
_CHAR_HINTS = {
    "=": "comparisons are written `==`, `!=`, `>`, `>=`, `<` or `<=`",
    "'": "strings are written in double quotes: \"like this\"",
    "(": "lists of labels are written in square brackets: [\"a\", \"b\"]",
    ";": "statements end at the end of the line; no `;` is needed",
    ":": "properties are written without a colon, e.g. `type score`",
}
_IGNORABLE = re.compile(r"(?:\s|#[^\n]*)*")


@dataclass(frozen=True, slots=True)
class ParseResult:
    """The AST (None when the file could not be recovered at all) and syntax diagnostics.

    `error_offsets` are the places syntax errors were found; the checker leaves alone what
    they may have damaged (a ruleset whose only rule was misspelt is not also "empty").
    """

    file: ast.PolicyFile | None
    diagnostics: tuple[Diagnostic, ...]
    error_offsets: tuple[int, ...]


# ---- building the AST ---------------------------------------------------------------------


_new_span = tuple.__new__  # Span(...) without NamedTuple's keyword handling: hot path


def _span(path: str, first: Any, last: Any) -> Span:
    a = first.span if not isinstance(first, Token) else None
    b = last.span if not isinstance(last, Token) else None
    if a is None:
        start, line, column = first.start_pos, first.line, first.column
    else:
        start, line, column = a.start, a.line, a.column
    if b is None:
        end, end_line, end_column = last.end_pos, last.end_line, last.end_column
    else:
        end, end_line, end_column = b.end, b.end_line, b.end_column
    return _new_span(Span, (path, start, end, line, column, end_line, end_column))


def _tok_span(path: str, tok: Token) -> Span:
    return _new_span(Span, (path, tok.start_pos, tok.end_pos, tok.line, tok.column,
                            tok.end_line, tok.end_column))


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)


class _Builder(Transformer[Token, Any]):
    """Grammar reductions to AST nodes. Pure apart from recording string/number problems,
    which are keyed by position so the recovery's trial parses cannot duplicate them."""

    def __init__(self) -> None:
        super().__init__(visit_tokens=False)
        self.path = "<input>"
        self.problems: dict[tuple[int, str], Diagnostic] = {}

    def _name(self, tok: Token) -> ast.Name:
        return ast.Name(str(tok), _tok_span(self.path, tok))

    def _str(self, tok: Token) -> ast.Str:
        raw = str(tok)
        span = _tok_span(self.path, tok)
        too_long = limits.over("string", len(raw) - 2)
        if too_long:
            self._problem("SG0008", "this string is too long", span, too_long)
        if raw.startswith('"""'):
            return ast.Str(self._multiline(raw[3:-3], span), span, multiline=True)
        body = raw[1:-1]
        return ast.Str(self._unescape(body, span) if "\\" in body else body, span)

    def _unescape(self, body: str, span: Span) -> str:
        def replace(m: re.Match[str]) -> str:
            esc = m.group(1)
            if esc[0] == "u" and len(esc) == 5:
                return chr(int(esc[1:], 16))
            if esc in _ESCAPES:
                return _ESCAPES[esc]
            self._problem(
                "SG0005", f"unknown escape sequence `\\{esc}` in string", span,
                "write `\\\\` for a backslash; known escapes: \\\" \\\\ \\n \\t \\r \\uXXXX",
            )
            return esc

        text = _ESCAPE_RE.sub(replace, body)
        if first_surrogate(text) is None:
            return text
        # `\uD83D\uDE00` is one character written as its UTF-16 pair (as in JSON); a half
        # of a pair alone is no character at all.
        try:
            return text.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError:
            self._problem("SG0005", "a `\\uD800`-`\\uDFFF` escape must be half of a "
                          "surrogate pair", span, "write the character itself, or both "
                          "halves of its pair (`\\uD83D\\uDE00`)")
            return without_surrogates(text)

    def _multiline(self, body: str, span: Span) -> str:
        # Swift-style: text starts on the line after the opening quotes; the closing quotes'
        # indentation is removed from every line, so the text can be indented with the code.
        if "\n" not in body:
            return self._unescape(body, span) if "\\" in body else body
        first, _, rest = body.partition("\n")
        lines = rest.split("\n")
        closing_indent = lines[-1]
        if first.strip() or closing_indent.strip():
            self._problem(
                "SG0006", "a multi-line string starts and ends on lines of its own", span,
                'put the text on the lines between `"""` and `"""`',
            )
            text = body
        else:
            kept = []
            for line in lines[:-1]:
                if line.startswith(closing_indent):
                    kept.append(line[len(closing_indent):])
                elif not line.strip():
                    kept.append("")
                else:
                    self._problem(
                        "SG0006", "a line of this multi-line string is indented less than "
                        "its closing quotes", span,
                        'indent every line at least as far as the closing `"""`',
                    )
                    kept.append(line.lstrip())
            text = "\n".join(kept)
        return self._unescape(text, span) if "\\" in text else text

    def _num(self, tok: Token) -> ast.Num:
        span = _tok_span(self.path, tok)
        value = float(tok)
        if not math.isfinite(value):
            self._problem("SG0007", f"number `{tok}` is too large", span,
                          "numbers must be finite")
            value = 0.0
        return ast.Num(value, str(tok), span)

    def _target(self, tok: Any) -> ast.Num | ast.Str | ast.ListLit:
        if isinstance(tok, ast.ListLit):
            return tok
        return self._num(tok) if tok.type == "NUMBER" else self._str(tok)

    def _problem(self, code: str, message: str, span: Span, help: str) -> None:
        self.problems[(span.start, code)] = error(code, message, span, help=help)

    # Reductions, one per grammar rule (or alias).

    def start(self, items: list[Any]) -> list[Any]:
        return items

    def rulesets(self, items: list[Any]) -> list[Any]:
        return items

    def project_decl(self, c: list[Any]) -> ast.ProjectDecl:
        return ast.ProjectDecl(self._name(c[1]), _span(self.path, c[0], c[1]))

    def metric_decl(self, c: list[Any]) -> ast.MetricDecl:
        return ast.MetricDecl(self._name(c[1]), tuple(c[2:-1]), _span(self.path, c[0], c[-1]))

    def type_prop(self, c: list[Any]) -> ast.TypeProp:
        return ast.TypeProp(self._name(c[1]), _span(self.path, c[0], c[1]))

    def fail_prop(self, c: list[Any]) -> ast.FailProp:
        return ast.FailProp(self._name(c[1]), _span(self.path, c[0], c[1]))

    def id_prop(self, c: list[Any]) -> ast.IdProp:
        return ast.IdProp(self._str(c[1]), _span(self.path, c[0], c[1]))

    def description_prop(self, c: list[Any]) -> ast.Description:
        return ast.Description(self._str(c[1]), _span(self.path, c[0], c[1]))

    def min_prop(self, c: list[Any]) -> ast.MinProp:
        return ast.MinProp(self._num(c[1]), _span(self.path, c[0], c[1]))

    def max_prop(self, c: list[Any]) -> ast.MaxProp:
        return ast.MaxProp(self._num(c[1]), _span(self.path, c[0], c[1]))

    def timeout_prop(self, c: list[Any]) -> ast.TimeoutProp:
        unit = self._name(c[2]) if c[2] is not None else None
        return ast.TimeoutProp(self._num(c[1]), unit, _span(self.path, c[0], c[2] or c[1]))

    def scorer_prop(self, c: list[Any]) -> ast.ScorerProp:
        return ast.ScorerProp(self._str(c[1]), _span(self.path, c[0], c[1]))

    def field_prop(self, c: list[Any]) -> ast.FieldProp:
        return ast.FieldProp(self._str(c[1]), _span(self.path, c[0], c[1]))

    def labels_prop(self, c: list[Any]) -> ast.LabelsProp:
        return ast.LabelsProp(c[1], _span(self.path, c[0], c[1]))

    def stage_decl(self, c: list[Any]) -> ast.Stage:
        return ast.Stage(self._name(c[1]), tuple(c[2:-1]), _span(self.path, c[0], c[-1]))

    def ruleset_decl(self, c: list[Any]) -> ast.Ruleset:
        return ast.Ruleset(self._name(c[1]), tuple(c[2:-1]), _span(self.path, c[0], c[-1]))

    def _rule(self, c: list[Any], op: Operator, target: Any) -> ast.Rule:
        return ast.Rule(
            self._name(c[1]), op, _span(self.path, c[2], c[-1] if target is None else c[2]),
            target, _span(self.path, c[0], c[-1] if target is None else target),
        )

    def target(self, c: list[Any]) -> ast.Num | ast.Str | ast.ListLit:
        return self._target(c[0])

    def compare_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, _COMPARATORS[str(c[2])], c[3])

    def contains_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, Operator.CONTAINS, c[3])

    def any_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, Operator.ANY, c[3])

    def all_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, Operator.ALL, c[3])

    def empty_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, Operator.EMPTY, None)

    def not_empty_rule(self, c: list[Any]) -> ast.Rule:
        return self._rule(c, Operator.NOT_EMPTY, None)

    def label_list(self, c: list[Any]) -> ast.ListLit:
        items = tuple(self._target(t) for t in c[1:-1] if t is not None)
        return ast.ListLit(items, _span(self.path, c[0], c[-1]))  # type: ignore[arg-type]

    def override(self, c: list[Any]) -> ast.Override:
        return ast.Override(tuple(c[1:-1]), _span(self.path, c[0], c[-1]),
                            _tok_span(self.path, c[0]))

    def choice(self, c: list[Any]) -> ast.Str:
        return self._str(c[1])

    def passthrough(self, c: list[Any]) -> ast.Passthrough:
        return ast.Passthrough(_tok_span(self.path, c[0]))

    def notify(self, c: list[Any]) -> ast.Notify:
        present = [t for t in c if t is not None]
        statuses = tuple(self._name(t) for t in present[3:])
        return ast.Notify(self._str(c[1]), statuses, _span(self.path, present[0], present[-1]))


@cache
def grammar_text() -> str:
    return files("stageguard.grammar").joinpath("stageguard.lark").read_text(encoding="utf-8")


class _Parser:
    """A Lark instance with its AST builder. The builder holds per-parse state, so each
    thread has its own parser: parses in different threads never wait for each other (the
    service compiles requests in a thread pool)."""

    def __init__(self) -> None:
        self.builder = _Builder()
        self.comments: list[Token] = []
        self.lark = Lark(
            grammar_text(),
            parser="lalr",
            lexer="contextual",
            transformer=self.builder,
            maybe_placeholders=True,
            lexer_callbacks={"COMMENT": self.comments.append},
            start=["start", "rulesets"],
        )
        self.terminal_words = dict(_TERMINAL_WORDS)
        for term in self.lark.terminals:
            if term.pattern.type == "str":
                self.terminal_words.setdefault(term.name, f"`{term.pattern.value}`")


_LOCAL = threading.local()


def _parser() -> _Parser:
    parser: _Parser | None = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = _Parser()
    return parser


def parse(text: str, path: str = "<input>") -> ParseResult:
    """Parse one policy file. Never raises for bad input: problems come back as diagnostics."""
    return _parse(text, path, "start")


def parse_rulesets(text: str, path: str = "<rulesets>") -> ParseResult:
    """Parse `ruleset NAME { … }` blocks and nothing else (rulesets sent as source with an
    API call): the result's file holds `ast.Ruleset` items only, so no text can close a
    block it did not open."""
    return _parse(text, path, "rulesets")


def parse_file(text: str, path: str) -> ParseResult:
    """A policy file as its name says: a rulesets file (`*.rulesets.sg`) holds rulesets only,
    any other holds projects, metrics and stages."""
    return parse_rulesets(text, path) if is_rulesets_file(path) else parse(text, path)


def _parse(text: str, path: str, start: str) -> ParseResult:
    # Bytes as stored; an ASCII text (the usual case) is not copied to count them.
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    too_big = limits.over("source", size)
    if too_big:
        span = Span(path, 0, 0, 1, 1, 1, 1)
        return ParseResult(None, (error("SG0008", "this file is too large to read", span,
                                        "not read", help=too_big),), (0,))
    encoding = unicode_problem(text)
    surrogate_at = None
    if encoding:
        # Only a str handed over by an API can hold one (files are decoded as UTF-8): say
        # where, then read on with U+FFFD in its place (one character for one).
        surrogate_at = first_surrogate(text)
        text = without_surrogates(text)
    p = _parser()
    p.builder.path = path
    p.builder.problems = {}
    p.comments.clear()
    recovery = _Recovery(p, text, path)
    try:
        items: list[Any] | None = p.lark.parse(  # the builder's `start`: a list of items
            text, start=start, on_error=recovery.on_error)  # type: ignore[assignment]
    except UnexpectedInput as exc:
        # Recovery gave up (too many errors, or an end of file it cannot close).
        recovery.report_final(exc)
        items = None
    comments = tuple(ast.Comment(str(t), _tok_span(path, t)) for t in p.comments)
    problems = list(p.builder.problems.values())
    if surrogate_at is not None:
        at = surrogate_at
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        problems.insert(0, error("SG0002", "this text is not valid Unicode",
                                 Span(path, at, at + 1, line, column, line, column + 1),
                                 "a lone surrogate", help=f"the text {encoding}"))
    diagnostics = recovery.diagnostics + problems
    file = ast.PolicyFile(path, tuple(items), comments) if items is not None else None
    offsets = tuple(recovery.offsets) + tuple(d.span.start for d in problems)
    return ParseResult(file, tuple(diagnostics), offsets)


# ---- recovery -----------------------------------------------------------------------------


def _advance(state: ParserState[Any], stack: list[Any], terminal: str,
             is_end: bool = False) -> list[Any] | None:
    """The state stack after feeding `terminal` to `stack` (None: not accepted). LALR on
    states alone: no values are copied and no reduction callback runs, so a trial costs the
    depth of the stack (a few blocks), not the size of what was parsed so far. Copying the
    value stack per trial made recovery cost grow with every ruleset already parsed."""
    states = state.parse_conf.states
    end_state = state.parse_conf.end_state
    stack = list(stack)
    while True:
        entry = states[stack[-1]].get(terminal)
        if entry is None:
            return None
        action, arg = entry
        if action is Shift:
            if is_end:
                return None
            stack.append(arg)
            return stack
        size = len(arg.expansion)
        if size:
            del stack[-size:]
        goto = states[stack[-1]].get(arg.origin.name)
        if goto is None:
            return None
        stack.append(goto[1])
        if is_end and stack[-1] == end_state:
            return stack


def _accepts(state: ParserState[Any], terminal: str, stack: list[Any] | None = None) -> bool:
    return _advance(state, state.state_stack if stack is None else stack, terminal,
                    terminal == "$END") is not None


def _expected(state: ParserState[Any]) -> list[str]:
    table = state.parse_conf.states[state.position]
    return [t for t in table if t.isupper() and _accepts(state, t)]


def _feed(state: ParserState[Any], *tokens: Token) -> bool:
    """Feed tokens the simulation accepted. Reductions run the AST builder, which may still
    refuse a placeholder value; then the stacks go back as they were (False)."""
    states, values = list(state.state_stack), list(state.value_stack)
    try:
        for tok in tokens:
            state.feed_token(tok)
    except Exception:
        state.state_stack[:] = states
        state.value_stack[:] = values
        return False
    return True


def _placeholder(terminal: str, at: Token) -> Token:
    start = at.start_pos if at.start_pos is not None else 0
    line = at.line if at.line is not None else 1
    column = at.column if at.column is not None else 1
    return Token(terminal, _PLACEHOLDER[terminal], start, line, column, line, column, start)


class _Recovery:
    def __init__(self, parser: _Parser, text: str, path: str) -> None:
        self.parser = parser
        self.text = text
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self.offsets: list[int] = []
        self.last_error_end = -1
        self.errors = 0
        self.stopped = False

    def _consecutive(self, start: int) -> bool:
        """True when nothing but white space and comments lies between the previous error and
        this one: the parser is still skipping the same bad stretch, so stay quiet."""
        if self.last_error_end < 0:
            return False
        if start <= self.last_error_end:
            return True
        return _IGNORABLE.fullmatch(self.text, self.last_error_end, start) is not None

    def _report(self, diagnostic: Diagnostic, end: int) -> bool:
        """Record a diagnostic unless it continues the previous error. False stops parsing:
        after MAX_SYNTAX_ERRORS reported, or `limits.SYNTAX_ERRORS` errors in all (quiet
        ones count too: each costs a recovery, and a file of stray bytes is all errors)."""
        start = diagnostic.span.start
        self.offsets.append(start)
        self.errors += 1
        quiet = self._consecutive(start)
        self.last_error_end = max(end, start)
        if not quiet:
            self.diagnostics.append(diagnostic)
        if self.errors >= limits.SYNTAX_ERRORS and len(self.diagnostics) < MAX_SYNTAX_ERRORS:
            self.diagnostics.append(error(
                "SG0008", "too many syntax errors; the rest of the file was not read",
                diagnostic.span, "parsing stopped here",
                help=f"{limits.over('syntax_errors', self.errors + 1)}: is this a policy "
                "file?"))
            self.stopped = True
            return False
        return len(self.diagnostics) < MAX_SYNTAX_ERRORS

    def _describe(self, terminal: str) -> str:
        return self.parser.terminal_words.get(terminal, terminal.lower())

    def _found(self, tok: Token) -> str:
        if tok.type == "$END":
            return "end of file"
        if tok.type == "STRING":
            value = str(tok)
            return f"string {value[:30]}{'…' if len(value) > 30 else ''}"
        if tok.type == "NUMBER":
            return f"number `{tok}`"
        return f"`{tok}`"

    def _expected_text(self, expected: list[str]) -> str:
        words = sorted({self._describe(t) for t in expected}, key=lambda w: (w == "`}`", w))
        if not words:
            return "nothing more"
        if len(words) == 1:
            return words[0]
        return ", ".join(words[:-1]) + " or " + words[-1]

    def on_error(self, exc: UnexpectedInput) -> bool:
        if isinstance(exc, UnexpectedCharacters):
            return self._characters(exc)
        if isinstance(exc, UnexpectedToken):
            return self._token(exc)
        return False

    def _characters(self, exc: UnexpectedCharacters) -> bool:
        pos = exc.pos_in_stream
        text = self.text
        state = exc.interactive_parser.lexer_thread.state
        assert pos is not None and state is not None  # lark sets both for a lexing error
        line, column = exc.line, exc.column
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end < 0 else line_end
        if text.startswith('"""', pos):
            message, label = "unterminated multi-line string", 'no closing `"""`'
            help_text = 'close the string with `"""` on a line of its own'
            skip_to = len(text)
        elif text[pos] == '"':
            message, label = "unterminated string", "this string has no closing quote"
            help_text = 'close it with `"` on the same line, or use `"""` for text over lines'
            skip_to = line_end
        else:
            char = text[pos]
            message, label = f"unexpected character `{char}`", "not part of the language"
            help_text = _CHAR_HINTS.get(char)
            skip_to = pos + 1
        span = Span(self.path, pos, pos + 1, line, column, line, column + 1)
        keep_going = self._report(error("SG0002" if skip_to == pos + 1 else "SG0003",
                                        message, span, label, help_text), skip_to)
        state.line_ctr.feed(text[pos:skip_to] or text[pos:pos + 1])
        return keep_going

    def _token(self, exc: UnexpectedToken) -> bool:
        tok: Token = exc.token
        ip = exc.interactive_parser
        state = ip.parser_state
        expected = _expected(state)
        at_end = tok.type == "$END"
        repair = None if at_end else self._repair(state, tok)
        message = f"unexpected {self._found(tok)}; expected {self._expected_text(expected)}"
        help_text = None
        if at_end and "RBRACE" in expected:
            help_text = "a block is still open: every `{` needs its `}`"
        elif repair == "RBRACE":
            help_text = f"is a `}}` missing before this {self._found(tok)}?"
        elif tok.type == "NAME" or (tok.type not in ("STRING", "NUMBER", "$END")):
            keywords = [
                self.parser.terminal_words[t].strip("`")
                for t in expected
                if t in self.parser.terminal_words and self.parser.terminal_words[t][:1] == "`"
            ]
            help_text = did_you_mean(str(tok), keywords)
        if at_end:
            end = len(self.text)
            line = self.text.count("\n") + 1
            column = end - (self.text.rfind("\n") + 1) + 1
            span = Span(self.path, end, end, line, column, line, column)
            code, label = "SG0004", "the file ends here"
        else:
            span = _tok_span(self.path, tok)
            code, label = "SG0001", "unexpected here"
        keep_going = self._report(error(code, message, span, label, help_text), span.end)
        if not keep_going:
            return False
        if at_end:
            return self._close_at_end(state, tok)
        if repair is not None and (repair == "POP"  # _repair already popped and fed it
                                   or _feed(state, _placeholder(repair, tok), tok)):
            # The parser is back in step: what goes wrong next is a new error, not a cascade.
            self.last_error_end = -1
        return True

    def _repair(self, state: ParserState[Any], tok: Token) -> str | None:
        """Make `tok` acceptable: insert one token, or pop to an enclosing construct that
        accepts it (panic mode). Returns what was done; None means drop the token."""
        for candidate in _INSERTABLE:
            after = _advance(state, state.state_stack, candidate)
            if after is not None and _accepts(state, tok.type, after):
                return candidate
        if tok.type not in _SYNC:
            return None
        for depth in range(len(state.state_stack) - 1, 0, -1):
            if _accepts(state, tok.type, state.state_stack[:depth]):
                del state.state_stack[depth:]
                del state.value_stack[depth - 1:]
                return "POP" if _feed(state, tok) else None
        return None

    def _close_at_end(self, state: ParserState[Any], tok: Token) -> bool:
        for _ in range(200):
            if _accepts(state, "$END"):
                return True
            for candidate in _INSERTABLE:
                if _accepts(state, candidate) and _feed(state, _placeholder(candidate, tok)):
                    break
            else:
                return False
        return False

    def report_final(self, exc: UnexpectedInput) -> None:
        if self.stopped or self.diagnostics:
            return
        pos = getattr(exc, "pos_in_stream", None) or 0
        line = getattr(exc, "line", 1) or 1
        column = getattr(exc, "column", 1) or 1
        span = Span(self.path, pos, pos, line, column, line, column)
        self.diagnostics.append(error("SG0001", "the parser could not make sense of this file",
                                      span, "parsing stopped here"))
