"""The limits table: one source for the checker, the models, the wire and the docs."""

from __future__ import annotations

import re

from stageguard.runtime import limits
from tests.conftest import REPO


def test_the_semantics_page_shows_the_table_as_it_is() -> None:
    page = (REPO / "docs" / "semantics.md").read_text(encoding="utf-8")
    shown = re.search(r"<!-- limits-table:[^\n]*-->\n(.*?)\n<!-- end limits-table -->", page,
                      re.DOTALL)
    assert shown is not None and shown.group(1) == limits.table_markdown()


def test_over_says_the_limit_and_the_size() -> None:
    assert limits.over("name", limits.NAME) is None
    assert limits.over("name", 201) == ("project, stage, ruleset and metric names: at most 200 "
                                        "characters, this one has 201")


def test_every_limit_is_positive_and_named_once() -> None:
    assert all(limit.value > 0 for limit in limits.LIMITS.values())
    assert len({limit.what for limit in limits.LIMITS.values()}) == len(limits.LIMITS)
