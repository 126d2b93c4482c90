"""Time as stageguard writes it: durations to the microsecond, instants as UTC text."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from stageguard.runtime import clock
from tests.profiles import examples


@examples(20)
@given(st.integers(0, 4 * 10**18))
def test_times_are_utc_to_the_microsecond(ns: int) -> None:
    """The date and time of day kept per second, the microseconds truncated: equal to the
    exact arithmetic whatever second was written before."""
    for t in (ns, ns + 500_000_000, max(0, ns - 1_000_000_000)):  # a kept second and back
        exact = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=t // 1000)
        assert clock.utc_text(t) == exact.isoformat(timespec="microseconds").replace(
            "+00:00", "Z")


@examples(5)
@given(st.floats(0, 1e6, allow_nan=False))
def test_durations_are_whole_microseconds(seconds: float) -> None:
    """What a response reports: whole microseconds (rounded down), written short."""
    got = clock.micros(seconds)
    whole = round(got * 1_000_000)
    assert got == whole / 1_000_000  # a whole number of microseconds, as written
    assert whole <= seconds * 1_000_000 < whole + 1 + 1e-6  # the one at or below
