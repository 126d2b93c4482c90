"""The Pygments lexer (stageguard.integrations.pygments), found through its entry point."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String

from stageguard.testing.generate import GeneratedPolicy, policies
from tests.conftest import POLICIES
from tests.profiles import examples

LEXER = get_lexer_by_name("stageguard")


def tokens(text: str) -> list[tuple[object, str]]:
    return [(t, v) for t, v in LEXER.get_tokens(text) if v.strip()]


def test_found_by_name_and_by_file_name() -> None:
    assert type(get_lexer_for_filename("output_guard.sg")) is type(LEXER)
    assert type(get_lexer_by_name("sg")) is type(LEXER)


def test_the_example_policies() -> None:
    for path in sorted(Path(POLICIES).glob("*.sg")):
        found = tokens(path.read_text())
        assert not [v for t, v in found if t is Error], path
    text = (Path(POLICIES) / "output_guard.sg").read_text()
    found = tokens(text)
    assert (Keyword.Declaration, "ruleset") in found and (Name.Class, "pii_leak") in found
    assert (Name.Variable, "output_pii") in found and (Operator.Word, "any") in found
    assert (Number, "0.7") in found and (Operator, ">=") in found
    assert (Keyword.Constant, "closed") in found
    assert any(t is Comment.Single for t, _ in found)
    assert any(t in String.Double.subtypes or t is String.Double for t, _ in found)


EXACT = get_lexer_by_name("stageguard", stripnl=False, ensurenl=False)


@examples()
@given(policies())
def test_generated_policies_lex_without_errors(policy: GeneratedPolicy) -> None:
    assert not [v for t, v in tokens(policy.source) if t is Error]
    assert "".join(v for _, v in EXACT.get_tokens(policy.source)) == policy.source


@examples()
@given(st.text())
def test_any_text_is_lexed_whole_and_in_order(text: str) -> None:
    # Pygments reads every line ending as "\n"; nothing else is changed, lost or reordered.
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert "".join(v for _, v in EXACT.get_tokens(text)) == expected
