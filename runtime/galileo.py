"""Galileo-shaped rulesets (plain dicts, as Galileo's API takes them) to artifact rulesets.

Accepts both list keys (`prioritized_rulesets` wins over `rulesets`), a null or `{}` action
(passthrough), statuses in any case, `target_value` absent for empty/not_empty. Every rule is
judged against the metric catalog with the same operator table as the compiler's checker;
problems raise `RulesetError` naming the path of the offending field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from stageguard.runtime.catalog import ALIASES, canonical_name
from stageguard.runtime.evaluate import rule_holds
from stageguard.runtime.model import (
    Action,
    ActionType,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    Status,
    Subscription,
)
from stageguard.runtime.rule_types import (
    TARGETS,
    Misfit,
    Target,
    artifact_target,
    rule_problem,
    rule_type,
    target_of,
)


class RulesetError(ValueError):
    """A ruleset that cannot be accepted; the message starts with the field's path."""


def rulesets_of(body: Mapping[str, Any]) -> Any:
    """The ruleset list of a Galileo body: `prioritized_rulesets` if present, else
    `rulesets` (docs/semantics.md: the first wins if both)."""
    if "prioritized_rulesets" in body:
        return body["prioritized_rulesets"]
    return body.get("rulesets")


def slug(text: str) -> str:
    """A ruleset name made from free text (a Galileo description): an identifier, or ""."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60].strip("_")
    return slug if slug and not slug[0].isdigit() else (f"r_{slug}" if slug else "")


def rule_from_galileo(data: object, catalog: Mapping[str, MetricSpec], path: str) -> RuleSpec:
    if not isinstance(data, Mapping):
        raise RulesetError(f"{path}: a rule is an object with metric, operator, target_value")
    written = data.get("metric")
    if not isinstance(written, str) or not written:
        raise RulesetError(f"{path}.metric: a metric name is required")
    name = canonical_name(written)
    spec = catalog.get(name)
    if spec is None:
        raise RulesetError(f"{path}.metric: unknown metric `{written}` (known: "
                           f"{', '.join(sorted([*catalog, *ALIASES]))})")
    try:
        op = Operator(str(data.get("operator", "")).lower())
    except ValueError:
        raise RulesetError(f"{path}.operator: unknown operator {data.get('operator')!r}; "
                           f"operators are {', '.join(o.value for o in Operator)}") from None
    if "target_value" not in data and Target.NONE not in TARGETS[op]:
        raise RulesetError(f"{path}.target_value: required for `{op.value}`")
    target = data.get("target_value")
    if rule_problem(spec, op, target) is None:
        return RuleSpec(metric=name, operator=op, target_value=artifact_target(op, target))
    # Galileo accepts it and its truth does not depend on the value: decide the same way.
    found = faithful_rule(spec, op, target)
    if isinstance(found, str):
        raise RulesetError(f"{path}: Galileo evaluates this rule as {found} for every value "
                           f"of `{name}`, and stageguard has no rule that says so on it")
    new_op, new_target, _ = found
    return RuleSpec(metric=name, operator=new_op,
                    target_value=artifact_target(new_op, new_target))


def faithful_rule(spec: MetricSpec, op: Operator, target: object
                  ) -> tuple[Operator, object, str] | str:
    """A rule stageguard compiles with Galileo's truth for `metric op target` over every
    value of the metric (its catalog range or vocabulary), given a rule stageguard would not
    compile as written: (operator, target, "never true" | "always true"), or Galileo's truth
    alone when no rule on this metric says it.

    Such a rule's truth does not depend on the value: an operator that does not fit the
    metric's kind, or a target of the wrong kind, is never true (the truth table); a
    threshold outside the range, or a label outside the vocabulary, is uniformly true or
    false over the range, which one representative value decides."""
    kind = spec.type
    fit = rule_type(kind, op)
    truth: bool | None = None
    if isinstance(fit, Misfit) or (fit.target is Target.NONE and target is not None):
        truth = False
    elif kind in (MetricType.SCORE, MetricType.NUMBER):
        if isinstance(target, bool) or not isinstance(target, int | float):
            truth = False
        else:
            value = spec.minimum if spec.minimum is not None else (
                spec.maximum if spec.maximum is not None else 0.0)
            truth = rule_holds(op, float(target), value)
    else:
        labels = [target] if isinstance(target, str) else target
        if target_of(target) is not fit.target or not isinstance(labels, list | tuple):
            truth = False  # e.g. a list where a label goes: the truth table says false
        else:
            known = [t for t in labels if spec.labels is None or t in spec.labels]
            if op is Operator.ANY:
                if known:
                    return op, tuple(known), "the same"  # unknown labels never match
                truth = False
            elif op is Operator.NEQ:
                truth = True  # no value of the vocabulary is the unknown label
            else:
                truth = False  # eq, contains, all: an unknown label is never there
    if truth is False:
        if kind in (MetricType.LABEL, MetricType.LABELS):
            return Operator.ANY, (), "never true"
        if spec.maximum is not None:
            return Operator.GT, spec.maximum, "never true"
        if spec.minimum is not None:
            return Operator.LT, spec.minimum, "never true"
        return "never true"
    if kind is MetricType.LABEL and spec.labels is not None:
        return Operator.ANY, tuple(spec.labels), "always true"
    if spec.minimum is not None:
        return Operator.GTE, spec.minimum, "always true"
    if spec.maximum is not None:
        return Operator.LTE, spec.maximum, "always true"
    return "always true"


def action_from_galileo(data: object, path: str) -> Action:
    if data is None or data == {}:
        return Action(type=ActionType.PASSTHROUGH)
    if not isinstance(data, Mapping):
        raise RulesetError(f"{path}: an action is an object with a type")
    try:
        kind = ActionType(str(data.get("type", "PASSTHROUGH")).upper())
    except ValueError:
        raise RulesetError(f"{path}.type: an action is OVERRIDE or PASSTHROUGH") from None
    subs = []
    for j, sub in enumerate(data.get("subscriptions") or []):
        if not isinstance(sub, Mapping):
            raise RulesetError(f"{path}.subscriptions[{j}]: an object with url and statuses")
        try:
            statuses = tuple(Status(str(s).lower())
                             for s in sub.get("statuses") or ["triggered"])
            subs.append(Subscription(url=str(sub.get("url", "")), statuses=statuses))
        except (ValueError, ValidationError):
            raise RulesetError(f"{path}.subscriptions[{j}]: needs an http(s) url and statuses "
                               f"from {', '.join(s.value for s in Status)}") from None
    choices = data.get("choices")
    if kind is ActionType.OVERRIDE:
        if not isinstance(choices, list | tuple) or not choices or not all(
                isinstance(c, str) for c in choices):
            raise RulesetError(f"{path}.choices: an OVERRIDE needs one or more strings")
        return Action(type=kind, choices=tuple(choices), subscriptions=tuple(subs))
    return Action(type=kind, subscriptions=tuple(subs))


def rulesets_from_galileo(items: object, catalog: Mapping[str, MetricSpec],
                          path: str = "rulesets") -> tuple[RulesetSpec, ...]:
    """Galileo ruleset dicts (or RulesetSpec models, passed through) to artifact rulesets.
    Names: an explicit `name`, else one derived from the description, else `ruleset_N`;
    made unique with a numeric suffix."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise RulesetError(f"{path}: a list of rulesets is required")
    out: list[RulesetSpec] = []
    used: set[str] = set()
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if isinstance(item, RulesetSpec):
            spec = item
        else:
            if not isinstance(item, Mapping):
                raise RulesetError(f"{here}: a ruleset is an object with rules and an action")
            rules = item.get("rules")
            if not isinstance(rules, list | tuple) or not rules:
                raise RulesetError(f"{here}.rules: at least one rule is required")
            description = item.get("description")
            if description is not None and not isinstance(description, str):
                raise RulesetError(f"{here}.description: a string, not "
                                   f"{type(description).__name__}")
            given = item.get("name")
            if given is not None and not isinstance(given, str):
                raise RulesetError(f"{here}.name: a string, not {type(given).__name__}")
            base = (given or slug(description or "") or f"ruleset_{i + 1}")
            name, n = str(base), 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
            try:
                spec = RulesetSpec(
                    name=name, description=description,
                    rules=tuple(rule_from_galileo(r, catalog, f"{here}.rules[{j}]")
                                for j, r in enumerate(rules)),
                    action=action_from_galileo(item.get("action"), f"{here}.action"))
            except ValidationError as exc:
                raise RulesetError(f"{here}: {exc.errors()[0]['msg']}") from None
        if spec.name in used:
            raise RulesetError(f"{here}.name: ruleset `{spec.name}` appears twice")
        used.add(spec.name)
        out.append(spec)
    return tuple(out)


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def wire_value(value: object) -> object:
    """A metric value or target as strict JSON data: label tuples become lists; NaN and
    the infinities, which JSON has no numbers for, become the strings "NaN", "Infinity"
    and "-Infinity" (docs/semantics.md, "Wire values")."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else _NON_FINITE[value]
    return value


def ruleset_to_galileo(spec: RulesetSpec) -> dict[str, Any]:
    """The Galileo shape of an artifact ruleset (our `name` kept as an extra field)."""
    action: dict[str, Any] = {
        "type": spec.action.type.value,
        "subscriptions": [{"url": s.url, "statuses": [x.value for x in s.statuses]}
                          for s in spec.action.subscriptions],
    }
    if spec.action.type is ActionType.OVERRIDE:
        action["choices"] = list(spec.action.choices or ())
    return {
        "name": spec.name,
        "description": spec.description,
        "rules": [{"metric": r.metric, "operator": r.operator.value,
                   "target_value": wire_value(r.target_value)} for r in spec.rules],
        "action": action,
    }
