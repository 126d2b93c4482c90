"""Pausing Python's cyclic garbage collector around work that builds large acyclic trees.

Loading a 10k-ruleset stage, compiling or formatting a large policy allocates hundreds of
thousands of small objects that reference counting frees anyway; the collector's passes,
triggered by allocation counts, walk the whole growing heap and find nothing. They cost a
third of compile time and made formatting superlinear (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
