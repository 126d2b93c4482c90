"""Time as stageguard writes it: durations in seconds to the whole microsecond, and instants
as UTC text.

A duration's finer digits are the timer's noise, and they cost: its JSON text is its float's
shortest repr, which takes longest for 17 significant digits. Whole microseconds write short,
and the few that recur are kept as text (`response._number`).
"""

from __future__ import annotations

import datetime as dt
from time import perf_counter


def micros(seconds: float) -> float:
    """A duration in seconds, to the whole microsecond."""
    return int(seconds * 1_000_000) / 1_000_000


def seconds_since(started: float) -> float:
    """Seconds from `started` (a `perf_counter()` reading) to now, to the whole microsecond."""
    return micros(perf_counter() - started)


def utc_text(ns: int) -> str:
    """Epoch nanoseconds as UTC ISO 8601 to the microsecond (truncated), with `Z`: the
    decision log's and the service log's times. Lines come many to a second, so the date
    and time of day are made once per second."""
    global _second
    seconds, rest = divmod(ns, 1_000_000_000)
    second, text = _second
    if seconds != second:
        text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (seconds, text)  # one tuple: a racing thread reads the old pair or the new
    return f"{text}{rest // 1000:06d}Z"


_second: tuple[int, str] = (-1, "")
