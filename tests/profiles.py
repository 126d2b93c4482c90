"""How many examples a property test runs comes from the hypothesis profile, loaded in
conftest.py from HYPOTHESIS_PROFILE (else `ci` under CI, else `dev`):

| profile | examples at weight 1 | draws |
|---|---|---|
| dev | 100 | random, failures kept in .hypothesis/ |
| ci | 100 | a fixed sequence (derandomized): a run cannot fail on a draw nobody saw |
| nightly | 1,000 | random; ten times the ci run, not run in CI |

A test that needs more than the profile's count (a cheap property over a large space) says so
as a weight: `@examples(30)` runs 30 times the profile's count.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings


def examples(weight: float = 1, **kwargs: Any) -> settings:
    """Settings for `weight` times the loaded profile's example count."""
    return settings(max_examples=max(1, round(settings.default.max_examples * weight)),
                    **kwargs)
