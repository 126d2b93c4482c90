"""The artifact: what the compiler writes and the runtime loads.

The runtime owns this schema; `docs/artifact.schema.json` is generated from these models
(`python -m stageguard.runtime.schema`) and a test fails when the two drift apart. Bump
`FORMAT_VERSION` for any change an older runtime could misread.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints, model_validator

from stageguard.runtime import limits
from stageguard.runtime.identity import UUID4
from stageguard.runtime.kinds import MetricType as MetricType
from stageguard.runtime.kinds import Operator as Operator
from stageguard.runtime.kinds import StrKind
from stageguard.runtime.rule_types import TARGETS, target_of

FORMAT = "stageguard.artifact"
FORMAT_VERSION = 1

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
_IDENTIFIER = re.compile(IDENTIFIER)


# Project and stage names are free text, as Galileo's are ("My stage"), but each becomes one
# registry path part: no `/`, `\`, control characters (C0, DEL, C1), leading `.` or
# surrounding spaces. Written without `\s`, whose reach differs between regex engines.
# Names written in source are identifiers, a subset.
NAME = r"^[^ ./\\\x00-\x1f\x7f-\x9f](?:[^/\\\x00-\x1f\x7f-\x9f]*[^ /\\\x00-\x1f\x7f-\x9f])?$"
_NAME = re.compile(NAME)


def name_problem(what: str, value: object) -> str | None:
    """Why `value` cannot name a project or stage (None when it can). Such names become
    registry path parts, so nothing else may pass."""
    if isinstance(value, str) and len(value) > limits.NAME:
        return f"{what} `{value[:40]}…`: {limits.over('name', len(value))}"
    if isinstance(value, str) and _NAME.fullmatch(value):
        return None
    return (f"{what} {value!r} is not a name (no `/`, `\\` or control characters, no "
            "leading `.`, no spaces around it)")


class Status(StrKind):
    TRIGGERED = "triggered"
    NOT_TRIGGERED = "not_triggered"
    PAUSED = "paused"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    FAILED = "failed"
    ERROR = "error"


class StageType(StrKind):
    CENTRAL = "central"
    LOCAL = "local"


class FailMode(StrKind):
    OPEN = "open"
    CLOSED = "closed"


class ActionType(StrKind):
    OVERRIDE = "OVERRIDE"
    PASSTHROUGH = "PASSTHROUGH"


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER, min_length=1, max_length=limits.NAME)]
Name = Annotated[str, Field(pattern=NAME, min_length=1, max_length=limits.NAME)]
Description = Annotated[str, StringConstraints(max_length=limits.DESCRIPTION)]
Label = Annotated[StrictStr, StringConstraints(max_length=limits.LABEL)]
Choice = Annotated[StrictStr, StringConstraints(max_length=limits.CHOICE)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


def _absent(value: object) -> bool:
    return value is None


class HttpScorerSpec(_Model):
    """A metric scored by a model service the team runs (runtime/http_scorer.py): the
    invocation's texts are POSTed to `url`, the value is read at `field` of the answer (a
    dotted path; the metric's name when absent)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+", max_length=limits.URL)]
    field: Annotated[str, Field(min_length=1, max_length=limits.NAME)] | None = Field(
        default=None, exclude_if=_absent)


class MetricSpec(_Model):
    """A resolved catalog entry: what a metric's values look like, and its budget: how long
    its scorer may take (`timeout`, seconds) and what its failure means (`fail_mode`, the
    stage's when absent). Absent fields stay out of the document, so artifacts without them
    keep their digests."""

    name: Identifier
    type: MetricType
    description: Description | None = None
    minimum: FiniteFloat | None = None
    maximum: FiniteFloat | None = None
    labels: Annotated[tuple[Label, ...], Field(max_length=limits.LABELS)] | None = None
    builtin: bool = False
    timeout: Annotated[float, Field(gt=0, le=limits.TIMEOUT, allow_inf_nan=False)] | None = (
        Field(default=None, exclude_if=_absent))
    fail_mode: FailMode | None = Field(default=None, exclude_if=_absent)
    scorer: HttpScorerSpec | None = Field(default=None, exclude_if=_absent)

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        numeric = self.type in (MetricType.SCORE, MetricType.NUMBER)
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"a {self.type} metric has no numeric range")
        if numeric and self.labels is not None:
            raise ValueError(f"a {self.type} metric has no label vocabulary")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is greater than maximum")
        return self


class RuleSpec(_Model):
    metric: Identifier
    operator: Operator
    target_value: (FiniteFloat | Label
                   | Annotated[tuple[Label, ...], Field(max_length=limits.LABELS)] | None) = None

    @model_validator(mode="after")
    def _target_fits_operator(self) -> RuleSpec:
        # The metric's kind is not known here (the catalog is): a target fits when it fits
        # the operator on some kind of metric (rule_types.TARGETS).
        if target_of(self.target_value) not in TARGETS[self.operator]:
            raise ValueError(f"operator {self.operator.value!r} cannot take target "
                             f"{self.target_value!r}")
        return self


class Subscription(_Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+", max_length=limits.URL)]
    statuses: tuple[Status, ...] = (Status.TRIGGERED,)


class Action(_Model):
    type: ActionType
    choices: Annotated[tuple[Choice, ...], Field(max_length=limits.CHOICES)] | None = None
    subscriptions: Annotated[tuple[Subscription, ...],
                             Field(max_length=limits.SUBSCRIPTIONS)] = ()

    @model_validator(mode="after")
    def _choices_fit_type(self) -> Action:
        if self.type is ActionType.OVERRIDE and not self.choices:
            raise ValueError("an OVERRIDE action needs at least one choice")
        if self.type is ActionType.PASSTHROUGH and self.choices is not None:
            raise ValueError("a PASSTHROUGH action has no choices")
        return self


class RulesetSpec(_Model):
    name: Identifier
    description: Description | None = None
    rules: Annotated[tuple[RuleSpec, ...], Field(min_length=1, max_length=limits.RULES)]
    action: Action


class StageSpec(_Model):
    name: Name
    type: StageType
    description: Description | None = None
    fail_mode: FailMode = FailMode.OPEN
    # A kept id (Galileo's, `id "…"` in source); absent, the id is derived from the name.
    # Left out of the document when absent, so artifacts without one keep their digests.
    id: Annotated[str, Field(pattern=UUID4)] | None = Field(default=None, exclude_if=_absent)


Position = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]  # (line, column)


class RulesetPositions(_Model):
    ruleset: Position
    rules: tuple[Position, ...]


class SourceMap(_Model):
    """Where each piece came from (a stage lives in one file), for explanations and review
    reports. Positions are `[line, column]`, 1-based.

    Not part of the digest: moving a ruleset down a line or adding a comment is not a change
    of behaviour and must not mint a new stage version.
    """

    file: str
    stage: Position
    rulesets: tuple[RulesetPositions, ...]

    def fits(self, rulesets: tuple[RulesetSpec, ...]) -> bool:
        """One position per ruleset and per rule."""
        return len(self.rulesets) == len(rulesets) and all(
            len(loc.rules) == len(rs.rules)
            for loc, rs in zip(self.rulesets, rulesets, strict=True))


class CompilerInfo(_Model):
    name: Literal["stageguard"] = "stageguard"
    version: str


class Artifact(_Model):
    """One compiled stage at one version."""

    format: Literal["stageguard.artifact"] = "stageguard.artifact"  # FORMAT
    format_version: Literal[1] = 1  # FORMAT_VERSION
    project: Name
    stage: StageSpec
    version: Annotated[int, Field(ge=1)]
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    compiler: CompilerInfo
    metrics: Annotated[tuple[MetricSpec, ...], Field(max_length=limits.METRICS)]
    rulesets: Annotated[tuple[RulesetSpec, ...], Field(max_length=limits.RULESETS)]
    # Absent for stages created through the API from rulesets rather than compiled source.
    source_map: SourceMap | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Artifact:
        # A local stage's first version has no rulesets; later versions, when the operator
        # records them, hold the rulesets an invocation brought (docs/semantics.md).
        names = [r.name for r in self.rulesets]
        if len(set(names)) != len(names):
            raise ValueError("ruleset names must be unique within a stage")
        metric_names = [m.name for m in self.metrics]
        if metric_names != sorted(set(metric_names)):
            raise ValueError("metrics must be sorted by name and unique")
        known = set(metric_names)
        for ruleset in self.rulesets:
            for rule in ruleset.rules:
                if rule.metric not in known:
                    raise ValueError(f"rule uses metric {rule.metric!r} missing from `metrics`")
        if self.source_map is not None and not self.source_map.fits(self.rulesets):
            raise ValueError("source map does not match the rulesets")
        return self


# Fields that describe *where and how* an artifact was built rather than what it decides.
DIGEST_EXCLUDED = frozenset({"version", "digest", "compiler", "source_map"})
