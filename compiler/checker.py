"""Type-check parsed policy files against the metric catalog.

`check` reports every problem it finds (never raising for a user's mistake) and returns the
resolved stages the compiler turns into artifacts. Codes are stable; docs/diagnostics.md
lists them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import (
    Diagnostic,
    Related,
    Span,
    did_you_mean,
    error,
    has_errors,
    warning,
)
from stageguard.compiler.limit_check import check_limits
from stageguard.compiler.parser import ParseResult
from stageguard.compiler.unparse import SPELLING
from stageguard.runtime import limits
from stageguard.runtime.catalog import ALIASES, BUILTIN_METRICS, canonical_name
from stageguard.runtime.identity import uuid4_text
from stageguard.runtime.model import (
    ActionType,
    FailMode,
    HttpScorerSpec,
    MetricSpec,
    MetricType,
    Operator,
    StageType,
    Status,
)
from stageguard.runtime.rule_types import Misfit, Target, rule_type, valid_operators

_SUBSCRIBABLE = tuple(s.value for s in Status)
_FAILURE_STATUSES = (Status.FAILED.value, Status.ERROR.value, Status.TIMEOUT.value)

TargetValue = float | str | tuple[str, ...] | None
E = TypeVar("E", bound=StrEnum)


# ---- the resolved model the compiler consumes ---------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckedRule:
    metric: str
    operator: Operator
    target: TargetValue
    span: Span


@dataclass(frozen=True, slots=True)
class CheckedSubscription:
    url: str
    statuses: tuple[Status, ...]


@dataclass(frozen=True, slots=True)
class CheckedRuleset:
    name: str
    description: str | None
    rules: tuple[CheckedRule, ...]
    action: ActionType
    choices: tuple[str, ...] | None
    subscriptions: tuple[CheckedSubscription, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class CheckedStage:
    project: str
    name: str
    type: StageType
    id: str | None
    description: str | None
    fail_mode: FailMode
    rulesets: tuple[CheckedRuleset, ...]
    metrics: tuple[MetricSpec, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class CheckResult:
    stages: tuple[CheckedStage, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


# ---- the pass -----------------------------------------------------------------------------


@dataclass
class _Project:
    name: str
    files: list[ast.PolicyFile] = field(default_factory=list)


class _Checker:
    def __init__(self, error_offsets: dict[str, Sequence[int]],
                 extra_metrics: Sequence[MetricSpec] = (),
                 over_limit: dict[str, list[int]] | None = None) -> None:
        self.extra_metrics = {m.name: m for m in extra_metrics}
        self.diagnostics: list[Diagnostic] = []
        self.error_offsets = error_offsets
        # Where the limits pass reported: nothing containing such a place is built, so no
        # artifact can hold what the runtime would refuse.
        self.over_limit_offsets = over_limit or {}
        # Declared metrics whose declaration is wrong: rules using them are not also reported.
        self.poisoned: set[str] = set()

    def over_limit(self, span: Span) -> bool:
        return any(span.contains(o) for o in self.over_limit_offsets.get(span.file, ()))

    def damaged(self, span: Span) -> bool:
        """A syntax error fell inside this node: what looks missing may just be unparsed."""
        return any(span.contains(o) for o in self.error_offsets.get(span.file, ()))

    def err(self, *args: object, **kw: object) -> None:
        self.diagnostics.append(error(*args, **kw))  # type: ignore[arg-type]

    def warn(self, *args: object, **kw: object) -> None:
        self.diagnostics.append(warning(*args, **kw))  # type: ignore[arg-type]

    # -- projects and files

    def run(self, files: Sequence[ast.PolicyFile]) -> list[CheckedStage]:
        projects: dict[str, _Project] = {}
        for file in files:
            decls = file.projects
            if not decls:
                if not self.error_offsets.get(file.path):
                    span = Span(file.path, 0, 0, 1, 1, 1, 1)
                    self.err("SG0101", "this file does not say which project it belongs to",
                             span, "expected `project NAME` here",
                             help="start the file with a line such as `project support_bot`")
                name = ""
            else:
                name = decls[0].name.value
                for extra in decls[1:]:
                    self.err("SG0102", "a file belongs to one project; this is a second "
                             "`project` line", extra.span, "second declaration",
                             related=[Related(decls[0].span, "the first is here")])
            projects.setdefault(name, _Project(name)).files.append(file)
        stages: list[CheckedStage] = []
        for project in projects.values():
            stages.extend(self.project(project))
        kept: dict[str, CheckedStage] = {}
        for checked in stages:
            if checked.id is None:
                continue
            first = kept.setdefault(checked.id, checked)
            if first is not checked:
                self.err("SG0312", f"stage `{checked.name}` keeps id {checked.id}, as stage "
                         f"`{first.project}/{first.name}` does", checked.span,
                         "the same id", help="an id names one stage; remove one of them",
                         related=[Related(first.span, "kept here first")])
        return stages

    def project(self, project: _Project) -> list[CheckedStage]:
        if any(self.over_limit(d.name.span) for f in project.files for d in f.projects):
            return []  # the name is reported; every stage would carry it
        catalog = self.metric_catalog(project)
        seen: dict[str, ast.Stage] = {}
        out = []
        for file in project.files:
            for stage in file.stages:
                name = stage.name.value
                if name in seen:
                    self.err("SG0301", f"stage `{name}` is defined twice in project "
                             f"`{project.name}`", stage.name.span, "second definition",
                             help="stage names are unique within a project; rename one",
                             related=[Related(seen[name].name.span, "first defined here")])
                    continue
                if name:
                    seen[name] = stage
                checked = self.stage(project.name, stage, catalog)
                if checked is not None:
                    out.append(checked)
        return out

    # -- metric declarations

    def metric_catalog(self, project: _Project) -> dict[str, MetricSpec]:
        catalog = {**BUILTIN_METRICS, **self.extra_metrics}
        declared: dict[str, ast.MetricDecl] = {}
        for file in project.files:
            for decl in file.metrics:
                name = decl.name.value
                if not name:  # placeholder from syntax recovery, already reported
                    continue
                budget_only = all(isinstance(i, _BUDGET_PROPS) for i in decl.items)
                if name in BUILTIN_METRICS and budget_only and decl.items:
                    # A built-in metric may be given a budget (its scorer's timeout, its
                    # fail mode), not a new definition.
                    if name in declared:
                        self.err("SG0303", f"metric `{name}` is declared twice",
                                 decl.name.span, "second declaration",
                                 related=[Related(declared[name].name.span,
                                                  "first declared here")])
                        continue
                    declared[name] = decl
                    budgeted = self.budget(decl, BUILTIN_METRICS[name])
                    if budgeted is None:
                        self.poisoned.add(name)
                    else:
                        catalog[name] = budgeted
                    continue
                if name in BUILTIN_METRICS or name in ALIASES:
                    what = "a built-in metric" if name in BUILTIN_METRICS else (
                        f"an alias of the built-in `{ALIASES[name]}`")
                    self.err("SG0304", f"metric `{name}` is {what}", decl.name.span,
                             "cannot be redeclared",
                             help="built-in metrics need no declaration (a block with only "
                             "`timeout` and `fail` gives one a budget); pick another name "
                             "for your own metric")
                    continue
                if name in declared:
                    self.err("SG0303", f"metric `{name}` is declared twice", decl.name.span,
                             "second declaration",
                             related=[Related(declared[name].name.span, "first declared here")])
                    continue
                declared[name] = decl
                spec = self.metric(decl)
                if spec is None:
                    self.poisoned.add(name)
                else:
                    catalog[name] = spec
        return catalog

    def keyword(self, name: ast.Name, choices: type[E], code: str, what: str,
                fallback_help: str, label: str | None = None) -> E | None:
        """The enum member a property names, or a did-you-mean diagnostic and None."""
        try:
            return choices(name.value)
        except ValueError:
            if name.value:  # an empty name is a recovery placeholder, already reported
                self.err(code, f"unknown {what} `{name.value}`", name.span,
                         label or f"not a {what}",
                         help=did_you_mean(name.value, [c.value for c in choices])
                         or fallback_help)
            return None

    def _single(self, items: Iterable[object], kind: type, what: str) -> object | None:
        found = [i for i in items if isinstance(i, kind)]
        for extra in found[1:]:
            self.err("SG0305", f"{what} is given twice", extra.span, "second one",  # type: ignore[attr-defined]
                     related=[Related(found[0].span, "first one here")])  # type: ignore[attr-defined]
        return found[0] if found else None

    def metric(self, decl: ast.MetricDecl) -> MetricSpec | None:
        type_prop = self._single(decl.items, ast.TypeProp, "the metric's `type`")
        desc = self._single(decl.items, ast.Description, "the metric's `description`")
        min_prop = self._single(decl.items, ast.MinProp, "`min`")
        max_prop = self._single(decl.items, ast.MaxProp, "`max`")
        labels_prop = self._single(decl.items, ast.LabelsProp, "`labels`")
        if type_prop is None:
            if not self.damaged(decl.span):
                self.err("SG0502", f"metric `{decl.name.value}` has no type", decl.name.span,
                         "declared here", help="add a line `type score` (or number, label, "
                         "labels)")
            return None
        assert isinstance(type_prop, ast.TypeProp)
        kind = self.keyword(type_prop.value, MetricType, "SG0501", "metric type",
                            "metric types are score, number, label and labels")
        if kind is None:
            return None
        ok = True
        numeric = kind in (MetricType.SCORE, MetricType.NUMBER)
        for prop, word in ((min_prop, "min"), (max_prop, "max")):
            if prop is not None and kind is not MetricType.NUMBER:
                ok = False
                help_text = ("a score always ranges over [0, 1]" if kind is MetricType.SCORE
                             else "labels have no numeric range")
                self.err("SG0504", f"`{word}` does not apply to a {kind.value} metric",
                         prop.span, "not applicable", help=help_text)  # type: ignore[attr-defined]
        if labels_prop is not None and numeric:
            ok = False
            self.err("SG0504", f"`labels` does not apply to a {kind.value} metric",
                     labels_prop.span, "not applicable",  # type: ignore[attr-defined]
                     help="only label and labels metrics have a vocabulary")
        minimum = min_prop.value.value if isinstance(min_prop, ast.MinProp) else None
        maximum = max_prop.value.value if isinstance(max_prop, ast.MaxProp) else None
        if (kind is MetricType.NUMBER and isinstance(min_prop, ast.MinProp)
                and isinstance(max_prop, ast.MaxProp)
                and min_prop.value.value > max_prop.value.value):
            ok = False
            self.err("SG0503", f"`min` {min_prop.value.text} is greater than `max` "
                     f"{max_prop.value.text}", min_prop.span, "empty range",
                     related=[Related(max_prop.span, "`max` is here")])
        labels: tuple[str, ...] | None = None
        if isinstance(labels_prop, ast.LabelsProp) and not numeric:
            labels = self.vocabulary(labels_prop.labels)
            if labels is None:
                ok = False
        if not ok or self.over_limit(decl.span):
            return None
        if kind is MetricType.SCORE:
            minimum, maximum = 0.0, 1.0
        return self.budget(decl, MetricSpec(
            name=decl.name.value, type=kind,
            description=desc.text.value if isinstance(desc, ast.Description) else None,
            minimum=minimum, maximum=maximum, labels=labels, builtin=False,
        ))

    def budget(self, decl: ast.MetricDecl, spec: MetricSpec) -> MetricSpec | None:
        """`spec` with the declaration's budget and scorer: `timeout`, `fail`, `scorer`,
        `field` (None, with diagnostics, when one of them is wrong)."""
        timeout_prop = self._single(decl.items, ast.TimeoutProp, "the metric's `timeout`")
        fail_prop = self._single(decl.items, ast.FailProp, "the metric's `fail` mode")
        scorer_prop = self._single(decl.items, ast.ScorerProp, "the metric's `scorer`")
        field_prop = self._single(decl.items, ast.FieldProp, "the metric's `field`")
        ok = True
        timeout: float | None = None
        if isinstance(timeout_prop, ast.TimeoutProp):
            timeout = self.timeout(timeout_prop)
            ok = timeout is not None
        fail_mode: FailMode | None = None
        if isinstance(fail_prop, ast.FailProp):
            fail_mode = self.keyword(fail_prop.value, FailMode, "SG0309", "failure mode",
                                     "a metric fails `open` or `closed`")
            ok = ok and fail_mode is not None
        scorer: HttpScorerSpec | None = None
        if isinstance(field_prop, ast.FieldProp) and not isinstance(scorer_prop,
                                                                      ast.ScorerProp):
            ok = False
            self.err("SG0507", "`field` names where a scorer's answer holds the value",
                     field_prop.span, "no `scorer` to read it from",
                     help='add `scorer "http://…"` or remove `field`')
        if isinstance(scorer_prop, ast.ScorerProp):
            url = scorer_prop.url.value
            path = field_prop.path.value if isinstance(field_prop, ast.FieldProp) else None
            problem = _url_problem(url)
            if problem is not None:
                ok = False
                self.err("SG0507", f"scorer url \"{url}\" {problem}", scorer_prop.url.span,
                         "not a scorer url", help="a scorer is an http:// or https:// url")
            elif path is not None and not _FIELD.fullmatch(path):
                ok = False
                assert isinstance(field_prop, ast.FieldProp)
                self.err("SG0507", f"field \"{path}\" is not a dotted path",
                         field_prop.path.span, "not a field path",
                         help='name the answer\'s field, e.g. "toxicity" or "scores.toxicity"')
            else:
                scorer = HttpScorerSpec(url=url, field=path)
        if not ok:
            return None
        if timeout is None and fail_mode is None and scorer is None:
            return spec
        return spec.model_copy(update={"timeout": timeout, "fail_mode": fail_mode,
                                       "scorer": scorer})

    def timeout(self, prop: ast.TimeoutProp) -> float | None:
        unit = prop.unit.value if prop.unit is not None else "s"
        scale = _UNITS.get(unit)
        if scale is None:
            self.err("SG0506", f"unknown unit `{unit}`", prop.unit.span if prop.unit else
                     prop.span, "not a unit of time",
                     help=did_you_mean(unit, list(_UNITS)) or "write `200ms` or `2s`")
            return None
        seconds = prop.value.value * scale
        if not 0 < seconds <= limits.TIMEOUT:
            self.err("SG0506", f"a metric's timeout is above 0 and at most {limits.TIMEOUT:,} "
                     "seconds", prop.span, f"{prop.value.text}{unit}")
            return None
        return seconds

    def vocabulary(self, lit: ast.ListLit) -> tuple[str, ...] | None:
        values: list[str] = []
        ok = True
        if not lit.items:
            self.err("SG0505", "a label vocabulary cannot be empty", lit.span, "no labels",
                     help="list the labels this metric can take, or drop `labels` to accept "
                     "any label")
            return None
        for item in lit.items:
            if not isinstance(item, ast.Str):
                ok = False
                self.err("SG0505", "labels are strings", item.span, "not a string",
                         help=f'write it in quotes: "{item.text}"')
            elif item.value in values:
                ok = False
                self.err("SG0505", f"label \"{item.value}\" is listed twice", item.span,
                         "duplicate")
            else:
                values.append(item.value)
        return tuple(values) if ok else None

    # -- stages

    def stage(self, project: str, stage: ast.Stage,
              catalog: dict[str, MetricSpec]) -> CheckedStage | None:
        type_prop = self._single(stage.items, ast.TypeProp, "the stage's `type`")
        desc = self._single(stage.items, ast.Description, "the stage's `description`")
        fail_prop = self._single(stage.items, ast.FailProp, "`fail`")
        id_prop = self._single(stage.items, ast.IdProp, "the stage's `id`")
        ok = True
        kept_id = None
        if isinstance(id_prop, ast.IdProp):
            kept_id = uuid4_text(id_prop.value.value)
            if kept_id is None:
                self.err("SG0312", f"stage id {id_prop.value.value!r} is not a UUID4",
                         id_prop.value.span, "not a UUID4",
                         help="`id` keeps the id a stage had in Galileo, a UUID4 such as "
                         "\"3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e8b7c5d\"; remove it to use the id "
                         "stageguard derives from the stage's name")
                ok = False
        kind = StageType.CENTRAL
        if isinstance(type_prop, ast.TypeProp):
            found = self.keyword(type_prop.value, StageType, "SG0308", "stage type",
                                 "a stage is `central` or `local`")
            ok = found is not None
            kind = found or kind
        fail_mode = FailMode.OPEN
        if isinstance(fail_prop, ast.FailProp):
            found_mode = self.keyword(fail_prop.value, FailMode, "SG0309", "failure mode",
                                      "`fail open` lets metric failures pass; `fail closed` "
                                      "treats them as triggered",
                                      label="expected `open` or `closed`")
            ok = ok and found_mode is not None
            fail_mode = found_mode or fail_mode
        rulesets = stage.rulesets
        if kind is StageType.LOCAL and rulesets:
            self.err("SG0307", f"local stage `{stage.name.value}` cannot define rulesets",
                     rulesets[0].name.span, "ruleset on a local stage",
                     help="a local stage receives its rulesets with each invocation; remove "
                     "them, or make the stage `type central`")
            ok = False
        if kind is StageType.CENTRAL and not rulesets and not self.damaged(stage.span):
            self.warn("SG0310", f"central stage `{stage.name.value}` has no rulesets",
                      stage.name.span, "every invocation will be `skipped`",
                      help="add a ruleset, or declare the stage `type local` if callers "
                      "bring their own rulesets")
        checked: list[CheckedRuleset] = []
        seen: dict[str, ast.Ruleset] = {}
        used: set[str] = set()
        for rs in rulesets:
            if rs.name.value in seen:
                self.err("SG0302", f"ruleset `{rs.name.value}` appears twice in stage "
                         f"`{stage.name.value}`", rs.name.span, "second definition",
                         help="ruleset names identify rulesets in reports, tests and diffs; "
                         "rename one",
                         related=[Related(seen[rs.name.value].name.span, "first defined here")])
                ok = False
            elif rs.name.value:
                seen[rs.name.value] = rs
            result = self.ruleset(rs, catalog)
            if result is None:
                ok = False
            else:
                checked.append(result)
                used.update(r.metric for r in result.rules)
        self.unreachable_statuses(rulesets, fail_prop, fail_mode, catalog)
        if not ok or not stage.name.value or self.over_limit(stage.span):
            return None
        if kind is StageType.LOCAL:
            # Invocations may use any metric the project declares; ship those with the stage.
            used = {n for n, m in catalog.items() if not m.builtin}
        return CheckedStage(
            project=project, name=stage.name.value, type=kind, id=kept_id,
            description=desc.text.value if isinstance(desc, ast.Description) else None,
            fail_mode=fail_mode, rulesets=tuple(checked),
            metrics=tuple(catalog[n] for n in sorted(used)), span=stage.span,
        )

    def unreachable_statuses(self, rulesets: Sequence[ast.Ruleset], fail_prop: object,
                             fail_mode: FailMode, catalog: dict[str, MetricSpec]) -> None:
        """Fail closed, a failed metric holds: a ruleset whose every metric fails closed (the
        stage's mode, or the metric's own) ends triggered or not_triggered, so a
        subscription to a failure status can never fire."""
        def closed(name: str) -> bool:
            spec = catalog.get(canonical_name(name))
            return spec is not None and (spec.fail_mode or fail_mode) is FailMode.CLOSED

        for rs in rulesets:
            metrics = [i.metric.value for i in rs.items if isinstance(i, ast.Rule)]
            if not metrics or not all(closed(m) for m in metrics):
                continue
            for item in rs.items:
                if not isinstance(item, ast.Notify):
                    continue
                for name in item.statuses:
                    if name.value not in _FAILURE_STATUSES:
                        continue
                    if fail_mode is FailMode.CLOSED:
                        self.warn("SG0407", f"`{name.value}` can never fire in a fail-closed "
                                  "stage", name.span, "never fires",
                                  help="fail closed counts a failed metric as holding, so a "
                                  "ruleset ends triggered or not_triggered; subscribe to "
                                  "`triggered`, or make the stage `fail open`",
                                  related=[Related(fail_prop.span, "the stage fails closed "
                                                   "here")] if isinstance(
                                                       fail_prop, ast.FailProp) else [])
                    else:
                        self.warn("SG0407", f"`{name.value}` can never fire: every metric of "
                                  f"ruleset `{rs.name.value}` fails closed", name.span,
                                  "never fires",
                                  help="a metric that fails closed counts as holding when it "
                                  "fails, so the ruleset ends triggered or not_triggered")

    # -- rulesets and actions

    def ruleset(self, rs: ast.Ruleset, catalog: dict[str, MetricSpec]) -> CheckedRuleset | None:
        # One pass over the items: this runs once per ruleset of every build, so it avoids
        # re-scanning the block for each kind of statement.
        ok = True
        description: ast.Description | None = None
        checked_rules: list[CheckedRule] = []
        action_node: ast.Override | ast.Passthrough | None = None
        subscriptions: list[CheckedSubscription] = []
        wrote_rule = False
        for item in rs.items:
            kind = type(item)
            if kind is ast.Rule:
                wrote_rule = True
                result = self.rule(item, catalog)  # type: ignore[arg-type]
                if result is None:
                    ok = False
                else:
                    checked_rules.append(result)
            elif kind is ast.Override or kind is ast.Passthrough:
                if action_node is None:
                    action_node = item  # type: ignore[assignment]
                else:
                    self.err("SG0405", "a ruleset has one action", item.span, "second action",
                             help="keep either `override` or `passthrough`",
                             related=[Related(action_node.span, "first action here")])
                    ok = False
            elif kind is ast.Notify:
                sub = self.notify(item)  # type: ignore[arg-type]
                if sub is None:
                    ok = False
                else:
                    subscriptions.append(sub)
            elif description is None:
                description = item  # type: ignore[assignment]
            else:
                self.err("SG0305", "the ruleset's `description` is given twice", item.span,
                         "second one", related=[Related(description.span, "first one here")])
        if not wrote_rule and not self.damaged(rs.span):
            self.err("SG0306", f"ruleset `{rs.name.value}` has no rules", rs.name.span,
                     "needs at least one `when` line",
                     help="a ruleset triggers when all its rules hold, e.g. "
                     "`when output_toxicity > 0.8`")
            ok = False
        action = ActionType.PASSTHROUGH
        choices: tuple[str, ...] | None = None
        if type(action_node) is ast.Override:
            action = ActionType.OVERRIDE
            choices = tuple(c.value for c in action_node.choices)
            if not choices and not self.damaged(action_node.span):
                self.err("SG0401", "`override` needs at least one choice", action_node.keyword,
                         "no choices", help='add a line such as `choice "Sorry, I can\'t '
                         'help with that."`; one choice is returned at random')
                ok = False
        if not ok:
            return None
        return CheckedRuleset(
            name=rs.name.value,
            description=description.text.value if description is not None else None,
            rules=tuple(checked_rules), action=action, choices=choices,
            subscriptions=tuple(subscriptions), span=rs.span,
        )

    def notify(self, notify: ast.Notify) -> CheckedSubscription | None:
        ok = True
        url = notify.url.value
        if not _http_url(url) and not self.damaged(notify.span):
            self.err("SG0402", f"webhook url \"{url}\" is not an http(s) url", notify.url.span,
                     "not an http(s) url",
                     help="subscriptions POST to a url such as \"https://hooks.example.com/x\"")
            ok = False
        statuses: list[Status] = []
        for name in notify.statuses:
            if not name.value:
                continue
            try:
                status = Status(name.value)
            except ValueError:
                self.err("SG0403", f"unknown status `{name.value}`", name.span,
                         "not a decision status",
                         help=did_you_mean(name.value, _SUBSCRIBABLE)
                         or "statuses are " + ", ".join(_SUBSCRIBABLE))
                ok = False
                continue
            if status in statuses:
                self.warn("SG0406", f"status `{name.value}` is listed twice", name.span,
                          "duplicate")
                continue
            if status is Status.PAUSED:
                self.warn("SG0404", "`paused` on a ruleset subscription can never fire",
                          name.span, "never fires",
                          help="only stages pause, and a paused stage evaluates no ruleset")
            elif status is Status.SKIPPED:
                self.warn("SG0404", "`skipped` on a ruleset subscription can never fire",
                          name.span, "never fires",
                          help="a ruleset that subscribes a webhook is always decided in "
                          "full; only a stage without rulesets is skipped")
            statuses.append(status)
        if not ok:
            return None
        return CheckedSubscription(url, tuple(statuses) or (Status.TRIGGERED,))

    # -- rules

    def rule(self, rule: ast.Rule, catalog: dict[str, MetricSpec]) -> CheckedRule | None:
        written = rule.metric.value
        if not written:
            return None  # placeholder from syntax recovery, already reported
        name = canonical_name(written)
        spec = catalog.get(name)
        if spec is None and name in self.poisoned:
            return None
        if spec is None:
            self.err("SG0201", f"unknown metric `{written}`", rule.metric.span,
                     "not in the metric catalog",
                     help=did_you_mean(written, [*catalog, *ALIASES])
                     or "declare it with a `metric` block, or use a built-in metric")
            return None
        op = rule.operator
        spelled = SPELLING[op]
        fit = rule_type(spec.type, op)
        if isinstance(fit, Misfit):
            if fit.never_matches:
                self.err("SG0206", f"`{spelled}` on label list `{name}` never matches",
                         rule.operator_span, "a list is never equal to one label",
                         help="to test for one label write `contains \"LABEL\"`; for several "
                         "write `any [\"A\", \"B\"]`")
            else:
                valid = ", ".join(f"`{SPELLING[o]}`" for o in valid_operators(spec.type))
                self.err("SG0202", f"`{spelled}` does not apply to {spec.type.value} metric "
                         f"`{name}`", rule.operator_span, f"not valid for a {spec.type.value}",
                         help=f"a {spec.type.value} metric takes {valid}")
            return None
        target = self.target(rule, spec, fit.target)
        if target is _INVALID:
            return None
        return CheckedRule(name, op, target, rule.span)  # type: ignore[arg-type]

    def target(self, rule: ast.Rule, spec: MetricSpec, want: Target) -> object:
        op, lit = rule.operator, rule.target
        if want is Target.NONE:
            return None
        if want is Target.NUMBER:
            if not isinstance(lit, ast.Num):
                return self._wrong_target(rule, lit, "a number", _example_number(spec))
            low, high = spec.minimum, spec.maximum
            if (low is not None and lit.value < low) or (high is not None and lit.value > high):
                bounds = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None and (
                    high is not None) else (f">= {_fmt(low)}" if low is not None
                                            else f"<= {_fmt(high)}")
                self.err("SG0204", f"threshold {lit.text} is outside the range of "
                         f"`{spec.name}` {bounds}", lit.span, "out of range",
                         help=f"{spec.type.value} `{spec.name}` takes values in {bounds}")
                return _INVALID
            return float(lit.value)
        if want is Target.LABEL:
            if not isinstance(lit, ast.Str):
                return self._wrong_target(rule, lit, "a label in quotes",
                                          f'"{_first_label(spec)}"')
            return lit.value if self._known_labels(spec, (lit,)) else _INVALID
        if not isinstance(lit, ast.ListLit):  # Target.LABELS
            example = f'["{lit.value}"]' if isinstance(lit, ast.Str) else (
                f'["{_first_label(spec)}"]')
            return self._wrong_target(rule, lit, "a list of labels", example)
        strings = [i for i in lit.items if isinstance(i, ast.Str)]
        for item in lit.items:
            if not isinstance(item, ast.Str):
                self.err("SG0203", f"labels are strings, not {_describe(item)}", item.span,
                         "not a label", help=f'write it in quotes: "{_text(item)}"')
                return _INVALID
        if not self._known_labels(spec, strings):
            return _INVALID
        if not strings:
            never = op is Operator.ANY
            self.warn("SG0207", f"`{SPELLING[op]} []` is {'never' if never else 'always'} "
                      "true", lit.span, "empty list",
                      help="list the labels to test" if never else
                      "an empty `all` holds for every value; drop the rule or list labels")
        seen: set[str] = set()
        for s in strings:
            if s.value in seen:
                self.warn("SG0208", f"label \"{s.value}\" is listed twice", s.span, "duplicate")
            seen.add(s.value)
        return tuple(s.value for s in strings)

    def _known_labels(self, spec: MetricSpec, items: Iterable[ast.Str]) -> bool:
        if spec.labels is None:
            return True
        ok = True
        for item in items:
            if item.value not in spec.labels:
                ok = False
                self.err("SG0205", f"`{spec.name}` has no label \"{item.value}\"", item.span,
                         "unknown label",
                         help=did_you_mean(item.value, spec.labels, quoted=True)
                         or "its labels are " + ", ".join(spec.labels))
        return ok

    def _wrong_target(self, rule: ast.Rule, lit: object, wanted: str, example: str) -> object:
        span = lit.span if lit is not None else rule.span  # type: ignore[attr-defined]
        spec_kind = "" if lit is None else f", not {_describe(lit)}"
        self.err("SG0203", f"`{rule.metric.value} {SPELLING[rule.operator]}` compares with "
                 f"{wanted}{spec_kind}", span, "wrong type of value",
                 help=f"for example `when {rule.metric.value} {SPELLING[rule.operator]} "
                 f"{example}`")
        return _INVALID


_INVALID = object()


_BUDGET_PROPS = (ast.TimeoutProp, ast.FailProp)
_UNITS = {"ms": 0.001, "s": 1.0}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*")


def _http_url(url: str) -> bool:
    """An http(s) url with a host and no white space (webhooks and scorers)."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(
            c.isspace() for c in url)
    except ValueError:  # e.g. an unbalanced `[` of an IPv6 host
        return False


def _url_problem(url: str) -> str | None:
    if len(url) > limits.URL:  # webhook urls are held to it by check_limits
        return limits.over("url", len(url))
    return None if _http_url(url) else "is not an http(s) url"


def _fmt(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if x == int(x) else repr(x))


def _example_number(spec: MetricSpec) -> str:
    return "0.8" if spec.type is MetricType.SCORE else _fmt(spec.maximum or 100.0)


def _first_label(spec: MetricSpec) -> str:
    return spec.labels[0] if spec.labels else "label"


def _describe(lit: object) -> str:
    if isinstance(lit, ast.Num):
        return f"the number {lit.text}"
    if isinstance(lit, ast.Str):
        return "a string"
    return "a list"


def _text(lit: object) -> str:
    return lit.text if isinstance(lit, ast.Num) else ""


def check(results: Sequence[ParseResult],
          extra_metrics: Sequence[MetricSpec] = ()) -> CheckResult:
    """Check parsed files together (one or more projects) and resolve their stages.
    `extra_metrics` join the built-in catalog (e.g. a local stage's declared metrics when
    checking the rulesets an invocation brings)."""
    diagnostics: list[Diagnostic] = []
    offsets: dict[str, Sequence[int]] = {}
    files = []
    for r in results:
        diagnostics.extend(r.diagnostics)
        if r.error_offsets and r.file is not None:
            offsets[r.file.path] = r.error_offsets
        elif r.error_offsets and r.diagnostics:
            offsets[r.diagnostics[0].span.file] = r.error_offsets
        if r.file is not None:
            files.append(r.file)
    over_limit: dict[str, list[int]] = {}
    for file in files:
        found = check_limits(file)
        diagnostics.extend(found)
        over_limit[file.path] = [d.span.start for d in found]
    checker = _Checker(offsets, extra_metrics, over_limit)
    stages = checker.run(files)
    diagnostics.extend(checker.diagnostics)
    return CheckResult(tuple(stages), tuple(diagnostics))


def catalog_of(files: Sequence[ast.PolicyFile],
               extra_metrics: Sequence[MetricSpec] = ()) -> dict[str, dict[str, MetricSpec]]:
    """Per project, the metric catalog its files see: built-ins, `extra_metrics`, and the
    metrics they declare (a faulty declaration left out; `check` reports it). For tools that
    explain a metric where it is used (the language server's hover and completion)."""
    checker = _Checker({}, extra_metrics, {})
    projects: dict[str, _Project] = {}
    for file in files:
        name = file.projects[0].name.value if file.projects else ""
        projects.setdefault(name, _Project(name)).files.append(file)
    return {name: checker.metric_catalog(p) for name, p in projects.items()}
