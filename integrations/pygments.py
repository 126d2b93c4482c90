"""A Pygments lexer for stageguard policies (`.sg`), registered as the `stageguard` lexer
(entry point `pygments.lexers`), so documentation, `pygmentize` and code review tools that
use Pygments highlight policy files. Needs Pygments (the `editor` extra)."""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

__all__ = ["StageguardLexer"]

_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"


class StageguardLexer(RegexLexer):
    name = "stageguard"
    aliases: ClassVar[list[str]] = ["stageguard", "sg"]
    filenames: ClassVar[list[str]] = ["*.sg"]
    mimetypes: ClassVar[list[str]] = ["text/x-stageguard"]
    url = "https://github.com/stageguard/stageguard"

    tokens: ClassVar[dict[str, list[object]]] = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""', String.Double),
            (r'"(?:[^"\\\n]|\\.)*"', String.Double),
            # Declarations: the keyword, then the name it declares.
            (r"(project|metric|stage|ruleset)(\s+)(" + _NAME + ")",
             bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            # A rule: `when METRIC …`: the metric is the rule's variable.
            (r"(when)(\s+)(" + _NAME + ")", bygroups(Keyword, Whitespace, Name.Variable)),
            (r"(type|fail)(\s+)(" + _NAME + ")",
             bygroups(Keyword, Whitespace, Keyword.Constant)),
            (r"(is)(\s+)(not)(\s+)(empty)\b",
             bygroups(Operator.Word, Whitespace, Operator.Word, Whitespace, Operator.Word)),
            (r"(is)(\s+)(empty)\b", bygroups(Operator.Word, Whitespace, Operator.Word)),
            (words(("contains", "any", "all"), suffix=r"\b"), Operator.Word),
            (words(("description", "min", "max", "labels", "timeout", "scorer", "field", "id",
                    "override", "choice",
                    "passthrough", "notify", "on"), suffix=r"\b"), Keyword),
            (r">=|<=|==|!=|>|<", Operator),
            (r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", Number),
            (r"[{}\[\],]", Punctuation),
            (_NAME, Name),
            (r".", Text),  # anything else: shown as it is (the checker says what is wrong)
        ],
    }
