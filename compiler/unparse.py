"""Values and rules written back in stageguard syntax."""

from __future__ import annotations

import json

from stageguard.runtime.model import Operator

SPELLING = {
    Operator.GT: ">",
    Operator.LT: "<",
    Operator.GTE: ">=",
    Operator.LTE: "<=",
    Operator.EQ: "==",
    Operator.NEQ: "!=",
    Operator.CONTAINS: "contains",
    Operator.ANY: "any",
    Operator.ALL: "all",
    Operator.EMPTY: "is empty",
    Operator.NOT_EMPTY: "is not empty",
}


def string_literal(value: str) -> str:
    # JSON's escapes are a subset of ours, so a JSON string is a valid stageguard string.
    return json.dumps(value, ensure_ascii=False)


def number_literal(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def target_literal(target: float | str | tuple[str, ...] | list[str] | None) -> str:
    if target is None:
        return ""
    if isinstance(target, str):
        return string_literal(target)
    if isinstance(target, float | int):
        return number_literal(float(target))
    return "[" + ", ".join(string_literal(t) for t in target) + "]"


def rule_source(metric: str, operator: Operator,
                target: float | str | tuple[str, ...] | list[str] | None) -> str:
    """`when` line body for a rule, e.g. `output_pii any ["ssn"]`."""
    text = f"{metric} {SPELLING[operator]}"
    return f"{text} {target_literal(target)}" if target is not None else text
