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
    what: str  # "WHAT: at most VALUE UNIT"
    unit: str


_TABLE = (
    Limit("name", 200, "project, stage, ruleset and metric names", "characters"),
    Limit("url", 2048, "webhook urls", "characters"),
    Limit("description", 10_000, "descriptions", "characters"),
    Limit("choice", 100_000, "override choices", "characters"),
    Limit("label", 1_000, "labels", "characters"),
    # Above every text limit: a token this long is no policy text at all.
    Limit("string", 200_000, "string literals in source", "characters"),
    Limit("choices", 1_000, "choices per override", "choices"),
    Limit("labels", 10_000, "labels per list", "labels"),
    Limit("rules", 1_000, "rules per ruleset", "rules"),
    Limit("subscriptions", 100, "subscriptions per ruleset", "subscriptions"),
    Limit("rulesets", 100_000, "rulesets per stage", "rulesets"),
    Limit("metrics", 10_000, "metrics per catalog", "metrics"),
    Limit("source", 16 << 20, "source files", "bytes"),
    Limit("syntax_errors", 200, "syntax errors read per file", "errors"),
    Limit("scored_text", 1 << 20, "texts a built-in scorer reads", "characters"),
    Limit("metadata", 100, "metadata and headers", "entries"),
    Limit("metadata_key", 256, "metadata and header names", "characters"),
    Limit("metadata_value", 8192, "metadata and header values", "characters"),
    Limit("timeout", 3600, "invocation timeouts", "seconds"),
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
    return f"{limit.what}: at most {limit.value:,} {limit.unit}, this one has {size:,}"


def table_markdown() -> str:
    """The table as docs/semantics.md shows it (a test keeps the page in step)."""
    rows = ["| what | at most |", "|---|---|"]
    rows += [f"| {limit.what} | {limit.value:,} {limit.unit} |" for limit in _TABLE]
    return "\n".join(rows)
