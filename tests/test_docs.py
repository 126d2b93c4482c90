"""The policy examples in the docs are what the tools accept: every fenced block that is a
whole policy file (it starts with `project`) checks clean and is already formatted, so a
reader who pastes one gets no error and `fmt --check` passes on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stageguard.compiler.formatter import format_text
from stageguard.compiler.pipeline import compile_text

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for n, block in enumerate(FENCE.findall(page.read_text(encoding="utf-8")), 1):
            if block.startswith("project "):
                found.append((f"{page.relative_to(ROOT)}#{n}", block))
    return found


EXAMPLES = _examples()


def test_the_docs_have_policy_examples() -> None:
    assert len(EXAMPLES) >= 2  # README and docs/language.md at least


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_a_policy_example_checks_and_is_formatted(where: str, text: str) -> None:
    result = compile_text(text, where)
    assert result.ok, [d.message for d in result.diagnostics]
    formatted = format_text(text, where)
    assert formatted.ok and formatted.text == text, f"{where} is not `stageguard fmt` output"


def test_readme_commands_run_as_written_after_set_up() -> None:
    """Set-up leaves the command in .venv/bin, not on PATH: a console line of the README
    that runs it says so."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    bare = [line for line in text.splitlines() if re.match(r"\$ stageguard\b", line)]
    assert bare == []
