"""Text that is not Unicode: a Python str can hold a lone surrogate (a JSON `\\ud800` escape
makes one), which no UTF-8 writer accepts. Where it is found it is refused (the API) or
reported and read on as U+FFFD (source), one character for one so that positions hold."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate), or None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"holds a lone surrogate (U+{ord(found.group()):04X} at character "
            f"{found.start()}), which is not Unicode text")


def first_surrogate(text: str) -> int | None:
    """Where the first lone surrogate is (None when there is none)."""
    found = None if text.isascii() else _SURROGATE.search(text)
    return found.start() if found is not None else None


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)
