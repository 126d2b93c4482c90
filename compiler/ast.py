"""The typed syntax tree: frozen dataclasses with spans, faithful to the source.

The tree keeps every statement in source order (a block's `items`), duplicates included, so
the checker can report them and the formatter can reproduce the file. No Lark type appears
here: the parser converts tokens before they leave it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stageguard.compiler.diagnostics import Span
from stageguard.runtime.model import Operator

__all__ = [
    "Comment",
    "Description",
    "FailProp",
    "FieldProp",
    "IdProp",
    "LabelsProp",
    "ListLit",
    "MaxProp",
    "MetricDecl",
    "MinProp",
    "Name",
    "Notify",
    "Num",
    "Operator",
    "Override",
    "Passthrough",
    "PolicyFile",
    "ProjectDecl",
    "Rule",
    "Ruleset",
    "ScorerProp",
    "Stage",
    "Str",
    "TimeoutProp",
    "TypeProp",
]


@dataclass(frozen=True, slots=True)
class Name:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    span: Span
    multiline: bool = False


@dataclass(frozen=True, slots=True)
class Num:
    value: float
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Str | Num, ...]
    span: Span


Target = Num | Str | ListLit


@dataclass(frozen=True, slots=True)
class Rule:
    metric: Name
    operator: Operator
    operator_span: Span
    target: Target | None
    span: Span


@dataclass(frozen=True, slots=True)
class Description:
    text: Str
    span: Span


@dataclass(frozen=True, slots=True)
class TypeProp:
    value: Name
    span: Span


@dataclass(frozen=True, slots=True)
class FailProp:
    value: Name
    span: Span


@dataclass(frozen=True, slots=True)
class TimeoutProp:
    value: Num
    unit: Name | None
    span: Span


@dataclass(frozen=True, slots=True)
class ScorerProp:
    url: Str
    span: Span


@dataclass(frozen=True, slots=True)
class FieldProp:
    path: Str
    span: Span


@dataclass(frozen=True, slots=True)
class MinProp:
    value: Num
    span: Span


@dataclass(frozen=True, slots=True)
class MaxProp:
    value: Num
    span: Span


@dataclass(frozen=True, slots=True)
class LabelsProp:
    labels: ListLit
    span: Span


@dataclass(frozen=True, slots=True)
class Override:
    choices: tuple[Str, ...]
    span: Span
    keyword: Span


@dataclass(frozen=True, slots=True)
class Passthrough:
    span: Span


@dataclass(frozen=True, slots=True)
class Notify:
    url: Str
    statuses: tuple[Name, ...]
    span: Span


RulesetItem = Description | Rule | Override | Passthrough | Notify


@dataclass(frozen=True, slots=True)
class Ruleset:
    name: Name
    items: tuple[RulesetItem, ...]
    span: Span

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(i for i in self.items if isinstance(i, Rule))


@dataclass(frozen=True, slots=True)
class IdProp:
    """A stage's kept id (`id "…"`): what Galileo called it, so its callers' ids still work."""

    value: Str
    span: Span


StageItem = TypeProp | Description | FailProp | IdProp | Ruleset


@dataclass(frozen=True, slots=True)
class Stage:
    name: Name
    items: tuple[StageItem, ...]
    span: Span

    @property
    def rulesets(self) -> tuple[Ruleset, ...]:
        return tuple(i for i in self.items if isinstance(i, Ruleset))


MetricItem = (TypeProp | Description | MinProp | MaxProp | LabelsProp | FailProp | TimeoutProp
              | ScorerProp | FieldProp)


@dataclass(frozen=True, slots=True)
class MetricDecl:
    name: Name
    items: tuple[MetricItem, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ProjectDecl:
    name: Name
    span: Span


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    span: Span


TopItem = ProjectDecl | MetricDecl | Stage


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str
    items: tuple[TopItem, ...]
    comments: tuple[Comment, ...]

    @property
    def stages(self) -> tuple[Stage, ...]:
        return tuple(i for i in self.items if isinstance(i, Stage))

    @property
    def metrics(self) -> tuple[MetricDecl, ...]:
        return tuple(i for i in self.items if isinstance(i, MetricDecl))

    @property
    def projects(self) -> tuple[ProjectDecl, ...]:
        return tuple(i for i in self.items if isinstance(i, ProjectDecl))
