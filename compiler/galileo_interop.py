"""Galileo Protect JSON to stageguard source and back.

Import reads a stage-create body, an update body, an invoke request or a bare list of
rulesets, maps metric names in any of Galileo's spellings to catalog names, and writes
formatted source. Nothing that would change meaning passes silently: a rule stageguard
would compile differently (or not at all) is an error naming its JSON path, an unknown
metric becomes an explicit `metric` declaration with a warning, and fields the language
does not hold (a stage's `paused` flag, an invocation's timeout) are reported as dropped.
The generated source is compiled again and must give the very rulesets that were imported.

Export writes what Galileo's API accepts: the stage-create body of a central stage, or the
`prioritized_rulesets` list a local stage is invoked with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from stageguard.compiler.diagnostics import (
    Diagnostic,
    Span,
    error,
    has_errors,
    span_at,
    warning,
)
from stageguard.compiler.formatter import format_text
from stageguard.compiler.pipeline import compile_text
from stageguard.compiler.unparse import policy_source
from stageguard.runtime.catalog import BUILTIN_METRICS, canonical_name
from stageguard.runtime.galileo import (
    RulesetError,
    action_from_galileo,
    faithful_rule,
    ruleset_to_galileo,
    rulesets_of,
    slug,
)
from stageguard.runtime.identity import uuid4_text
from stageguard.runtime.model import (
    IDENTIFIER,
    Artifact,
    FailMode,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    StageSpec,
    StageType,
)
from stageguard.runtime.rule_types import TARGETS, Target, artifact_target, rule_problem

BAD_INPUT = "SG0901"
NOT_FAITHFUL = "SG0902"
CUSTOM_METRIC = "SG0903"
DROPPED = "SG0904"
AMBIGUOUS_METRIC = "SG0905"
REWRITTEN = "SG0906"

# Keys of the shapes we read; anything else is reported as dropped.
_STAGE_KEYS = {"name", "description", "type", "paused", "prioritized_rulesets", "rulesets",
               "project_id", "project_name", "stage_name", "stage_id", "stage_version",
               "payload", "timeout", "metadata", "headers", "id", "version", "created_by"}
_NOT_KEPT = {"paused": "a stage's paused flag is registry state: run `stageguard stage pause`",
             "timeout": "the timeout is the caller's, given at invocation",
             "metadata": "metadata is given at invocation", "headers": "headers are given at "
             "invocation", "payload": "the payload is the caller's",
             "stage_version": "versions are minted by `stageguard build`",
             "project_id": "project ids are derived from names",
             "version": "versions are minted by build",
             "created_by": "not part of a policy"}


@dataclass(frozen=True)
class Imported:
    source: str | None  # formatted stageguard source; None when there were errors
    diagnostics: tuple[Diagnostic, ...]
    rulesets: tuple[RulesetSpec, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()

    @property
    def ok(self) -> bool:
        return self.source is not None


def metric_name(written: str) -> str:
    """The catalog name for a metric written any way Galileo writes it: a scorer name, a
    legacy alias, or a display label ("Output PII", "Context Adherence (Luna)")."""
    name = canonical_name(written)
    if name in BUILTIN_METRICS:
        return name
    slug = re.sub(r"[^a-z0-9]+", "_", written.lower()).strip("_")
    return slug if re.fullmatch(IDENTIFIER, slug or "-") else f"m_{slug}" if slug else "metric"


def _infer(name: str, rules: Sequence[tuple[str, Operator, object]]) -> MetricType | None:
    """A custom metric's type from how Galileo's rules use it; None when they disagree."""
    kinds: set[MetricType | str | None] = set()
    for _, op, target in rules:
        if op in (Operator.CONTAINS, Operator.ALL, Operator.EMPTY, Operator.NOT_EMPTY):
            kinds.add(MetricType.LABELS)
        elif isinstance(target, bool):
            kinds.add(None)
        elif isinstance(target, int | float):
            kinds.add(MetricType.NUMBER)
        elif isinstance(target, str):
            kinds.add(MetricType.LABEL)
        elif op is Operator.ANY:
            kinds.add("any")
        else:
            kinds.add(None)
    if None in kinds:
        return None
    if "any" in kinds:  # `any` fits one label or a list; the other rules decide
        kinds.discard("any")
        kinds = kinds or {MetricType.LABELS}
    kind = kinds.pop() if len(kinds) == 1 else None
    return kind if isinstance(kind, MetricType) else None


def json_positions(text: str) -> dict[str, tuple[int, int]]:
    """Where each value of a JSON document starts and ends, by path (`a[0].b`), so import
    diagnostics can point into the file."""
    decoder = json.JSONDecoder()
    out: dict[str, tuple[int, int]] = {}
    ws = re.compile(r"[ \t\n\r]*")

    def skip(i: int) -> int:
        return ws.match(text, i).end()  # type: ignore[union-attr]

    def value(i: int, path: str) -> int:
        i = skip(i)
        start = i
        if text.startswith("{", i):
            i = skip(i + 1)
            while not text.startswith("}", i):
                key, i = decoder.raw_decode(text, i)
                i = skip(skip(i) + 1)  # the colon
                i = skip(value(i, f"{path}.{key}" if path else str(key)))
                if text.startswith(",", i):
                    i = skip(i + 1)
            end = i + 1
        elif text.startswith("[", i):
            i, n = skip(i + 1), 0
            while not text.startswith("]", i):
                i = skip(value(i, f"{path}[{n}]"))
                n += 1
                if text.startswith(",", i):
                    i = skip(i + 1)
            end = i + 1
        else:
            _, end = decoder.raw_decode(text, i)
        out[path] = (start, end)
        return end

    value(0, "")
    return out


class _Importer:
    def __init__(self, path: str, text: str = "") -> None:
        self.path = path
        self.text = text
        self.diagnostics: list[Diagnostic] = []
        try:
            self.positions = json_positions(text) if text else {}
        except (ValueError, AttributeError):
            self.positions = {}

    def span(self, message: str) -> Span:
        """The span of the JSON path a message starts with (`path: ...`), else the file."""
        path = message.split(":", 1)[0].strip().removeprefix("(list)").removeprefix("[]")
        while path and path not in self.positions:
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
            path = shorter if shorter != path else ""
        start, end = self.positions.get(path, (0, 0))
        return span_at(self.path, self.text, start, end)

    def err(self, code: str, message: str, help: str | None = None) -> None:
        self.diagnostics.append(error(code, message, self.span(message), help=help))

    def warn(self, code: str, message: str, help: str | None = None) -> None:
        self.diagnostics.append(warning(code, message, self.span(message), help=help))

    def rulesets(self, items: object, key: str) -> list[RulesetSpec]:
        if not isinstance(items, list):
            self.err(BAD_INPUT, f"{key}: a list of rulesets is required")
            return []
        # First pass: metric names and how each is used, so custom metrics get one type.
        uses: dict[str, list[tuple[str, Operator, object]]] = {}
        written_as: dict[str, set[str]] = {}
        for i, item in enumerate(items):
            for j, rule in enumerate(_rules(item)):
                if not isinstance(rule, Mapping) or not isinstance(rule.get("metric"), str):
                    continue
                try:
                    op = Operator(str(rule.get("operator", "")).lower())
                except ValueError:
                    continue
                name = metric_name(rule["metric"])
                uses.setdefault(name, []).append(
                    (f"{key}[{i}].rules[{j}]", op, rule.get("target_value")))
                written_as.setdefault(name, set()).add(rule["metric"])
        self.catalog: dict[str, MetricSpec] = dict(BUILTIN_METRICS)
        for name, rules in uses.items():
            if name in BUILTIN_METRICS:
                continue
            kind = _infer(name, rules)
            shown = ", ".join(sorted(written_as[name]))
            if kind is None:
                self.err(AMBIGUOUS_METRIC, f"{rules[0][0]}.metric: metric `{shown}` is not in "
                         "the catalog and its rules use it as different kinds of value",
                         help=f"rules at {', '.join(p for p, _, _ in rules)}; declare it in "
                         "stageguard and fix the rules that do not fit")
                continue
            self.catalog[name] = MetricSpec(
                name=name, type=kind, description="Imported from Galileo: not in the catalog; "
                f"type inferred from its rules (written {shown})")
            self.warn(CUSTOM_METRIC, f"{rules[0][0]}.metric: metric `{shown}` is not in the "
                      f"catalog: declared as custom {kind.value} metric `{name}`",
                      help="check its type, and give it a range or vocabulary if it has one")
        out: list[RulesetSpec] = []
        used: set[str] = set()
        for i, item in enumerate(items):
            spec = self.ruleset(item, f"{key}[{i}]", i, used)
            if spec is not None:
                used.add(spec.name)
                out.append(spec)
        return out

    def ruleset(self, item: object, here: str, i: int, used: set[str]) -> RulesetSpec | None:
        if not isinstance(item, Mapping):
            self.err(BAD_INPUT, f"{here}: a ruleset is an object with rules and an action")
            return None
        rules_data = item.get("rules")
        if not isinstance(rules_data, list) or not rules_data:
            self.err(BAD_INPUT, f"{here}.rules: at least one rule is required")
            return None
        rules = [self.rule(r, f"{here}.rules[{j}]") for j, r in enumerate(rules_data)]
        raw = item.get("action")
        for j, sub in enumerate(raw.get("subscriptions") or [] if isinstance(raw, Mapping)
                                else []):
            statuses = sub.get("statuses") if isinstance(sub, Mapping) else None
            if isinstance(statuses, list) and any(
                    isinstance(x, str) and x != x.lower() for x in statuses):
                self.warn(DROPPED, f"{here}.action.subscriptions[{j}].statuses: read in lower "
                          "case; Galileo's API accepts lower case only")
        try:
            action = action_from_galileo(item.get("action"), f"{here}.action")
        except RulesetError as exc:
            self.err(BAD_INPUT, str(exc))
            return None
        description = item.get("description")
        description = description if isinstance(description, str) else None
        explicit = item.get("name")
        base = explicit if isinstance(explicit, str) and re.fullmatch(IDENTIFIER, explicit) \
            else slug(description or "") or f"ruleset_{i + 1}"
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        if any(r is None for r in rules):
            return None
        try:
            return RulesetSpec(name=name, description=description, rules=tuple(rules),
                               action=action)
        except ValidationError as exc:
            self.err(BAD_INPUT, f"{here}: {exc.errors()[0]['msg']}")
            return None

    def rule(self, data: object, here: str) -> RuleSpec | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("metric"), str):
            self.err(BAD_INPUT, f"{here}: a rule is an object with metric, operator and "
                     "target_value")
            return None
        try:
            op = Operator(str(data.get("operator", "")).lower())
        except ValueError:
            self.err(BAD_INPUT, f"{here}.operator: unknown operator {data.get('operator')!r}",
                     help=f"operators are {', '.join(o.value for o in Operator)}")
            return None
        name = metric_name(data["metric"])
        spec = self.catalog.get(name)
        if spec is None:
            return None  # its metric was already reported
        takes_none = Target.NONE in TARGETS[op]
        if "target_value" not in data and not takes_none:
            self.err(BAD_INPUT, f"{here}.target_value: required for `{op.value}`")
            return None
        target = data.get("target_value")
        if not (takes_none and target is not None) and rule_problem(spec, op, target) is None:
            return RuleSpec(metric=name, operator=op, target_value=artifact_target(op, target))
        # Galileo accepts the rule and gives it a truth for every value of the metric; write
        # a rule with that same truth, and say what Galileo does.
        found = faithful_rule(spec, op, target)
        written = f"`{data['metric']} {op.value} {json.dumps(target)}`"
        if isinstance(found, str):
            self.err(NOT_FAITHFUL, f"{here}: Galileo evaluates {written} as {found} for every "
                     f"value of `{name}`, and stageguard has no rule that says so on it",
                     help="remove the rule (or its ruleset) in Galileo first; the stage means "
                     "the same without it only if the ruleset then never triggers")
            return None
        new_op, new_target, truth = found
        rewritten = RuleSpec(metric=name, operator=new_op,
                             target_value=artifact_target(new_op, new_target))
        shown = f"`{name} {new_op.value} {json.dumps(rewritten.target_value)}`"
        if truth == "the same":
            self.warn(REWRITTEN, f"{here}: in {written}, labels outside the vocabulary of "
                      f"`{name}`{_domain(spec)} never match in Galileo: imported as {shown}",
                      help="drop the unknown labels in Galileo too")
        else:
            self.warn(REWRITTEN, f"{here}: Galileo evaluates {written} as {truth} for every "
                      f"value of `{name}`{_domain(spec)}: imported as {shown}, which is too",
                      help="the ruleset " + ("can never trigger" if truth == "never true"
                                             else "does not depend on this rule")
                      + "; consider removing it")
        return rewritten


def _domain(spec: MetricSpec) -> str:
    if spec.type in (MetricType.SCORE, MetricType.NUMBER) and (
            spec.minimum is not None or spec.maximum is not None):
        low = "-inf" if spec.minimum is None else f"{spec.minimum:g}"
        high = "inf" if spec.maximum is None else f"{spec.maximum:g}"
        return f" (in [{low}, {high}])"
    if spec.labels is not None:
        return f" (labels {', '.join(spec.labels)})"
    return ""


def _rules(item: object) -> list[object]:
    rules = item.get("rules") if isinstance(item, Mapping) else None
    return list(rules) if isinstance(rules, list) else []


def import_galileo(text: str, path: str, *, stage: str | None = None,
                   project: str | None = None, kind: str | None = None) -> Imported:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        span = Span(path, exc.pos, exc.pos + 1, exc.lineno, exc.colno, exc.lineno, exc.colno + 1)
        return Imported(None, (error(BAD_INPUT, f"not valid JSON: {exc.msg}", span),))
    imp = _Importer(path, text)
    body: Mapping[str, Any]
    if isinstance(data, list):
        body, key = {"prioritized_rulesets": data}, "(list)"
    elif isinstance(data, Mapping):
        body = data
        key = "prioritized_rulesets" if "prioritized_rulesets" in data else "rulesets"
        for k in data:
            if k in _NOT_KEPT and data[k] not in (None, False, {}, []):
                imp.warn(DROPPED, f"{k}: not carried over: {_NOT_KEPT[k]}")
            elif k not in _STAGE_KEYS:
                imp.warn(DROPPED, f"{k}: unknown field, not carried over")
        if "prioritized_rulesets" in data and "rulesets" in data:
            imp.warn(DROPPED, "both `prioritized_rulesets` and `rulesets` are given: "
                     "`prioritized_rulesets` is used, as Galileo does")
    else:
        return Imported(None, (error(BAD_INPUT, "expected a Galileo stage body, an invoke "
                                     "request or a list of rulesets", imp.span("")),))
    items = rulesets_of(body)
    items = [] if items is None else items
    rulesets = imp.rulesets(items, key if isinstance(data, Mapping) else "[]")
    stage_name = stage or body.get("name") or body.get("stage_name")
    if not isinstance(stage_name, str) or not stage_name:
        imp.err(BAD_INPUT, "the JSON names no stage: give --stage NAME")
        stage_name = "imported"
    stage_name = _identifier(stage_name, imp, "name" if "name" in body else "stage_name")
    project_name = _identifier(project or body.get("project_name") or "imported", imp,
                               "project_name")
    written_type = kind or body.get("type") or ("local" if not items else "central")
    try:
        stage_type = StageType(str(written_type).lower())
    except ValueError:
        imp.err(BAD_INPUT, f"type: a stage is `central` or `local`, not {written_type!r}")
        stage_type = StageType.CENTRAL
    description = body.get("description") if isinstance(body.get("description"), str) else None
    # The stage's Galileo id is kept (`id "…"`), so callers that name it by id still find it.
    kept_id = None
    for field in ("id", "stage_id"):
        written_id = body.get(field)
        if written_id is None:
            continue
        kept_id = uuid4_text(written_id) if isinstance(written_id, str) else None
        if kept_id is None:
            imp.warn(DROPPED, f"{field}: {written_id!r} is not a UUID4: not carried over, "
                     "the stage's id is derived from its name")
        break
    if has_errors(imp.diagnostics):
        return Imported(None, tuple(imp.diagnostics))
    used = {r.metric for rs in rulesets for r in rs.rules}
    metrics = tuple(sorted((m for n, m in imp.catalog.items()
                            if n in used or not m.builtin), key=lambda m: m.name))
    if stage_type is StageType.LOCAL and rulesets:
        imp.warn(DROPPED, "a local stage's rulesets come with each invocation: they are "
                 "written as a central stage instead", help="pass --type central to say so")
        stage_type = StageType.CENTRAL
    spec = StageSpec(name=stage_name, type=stage_type, description=description,
                     fail_mode=FailMode.OPEN, id=kept_id)
    source = policy_source(project_name, spec, rulesets, metrics)
    formatted = format_text(source, f"{stage_name}.sg")
    out = formatted.text
    # The generated source must compile to exactly what was imported.
    check = compile_text(out or "", f"{stage_name}.sg")
    if out is None or not check.ok or tuple(
            check.artifacts[0].to_artifact().rulesets) != tuple(rulesets):
        raise AssertionError("imported rulesets did not survive compilation: "
                             f"{[d.message for d in check.diagnostics]}")
    return Imported(out, tuple(imp.diagnostics), tuple(rulesets), metrics)


def _identifier(text: str, imp: _Importer, what: str) -> str:
    if re.fullmatch(IDENTIFIER, text):
        return text
    name = slug(text) or what
    imp.warn(DROPPED, f"{what}: {text!r} is not an identifier: written as `{name}`")
    return name


# ---- export -----------------------------------------------------------------------------------


def export_galileo(artifact: Artifact, *, paused: bool = False, names: bool = True,
                   project_id: str | None = None) -> tuple[object, list[str]]:
    """The stage-create body for a central stage, or the `prioritized_rulesets` list for a
    local one (Galileo's local stages take their rulesets with each invocation); and notes
    on what Galileo will not do the same way."""
    notes = []
    if artifact.stage.fail_mode is FailMode.CLOSED:
        notes.append("the stage fails closed; Galileo has no such setting, so there a "
                     "failing scorer lets rules go untriggered (fail open)")
    closed = sorted(m.name for m in artifact.metrics if m.fail_mode is FailMode.CLOSED)
    if closed and artifact.stage.fail_mode is not FailMode.CLOSED:
        notes.append(f"metrics {', '.join(closed)} fail closed; Galileo has no such setting, "
                     "so there their failures let rules go untriggered (fail open)")
    budgeted = sorted(m.name for m in artifact.metrics if m.timeout is not None)
    if budgeted:
        notes.append(f"metrics {', '.join(budgeted)} have their own timeout; Galileo has "
                     "only the invocation's")
    remote = sorted(m.name for m in artifact.metrics if m.scorer is not None)
    if remote:
        notes.append(f"metrics {', '.join(remote)} are scored by your HTTP service here; "
                     "Galileo does not call it")
    custom = sorted({r.metric for rs in artifact.rulesets for r in rs.rules}
                    - set(BUILTIN_METRICS))
    if custom:
        notes.append(f"custom metrics {', '.join(custom)} need a scorer of that name on the "
                     "Galileo side")
    rulesets = []
    for rs in artifact.rulesets:
        data = ruleset_to_galileo(rs)
        if not names:
            del data["name"]
        if data["description"] is None:
            del data["description"]
        rulesets.append(data)
    if artifact.stage.type is StageType.LOCAL:
        return rulesets, notes
    body: dict[str, Any] = {"name": artifact.stage.name}
    if project_id is not None:
        body["project_id"] = project_id
    if artifact.stage.description is not None:
        body["description"] = artifact.stage.description
    body.update(type=artifact.stage.type.value, paused=paused, prioritized_rulesets=rulesets)
    return body, notes


__all__ = ["Imported", "export_galileo", "import_galileo", "metric_name"]
