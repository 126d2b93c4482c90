"""The exceptions the runtime's API raises to its callers."""

from __future__ import annotations


class StageNotFound(LookupError):
    pass


class NeedsScorer(Exception):
    """Raised by `invoke(..., scorers=False)` when a metric would come from a scorer."""


class InvalidRequest(ValueError):
    """The caller's request cannot be decided (e.g. an empty payload, a bad metric value)."""


class StageConflict(InvalidRequest):
    """`create_stage` for a stage that already exists."""


class SubscriptionsNotAllowed(InvalidRequest):
    """An invocation's local rulesets subscribe webhooks, which this caller may not do."""
