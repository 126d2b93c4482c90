"""Durations as responses report them: seconds, to the whole microsecond.

Finer digits are the timer's noise, and they cost: a duration's JSON text is its float's
shortest repr, which takes longest for 17 significant digits. Whole microseconds write short,
and the few that recur are kept as text (`response._number`).
"""

from __future__ import annotations

from time import perf_counter


def micros(seconds: float) -> float:
    """A duration in seconds, to the whole microsecond."""
    return int(seconds * 1_000_000) / 1_000_000


def seconds_since(started: float) -> float:
    """Seconds from `started` (a `perf_counter()` reading) to now, to the whole microsecond."""
    return micros(perf_counter() - started)
