"""The pass that holds a policy to the limits table (`stageguard.runtime.limits`): SG0311 for
each name, text, url or count over its limit, at the place it is written. The artifact
models refuse the same numbers, so a policy that checks is one the runtime will serve; the
checker builds nothing that a limit diagnostic falls inside.
"""

from __future__ import annotations

from collections.abc import Iterator

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Diagnostic, Span, error
from stageguard.runtime import limits


def check_limits(file: ast.PolicyFile) -> list[Diagnostic]:
    return [error("SG0311", f"{what} is over a limit: {problem}", span,
                  "too long" if is_length else "one too many")
            for what, span, problem, is_length in _over(file)]


def _over(file: ast.PolicyFile) -> Iterator[tuple[str, Span, str, bool]]:
    metrics = 0
    for item in file.items:
        if isinstance(item, ast.ProjectDecl):
            yield from _name("project name", item.name)
        elif isinstance(item, ast.MetricDecl):
            metrics += 1
            if metrics == limits.METRICS + 1:
                yield from _count("metrics", "this file's metric declarations", item.span,
                                  metrics)
            yield from _name("metric name", item.name)
            for prop in item.items:
                if isinstance(prop, ast.Description):
                    yield from _length("description", "description", prop.text)
                elif isinstance(prop, ast.LabelsProp):
                    yield from _list(prop.labels)
        elif isinstance(item, ast.Stage):
            yield from _stage(item)


def _stage(stage: ast.Stage) -> Iterator[tuple[str, Span, str, bool]]:
    yield from _name("stage name", stage.name)
    rulesets = stage.rulesets
    if len(rulesets) > limits.RULESETS:
        yield from _count("rulesets", "the stage's rulesets", rulesets[limits.RULESETS].span,
                          len(rulesets))
    for prop in stage.items:
        if isinstance(prop, ast.Description):
            yield from _length("description", "description", prop.text)
    for rs in rulesets:
        yield from _ruleset(rs)


def _ruleset(rs: ast.Ruleset) -> Iterator[tuple[str, Span, str, bool]]:
    yield from _name("ruleset name", rs.name)
    rules = [i for i in rs.items if isinstance(i, ast.Rule)]
    notifies = [i for i in rs.items if isinstance(i, ast.Notify)]
    if len(rules) > limits.RULES:
        yield from _count("rules", "the ruleset's rules", rules[limits.RULES].span, len(rules))
    if len(notifies) > limits.SUBSCRIPTIONS:
        yield from _count("subscriptions", "the ruleset's subscriptions",
                          notifies[limits.SUBSCRIPTIONS].span, len(notifies))
    for item in rs.items:
        if isinstance(item, ast.Description):
            yield from _length("description", "description", item.text)
        elif isinstance(item, ast.Rule):
            yield from _name("metric name", item.metric)
            if isinstance(item.target, ast.ListLit):
                yield from _list(item.target)
            elif isinstance(item.target, ast.Str):
                yield from _length("label", "label", item.target)
        elif isinstance(item, ast.Override):
            if len(item.choices) > limits.CHOICES:
                yield from _count("choices", "the override's choices",
                                  item.choices[limits.CHOICES].span, len(item.choices))
            for choice in item.choices:
                yield from _length("choice", "choice", choice)
        elif isinstance(item, ast.Notify):
            yield from _length("url", "webhook url", item.url)


def _list(lit: ast.ListLit) -> Iterator[tuple[str, Span, str, bool]]:
    if len(lit.items) > limits.LABELS:
        yield from _count("labels", "the label list", lit.items[limits.LABELS].span,
                          len(lit.items))
    for label in lit.items:
        if isinstance(label, ast.Str):
            yield from _length("label", "label", label)


def _name(what: str, name: ast.Name) -> Iterator[tuple[str, Span, str, bool]]:
    problem = limits.over("name", len(name.value))
    if problem:
        yield f"{what} `{name.value[:20]}…`", name.span, problem, True


def _length(key: str, what: str, text: ast.Str) -> Iterator[tuple[str, Span, str, bool]]:
    problem = limits.over(key, len(text.value))
    if problem:
        yield f"this {what}", text.span, problem, True


def _count(key: str, what: str, first_extra: Span, size: int,
           ) -> Iterator[tuple[str, Span, str, bool]]:
    problem = limits.over(key, size)
    if problem:
        yield what, first_extra, problem, False
