"""The one table of size limits. The checker reports a policy over a limit as a diagnostic
(SG0008 for tokens, SG0311 for everything else), the artifact models refuse the same numbers,
the service's wire models take them from here, and docs/semantics.md lists them. A limit is
raised here, once, and every layer follows.

Limits bound what one hostile or careless input can cost: a name becomes a registry path
part, a url is posted to, a text is scanned by a scorer, a count multiplies the work of a
decision or an analysis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    value: int
    what: str  # "a NAME is at most VALUE UNIT"
    unit: str


_TABLE = (
    Limit("name", 200, "a project, stage, ruleset or metric name", "characters"),
    Limit("url", 2048, "a webhook url", "characters"),
    Limit("description", 10_000, "a description", "characters"),
    Limit("choice", 100_000, "an override choice", "characters"),
    Limit("label", 1_000, "a label", "characters"),
    Limit("string", 100_000, "a string literal in source", "characters"),
    Limit("choices", 1_000, "an override's choices", "choices"),
    Limit("labels", 10_000, "a label list", "labels"),
    Limit("rules", 1_000, "a ruleset's rules", "rules"),
    Limit("subscriptions", 100, "a ruleset's subscriptions", "subscriptions"),
    Limit("rulesets", 100_000, "a stage's rulesets", "rulesets"),
    Limit("metrics", 10_000, "a metric catalog", "metrics"),
    Limit("source", 16 << 20, "a source file", "bytes"),
    Limit("syntax_errors", 200, "the syntax errors one file may cost", "errors"),
    Limit("scored_text", 1 << 20, "a text a built-in scorer reads", "characters"),
    Limit("metadata", 100, "invocation metadata or headers", "entries"),
    Limit("metadata_key", 256, "a metadata or header name", "characters"),
    Limit("metadata_value", 8192, "a metadata or header value", "characters"),
    Limit("timeout", 3600, "an invocation timeout", "seconds"),
)

LIMITS: dict[str, Limit] = {limit.key: limit for limit in _TABLE}

NAME = LIMITS["name"].value
URL = LIMITS["url"].value
DESCRIPTION = LIMITS["description"].value
CHOICE = LIMITS["choice"].value
LABEL = LIMITS["label"].value
STRING = LIMITS["string"].value
CHOICES = LIMITS["choices"].value
LABELS = LIMITS["labels"].value
RULES = LIMITS["rules"].value
SUBSCRIPTIONS = LIMITS["subscriptions"].value
RULESETS = LIMITS["rulesets"].value
METRICS = LIMITS["metrics"].value
SOURCE = LIMITS["source"].value
SYNTAX_ERRORS = LIMITS["syntax_errors"].value
SCORED_TEXT = LIMITS["scored_text"].value
METADATA = LIMITS["metadata"].value
METADATA_KEY = LIMITS["metadata_key"].value
METADATA_VALUE = LIMITS["metadata_value"].value
TIMEOUT = LIMITS["timeout"].value


def over(key: str, size: int) -> str | None:
    """The sentence for `size` over limit `key` (None when within it)."""
    limit = LIMITS[key]
    if size <= limit.value:
        return None
    return f"{limit.what} is at most {limit.value:,} {limit.unit} (this one has {size:,})"


def table_markdown() -> str:
    """The table as docs/semantics.md shows it (a test keeps the page in step)."""
    rows = ["| limit | at most |", "|---|---|"]
    rows += [f"| {limit.what} | {limit.value:,} {limit.unit} |" for limit in _TABLE]
    return "\n".join(rows)
