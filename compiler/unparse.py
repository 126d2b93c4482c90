"""Values and rules written back in stageguard syntax."""

from __future__ import annotations

import json
from collections.abc import Sequence

from stageguard.runtime.model import (
    ActionType,
    FailMode,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    StageSpec,
    Status,
)

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


def _budget_lines(m: MetricSpec) -> list[str]:
    lines = []
    if m.timeout is not None:
        ms = m.timeout * 1000
        lines.append(f"  timeout {number_literal(m.timeout)}s" if m.timeout == int(m.timeout)
                     else f"  timeout {number_literal(ms)}ms" if ms == round(ms)
                     else f"  timeout {number_literal(m.timeout)}s")
    if m.fail_mode is not None:
        lines.append(f"  fail {m.fail_mode.value}")
    if m.scorer is not None:
        lines.append(f"  scorer {string_literal(m.scorer.url)}")
        if m.scorer.field is not None:
            lines.append(f"  field {string_literal(m.scorer.field)}")
    return lines


def policy_source(project: str, stage: StageSpec, rulesets: Sequence[RulesetSpec],
                  metrics: Sequence[MetricSpec] = ()) -> str:
    """A policy file for one stage, in canonical layout once formatted: the declarations of
    its non-built-in metrics, then the stage. Used to turn artifacts and imported rulesets
    back into source."""
    out = [f"project {project}", ""]
    for m in metrics:
        if m.builtin:
            if m.timeout is not None or m.fail_mode is not None:
                out += [f"metric {m.name} {{", *_budget_lines(m), "}", ""]
            continue
        out.append(f"metric {m.name} {{")
        out.append(f"  type {m.type.value}")
        if m.description is not None:
            out.append(f"  description {string_literal(m.description)}")
        numeric = m.type is MetricType.NUMBER  # a score's [0, 1] is implied
        if m.minimum is not None and numeric:
            out.append(f"  min {number_literal(m.minimum)}")
        if m.maximum is not None and numeric:
            out.append(f"  max {number_literal(m.maximum)}")
        if m.labels is not None:
            out.append(f"  labels {target_literal(m.labels)}")
        out += [*_budget_lines(m), "}", ""]
    out.append(f"stage {stage.name} {{")
    out.append(f"  type {stage.type.value}")
    if stage.description is not None:
        out.append(f"  description {string_literal(stage.description)}")
    if stage.fail_mode is FailMode.CLOSED:
        out.append("  fail closed")
    if stage.id is not None:
        out.append(f"  id {string_literal(stage.id)}")
    for rs in rulesets:
        out += ["", f"  ruleset {rs.name} {{"]
        if rs.description is not None:
            out.append(f"    description {string_literal(rs.description)}")
        out += [f"    when {rule_source(r.metric, r.operator, r.target_value)}" for r in rs.rules]
        if rs.action.type is ActionType.OVERRIDE:
            out.append("    override {")
            out += [f"      choice {string_literal(c)}" for c in rs.action.choices or ()]
            out.append("    }")
        else:
            out.append("    passthrough")
        for sub in rs.action.subscriptions:
            statuses = ", ".join(s.value for s in sub.statuses)
            on = "" if tuple(sub.statuses) == (Status.TRIGGERED,) else f" on {statuses}"
            out.append(f"    notify {string_literal(sub.url)}{on}")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
