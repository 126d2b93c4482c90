"""The vocabulary rules are typed in: operators and metric kinds (re-exported by `model`,
which the artifact schema is written in; kept apart so `rule_types` can use them without
importing the models it serves)."""

from __future__ import annotations

from enum import StrEnum


class StrKind(StrEnum):
    # Enum.__hash__ is a Python-level call; members equal their string values, so hashing
    # like str is consistent and keeps enum-keyed lookups on the decision path cheap.
    __hash__ = str.__hash__


class Operator(StrKind):
    GT = "gt"
    LT = "lt"
    GTE = "gte"
    LTE = "lte"
    EQ = "eq"
    NEQ = "neq"
    CONTAINS = "contains"
    ALL = "all"
    ANY = "any"
    EMPTY = "empty"
    NOT_EMPTY = "not_empty"


class MetricType(StrKind):
    SCORE = "score"
    NUMBER = "number"
    LABEL = "label"
    LABELS = "labels"
