"""Policy tests: `*.test.toml` files next to the policies, run by `stageguard test` and by
the pytest plugin.

A file names a default stage and holds `[[case]]`s (one payload, one expectation),
`[[table]]`s (one expectation, many payloads) and `[[property]]`s (a claim about every
payload in a region, checked exactly by the analysis, with a counterexample when false).
Cases are decided by the real runtime on the compiled policies; coverage counts which
rulesets triggered, which rules were reached, and for every threshold whether a case sat
just below, at and just above it.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageguard.compiler.analysis import (
    Space,
    StageModel,
    decide,
    differences,
    intersect,
    partition,
    subtract,
)
from stageguard.compiler.diagnostics import did_you_mean, render_all
from stageguard.compiler.diff import joint_space
from stageguard.compiler.pipeline import compile_paths
from stageguard.compiler.rulesets import PolicyError, rulesets_from_source
from stageguard.compiler.unparse import number_literal, rule_source
from stageguard.runtime.catalog import BUILTIN_METRICS, canonical_name
from stageguard.runtime.engine import InvalidRequest, Runtime
from stageguard.runtime.evaluate import Failure, Value
from stageguard.runtime.model import (
    Action,
    ActionType,
    Artifact,
    MetricType,
    Operator,
    RulesetSpec,
    Status,
)
from stageguard.runtime.registry import Registry, RegistryError, load_artifact
from stageguard.runtime.response import Response
from stageguard.runtime.rule_types import TARGETS, Target

SUFFIX = ".test.toml"
_EXPECT_KEYS = {"status", "ruleset", "action", "text", "text_is_choice", "rulesets"}
_THEN = {"override", "passthrough", "triggered", "not_triggered", "not passthrough",
         "not override"}


class TestFileError(ValueError):
    """Test files that cannot be read: one message per problem (`problems`), each naming the
    file and the entry; every problem of every file is found before any is reported."""

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.args)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# The keys each kind of entry takes (a typo'd key gets a suggestion, not silence).
_ENTRY_KEYS = {
    "case": {"name", "stage", "input", "output", "metrics", "expect", "rulesets", "version"},
    "table": {"name", "stage", "input", "output", "expect", "rows", "rulesets", "version"},
    "property": {"name", "stage", "when", "then", "same_as"},
}


def _unknown(keys: Iterable[str], known: set[str], what: str) -> str | None:
    unknown = sorted(set(keys) - known)
    if not unknown:
        return None
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else f" (known: {', '.join(sorted(known))})"
    return f"unknown {what} `{unknown[0]}`{hint}"


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    stage: str
    payload: Mapping[str, Any]
    expect: Mapping[str, Any]
    rulesets: str | None = None  # local stages: the rulesets the invocation brings
    version: int | None = None   # a pinned version (registry-backed test files)

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


@dataclass(frozen=True)
class Property:
    file: str
    name: str
    stage: str
    when: tuple[str, ...]
    then: str | None
    # "behaves like version N (or the artifact at this path) except where `when` holds"
    same_as: int | str | None = None

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


@dataclass
class Outcome:
    id: str
    passed: bool
    report: str = ""  # why it failed: expected beside actual, values, rules
    summary: str = ""  # one line of it, for CI reports ("status: expected …, got …")
    seconds: float = 0.0

    @property
    def headline(self) -> str:
        return self.summary or (self.report.splitlines()[0] if self.report else "failed")


@dataclass
class Coverage:
    """Per stage: rulesets triggered, rules reached, threshold sides hit."""

    triggered: dict[tuple[str, str], int] = field(default_factory=dict)
    reached: dict[tuple[str, str, int], int] = field(default_factory=dict)
    sides: dict[tuple[str, str, int], set[str]] = field(default_factory=dict)

    def percent(self) -> tuple[float, float, float]:
        def pct(hit: int, total: int) -> float:
            return 100.0 if total == 0 else 100.0 * hit / total
        rulesets = pct(sum(1 for n in self.triggered.values() if n), len(self.triggered))
        rules = pct(sum(1 for n in self.reached.values() if n), len(self.reached))
        sides = pct(sum(len(s) for s in self.sides.values()), 3 * len(self.sides))
        return rulesets, rules, sides


# ---- reading test files ---------------------------------------------------------------------


def discover(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found += sorted(q for q in p.rglob(f"*{SUFFIX}") if not q.name.startswith("."))
        elif p.is_file():
            found.append(p)
        else:
            raise TestFileError(f"`{raw}` does not exist")
    return list(dict.fromkeys(found))


def read(path: Path) -> tuple[dict[str, Any], list[Case], list[Property]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TestFileError(f"{path}: not valid TOML: {exc}") from None
    default = data.get("stage")
    shown = str(path)
    cases: list[Case] = []
    problems: list[str] = []
    known = {"stage", "policies", "registry", "case", "table", "property"}
    top = _unknown(data, known, "key")
    if top:
        problems.append(f"{shown}: {top}")

    def stage_of(entry: Mapping[str, Any], where: str) -> str:
        stage = entry.get("stage", default)
        if not isinstance(stage, str):
            raise TestFileError(f"{shown}: {where}: name a stage (`stage = \"...\"` at the top "
                                "of the file or in the entry)")
        return stage

    def entries(kind: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """The entries of a kind, in file order; a malformed one is a problem, in order."""
        items = data.get(kind, [])
        if not isinstance(items, list):
            problems.append(f"{shown}: `{kind}` is a list of tables (write `[[{kind}]]`)")
            return
        for i, entry in enumerate(items):
            where = f"{kind} {i + 1} ({entry.get('name', 'unnamed')})" \
                if isinstance(entry, dict) else f"{kind} {i + 1}"
            if not isinstance(entry, dict):
                problems.append(f"{shown}: {where}: expected a table")
                continue
            bad = _unknown(entry, _ENTRY_KEYS[kind], "key")
            if bad:
                problems.append(f"{shown}: {where}: {bad}")
                continue
            yield where, entry

    for where, entry in entries("case"):
        try:
            cases.append(Case(shown, str(entry.get("name", where)), stage_of(entry, where),
                              _payload(entry, shown, where), _expect(entry, shown, where),
                              entry.get("rulesets"), _version(entry, data, shown, where)))
        except TestFileError as exc:
            problems.extend(exc.problems)
    for where, entry in entries("table"):
        try:
            cases.extend(_table(entry, where, shown, data, stage_of))
        except TestFileError as exc:
            problems.extend(exc.problems)
    props: list[Property] = []
    for where, entry in entries("property"):
        try:
            props.append(_property(entry, where, shown, data, path, stage_of))
        except TestFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TestFileError(*problems)
    return data, cases, props


def _table(entry: Mapping[str, Any], where: str, shown: str, data: Mapping[str, Any],
           stage_of: Callable[[Mapping[str, Any], str], str]) -> list[Case]:
    cases = []
    expect = _expect(entry, shown, where)
    rows = entry.get("rows")
    if not isinstance(rows, list) or not rows:
        raise TestFileError(f"{shown}: {where}: `rows` lists the payloads")
    base = str(entry.get("name", where))
    for j, row in enumerate(rows):
        merged = {**{k: v for k, v in entry.items() if k in ("input", "output")}, **row}
        cases.append(Case(shown, f"{base}[{j + 1}]", stage_of(entry, where),
                          _payload(merged, shown, f"{where} row {j + 1}"), expect,
                          entry.get("rulesets"), _version(entry, data, shown, where)))
    return cases


def _property(entry: Mapping[str, Any], where: str, shown: str, data: Mapping[str, Any],
              path: Path, stage_of: Callable[[Mapping[str, Any], str], str]) -> Property:
    when = entry.get("when", [])
    when = [when] if isinstance(when, str) else when
    then = entry.get("then")
    same_as = entry.get("same_as")
    if same_as is not None:
        if then is not None:
            raise TestFileError(f"{shown}: {where}: a `same_as` property states no `then`")
        if isinstance(same_as, int) and "registry" not in data:
            raise TestFileError(f"{shown}: {where}: `same_as = N` names a version of the "
                                "registry given by `registry = \"DIR\"`")
        if isinstance(same_as, str):
            same_as = str(path.parent / same_as)
    elif then not in _THEN and not (isinstance(then, str) and then.startswith("ruleset ")):
        raise TestFileError(f"{shown}: {where}: `then` is one of {', '.join(sorted(_THEN))}"
                            " or `ruleset NAME` (or use `same_as`)")
    return Property(shown, str(entry.get("name", where)), stage_of(entry, where),
                    tuple(when), then, same_as)


def _version(entry: Mapping[str, Any], data: Mapping[str, Any], file: str,
             where: str) -> int | None:
    version = entry.get("version")
    if version is None:
        return None
    if not isinstance(version, int) or version < 1 or "registry" not in data:
        raise TestFileError(f"{file}: {where}: `version` pins a version (a number from 1) of "
                            "the registry given by `registry = \"DIR\"`")
    return version


def _payload(entry: Mapping[str, Any], file: str, where: str) -> dict[str, Any]:
    metrics = entry.get("metrics", {})
    if not isinstance(metrics, dict):
        raise TestFileError(f"{file}: {where}: `metrics` is a table of metric values")
    return {"input": str(entry.get("input", "")), "output": str(entry.get("output", "")),
            "metrics": {k: (None if v == "missing" else v) for k, v in metrics.items()}}


def _expect(entry: Mapping[str, Any], file: str, where: str) -> dict[str, Any]:
    expect = entry.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise TestFileError(f"{file}: {where}: `expect` states at least one of "
                            f"{', '.join(sorted(_EXPECT_KEYS))}")
    bad = _unknown(expect, _EXPECT_KEYS, "expectation")
    if bad:
        raise TestFileError(f"{file}: {where}: {bad}")
    return expect


# ---- running --------------------------------------------------------------------------------


@dataclass
class Suite:
    stages: dict[str, Artifact]
    sources: dict[str, str]
    runtime: Runtime


def load_suite(policy_paths: Sequence[str], workdir: Path) -> Suite:
    compilation = compile_paths(list(policy_paths))
    if not compilation.ok:
        raise TestFileError("the policies do not compile:\n"
                            + render_all(compilation.diagnostics, compilation.sources))
    files = []
    stages = {}
    for doc in compilation.artifacts:
        art = doc.to_artifact()
        path = workdir / f"{art.project}.{art.stage.name}.json"
        path.write_bytes(doc.to_bytes(1))
        files.append(path)
        stages[art.stage.name] = art
    runtime = Runtime.from_files(*files, deliver_webhooks=False)
    return Suite(stages, compilation.sources, runtime)


def load_registry_suite(root: str) -> Suite:
    """A registry as the system under test: latest versions, pinned ones on request."""
    registry = Registry(root)
    index = registry.read_index()
    if not index.projects:
        raise TestFileError(f"registry {root} holds no stages")
    stages = {name: registry.load(project, name)
              for project, entries in index.projects.items() for name in entries}
    return Suite(stages, {}, Runtime(root, deliver_webhooks=False))


def run_case(suite: Suite, case: Case, coverage: Coverage | None = None) -> Outcome:
    art = suite.stages.get(case.stage)
    if art is None:
        return Outcome(case.id, False, f"no stage `{case.stage}` in the policies (stages: "
                       f"{', '.join(sorted(suite.stages))})")
    rulesets = None
    if case.rulesets is not None:
        try:
            rulesets = rulesets_from_source(case.rulesets, art.metrics)
        except PolicyError as exc:
            return Outcome(case.id, False, f"the case's rulesets do not compile: {exc}")
    mistakes = _case_mistakes(suite, case, art)
    if mistakes:
        return Outcome(case.id, False, "\n".join(mistakes))
    try:
        r = suite.runtime.invoke(case.payload, case.stage, project=art.project,
                                 rulesets=rulesets, version=case.version)
    except (InvalidRequest, LookupError) as exc:
        return Outcome(case.id, False, f"the runtime refuses this payload: {exc} (give the "
                       "case an `input` or `output` text)")
    problems = _compare(case.expect, r)
    if coverage is not None and case.version is None:
        _cover(coverage, case.stage, r)
    if not problems:
        return Outcome(case.id, True)
    return Outcome(case.id, False, _report(case, r, problems, art),
                   "; ".join(f"{what}: expected {want}, got {got}"
                             for what, want, got in problems))


def _case_mistakes(suite: Suite, case: Case, art: Artifact) -> list[str]:
    """Names in a case that match nothing: a metric no catalog has (the runtime would ignore
    it, and the case would test something else), a ruleset the stage does not have."""
    out = []
    known = {*BUILTIN_METRICS, *(m.name for a in suite.stages.values() for m in a.metrics)}
    for name in (case.payload.get("metrics") or {}):
        if canonical_name(name) not in known:
            hint = did_you_mean(name, known)
            out.append(f"unknown metric `{name}` in the case's metrics" +
                       (f" ({hint})" if hint else ""))
    if case.rulesets is None:  # a local stage's rulesets come with the case
        names = [rs.name for rs in art.rulesets]
        wanted = [*(case.expect.get("rulesets") or {})]
        if case.expect.get("ruleset") not in (None, "", "none"):
            wanted.append(str(case.expect["ruleset"]))
        for name in wanted:
            if name not in names:
                hint = did_you_mean(name, names)
                out.append(f"`expect` names ruleset `{name}`, which stage `{case.stage}` "
                           "does not have" + (f" ({hint})" if hint else
                                              f" (it has {', '.join(names) or 'none'})"))
    return out


def _winner(r: Response) -> str | None:
    for res in r.ruleset_results:
        if res.status is Status.TRIGGERED:
            return res.name
    return None


def _compare(expect: Mapping[str, Any], r: Response) -> list[tuple[str, object, object]]:
    out: list[tuple[str, object, object]] = []
    if "status" in expect and str(expect["status"]).lower() != r.status.value:
        out.append(("status", expect["status"], r.status.value))
    if "ruleset" in expect:
        want = expect["ruleset"]
        got = _winner(r)
        if (want in ("none", "", None) and got is not None) or (
                want not in ("none", "", None) and want != got):
            out.append(("winning ruleset", want, got or "none"))
    if "action" in expect:
        got = r.action_result.type.value.lower() if r.action_result else "none"
        if str(expect["action"]).lower() != got:
            out.append(("action", expect["action"], got))
    if "text" in expect and expect["text"] != r.text:
        out.append(("text", expect["text"], r.text))
    if expect.get("text_is_choice"):
        first = _winner(r)
        spec = next((x.ruleset for x in r.ruleset_results if x.name == first), None)
        choices = spec.action.choices if spec and spec.action.type is ActionType.OVERRIDE \
            else None
        if not choices or r.text not in choices:
            out.append(("text", "one of the override choices", r.text))
    for name, want in (expect.get("rulesets") or {}).items():
        got = next((x.status.value for x in r.ruleset_results if x.name == name), "absent")
        if str(want).lower() != got:
            out.append((f"ruleset `{name}`", want, got))
    return out


def _report(case: Case, r: Response, problems: list[tuple[str, object, object]],
            art: Artifact) -> str:
    lines = [f"{'':2}{'':<18} {'expected':<28} actual"]
    for what, want, got in problems:
        lines.append(f"  {what:<18} {want!s:<28} {got}")
    metrics = {k: _shown(v.value) for k, v in r.metric_results.items()}
    if metrics:
        lines.append("  metric values: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    where = art.source_map
    lines.append("  rules:")
    for i, res in enumerate(r.ruleset_results):
        loc = ""
        if where is not None and i < len(where.rulesets):
            line, _ = where.rulesets[i].ruleset
            loc = f"  [{where.file}:{line}]"
        lines.append(f"    {res.name}: {res.status.value}{loc}")
        for k, rule in enumerate(res.rule_results):
            spot = ""
            if where is not None and i < len(where.rulesets) and k < len(
                    where.rulesets[i].rules):
                spot = f"  [{where.file}:{where.rulesets[i].rules[k][0]}]"
            text = rule_source(rule.metric, Operator(rule.operator), rule.target_value)
            value = "" if rule.status == "skipped" else f" (value {_shown(rule.value)})"
            lines.append(f"      {rule.status:<13} when {text}{value}{spot}")
    return "\n".join(lines)


def _shown(value: object) -> str:
    if isinstance(value, Failure):
        return f"<{value.status.value}: {value.message}>"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{x}"' for x in value) + "]"
    return "missing" if value is None else repr(value)


def _cover(coverage: Coverage, stage: str, r: Response) -> None:
    """Count what the stage's own rulesets did (seeded by `seed_coverage`); rulesets a
    case brought to a local stage are not the policy's."""
    for res in r.ruleset_results:
        key = (stage, res.name)
        if key not in coverage.triggered:
            continue
        coverage.triggered[key] += res.status is Status.TRIGGERED
        for k, rule in enumerate(res.rule_results):
            rk = (stage, res.name, k)
            coverage.reached[rk] = coverage.reached.get(rk, 0) + (rule.status != "skipped")
            sides = coverage.sides.get(rk)
            if sides is not None:
                v = rule.value
                t = rule.target_value
                if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v):
                    sides.add("below" if v < t else "at" if v == t else "above")  # type: ignore[operator]


def seed_coverage(coverage: Coverage, stages: Iterable[Artifact]) -> None:
    """Every ruleset, rule and threshold starts at zero, so untested ones count."""
    for art in stages:
        if not art.rulesets:
            continue
        for rs in art.rulesets:
            coverage.triggered.setdefault((art.stage.name, rs.name), 0)
            for k, rule in enumerate(rs.rules):
                coverage.reached.setdefault((art.stage.name, rs.name, k), 0)
                if Target.NUMBER in TARGETS[rule.operator] and isinstance(
                        rule.target_value, float):
                    coverage.sides.setdefault((art.stage.name, rs.name, k), set())


# ---- properties, checked exactly ------------------------------------------------------------


def check_property(suite: Suite, prop: Property) -> Outcome:
    art = suite.stages.get(prop.stage)
    if art is None:
        return Outcome(prop.id, False, f"no stage `{prop.stage}` in the policies")
    stage = StageModel.of(art)
    try:
        when = rulesets_from_source("ruleset when {\n" + "\n".join(
            f"  when {w}" for w in prop.when) + "\n  passthrough\n}",
            art.metrics) if prop.when else ()
    except PolicyError as exc:
        return Outcome(prop.id, False, f"`when` does not compile: {exc}")
    region_rules = when[0].rules if when else ()
    if prop.same_as is not None:
        return _same_as(suite, prop, art, stage, region_rules)
    space = Space(stage.catalog, (*stage.rulesets, *when))
    region = space.ruleset_box(region_rules) if region_rules else space.full
    if region is None:
        return Outcome(prop.id, False, "`when` describes no payload at all (its rules "
                       "contradict each other), so the property says nothing")
    for box, decision in partition(space, stage):
        hit = tuple(a & b for a, b in zip(box, region, strict=True))
        if 0 in hit or _holds(prop.then, decision):
            continue
        witness = space.witness(hit)
        again = decide(stage, witness.values)  # the counterexample, re-evaluated
        return Outcome(prop.id, False, f"counterexample: {witness.text()}\n"
                       f"  decided: {again.text()}\n  where: {space.describe(hit)}")
    return Outcome(prop.id, True)


def _same_as(suite: Suite, prop: Property, art: Artifact, stage: StageModel,
             allowed: Sequence[Any]) -> Outcome:
    """The stage decides like the other version everywhere but where `when` holds: every
    region the exact diff finds must lie inside `when`."""
    try:
        if isinstance(prop.same_as, int):
            registry = suite.runtime.registry
            assert registry is not None
            other = StageModel.of(registry.load(art.project, art.stage.name, prop.same_as))
        else:
            other = StageModel.of(load_artifact(str(prop.same_as)))
    except (RegistryError, OSError) as exc:
        return Outcome(prop.id, False, f"cannot load `{prop.same_as}`: {exc}")
    extra = (RulesetSpec(name="when", rules=tuple(allowed),
                         action=Action(type=ActionType.PASSTHROUGH)),) if allowed else ()
    space = joint_space(other, _with_catalog(stage, allowed), extra)
    inside = space.ruleset_box(allowed) if allowed else None
    found = []
    for box, was, now in differences(space, other, stage):
        for piece in subtract(box, inside) if inside is not None else [box]:
            found.append((piece, was, now))
    if not found:
        return Outcome(prop.id, True)
    # Show a counterexample with every metric computed when there is one: easier to read
    # than one that needs a scorer to fail.
    plain = [(hit, was, now) for piece, was, now in found
             if (hit := intersect(piece, space.computed)) is not None]
    box, was, now = (plain or found)[0]
    w = space.witness(box, plain=bool(plain))
    label = f"version {prop.same_as}" if isinstance(prop.same_as, int) else "the other version"
    return Outcome(prop.id, False,
                   f"counterexample: {w.text()}\n  {label}: {was.text()}\n"
                   f"  this version: {now.text()}\n  where: {space.describe(box, bool(plain))}")


def _with_catalog(stage: StageModel, rules: Sequence[Any]) -> StageModel:
    """The stage, its catalog extended by the built-in metrics `rules` name."""
    extra = {r.metric: BUILTIN_METRICS[r.metric] for r in rules
             if r.metric not in stage.catalog and r.metric in BUILTIN_METRICS}
    if not extra:
        return stage
    return StageModel(stage.name, stage.rulesets, {**stage.catalog, **extra}, stage.fail_closed)


def _holds(then: str | None, d: Any) -> bool:
    then = then or ""
    action = d.action.value.lower() if d.action else None
    status = d.status.value
    if then.startswith("ruleset "):
        return bool(d.ruleset == then.split(" ", 1)[1].strip())
    facts: dict[str, bool] = {
        "override": action == "override", "passthrough": action == "passthrough",
        "triggered": status == "triggered", "not_triggered": status != "triggered",
        "not passthrough": action != "passthrough", "not override": action != "override"}
    return facts[then]


# ---- suggestions for missing boundary cases -------------------------------------------------


def suggest(stages: Mapping[str, Artifact], coverage: Coverage) -> str:
    """Ready-to-paste `[[case]]`s for every threshold side no case hit: the payload reaches
    the rule (the ruleset's other rules hold) and sits just below, at or above it; the
    expectation is what the stage decides today, to be reviewed."""
    out = []
    spaces: dict[str, tuple[StageModel, Space]] = {}
    for (stage_name, rs_name, k), sides in sorted(coverage.sides.items()):
        missing = [s for s in ("below", "at", "above") if s not in sides]
        if not missing:
            continue
        if stage_name not in spaces:
            model = StageModel.of(stages[stage_name])
            spaces[stage_name] = (model, Space(model.catalog, model.rulesets))
        stage, space = spaces[stage_name]
        rs = next(r for r in stage.rulesets if r.name == rs_name)
        rule = rs.rules[k]
        others = [r for i, r in enumerate(rs.rules) if i != k and r.metric != rule.metric]
        box = space.ruleset_box(others) if others else space.full
        base = dict(space.witness(box).values) if box is not None else {}
        t = float(rule.target_value)  # type: ignore[arg-type]
        spec = stage.catalog.get(rule.metric)
        for side in missing:
            value = _side_value(t, side, spec)
            if value is None:
                continue
            # Every metric the stage reads gets a value: one left out would be a metric with no
            # source when the case runs (an error status), not the "missing" the analysis
            # would otherwise assume.
            values = {**_defaults(stage), **base, rule.metric: value}
            d = decide(stage, values)
            metrics = ", ".join(f"{m} = {_toml(v)}" for m, v in values.items())
            expect = f'status = "{d.status.value}"' + (
                f', ruleset = "{d.ruleset}"' if d.ruleset else "")
            name = f"{rs_name}: {rule_source(rule.metric, rule.operator, t)}, {side}"
            out.append(f'[[case]]\nname = "{name}"\nstage = "{stage_name}"\n'
                       f'output = "suggested case"\nmetrics = {{ {metrics} }}\n'
                       f"expect = {{ {expect} }}\n")
    return "\n".join(out)


def _defaults(stage: StageModel) -> dict[str, Value]:
    """A plain value for each metric the stage reads: the minimum (or 0), the first label,
    no labels."""
    out: dict[str, Value] = {}
    for name, spec in sorted(stage.catalog.items()):
        if spec.type in (MetricType.SCORE, MetricType.NUMBER):
            out[name] = spec.minimum if spec.minimum is not None else 0.0
        elif spec.type is MetricType.LABEL:
            out[name] = (spec.labels or ("none",))[0]
        else:
            out[name] = ()
    return out


def _side_value(t: float, side: str, spec: object) -> float | None:
    lo = getattr(spec, "minimum", None)
    hi = getattr(spec, "maximum", None)
    step = 0.01 if (hi is not None and hi <= 1) else 1.0
    v = {"below": t - step, "at": t, "above": t + step}[side]
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return None
    return round(v, 6)


def _toml(v: object) -> str:
    if v is None:
        return '"missing"'
    if isinstance(v, tuple | list):
        return "[" + ", ".join(f'"{x}"' for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return number_literal(float(v))  # type: ignore[arg-type]


# ---- one call for the CLI and the pytest plugin ---------------------------------------------


@dataclass
class Run:
    outcomes: list[Outcome]
    coverage: Coverage
    stages: dict[str, Artifact]


def select(items: Iterable[Case | Property], pattern: str | None) -> list[Case | Property]:
    if not pattern:
        return list(items)
    return [i for i in items if pattern in i.name or fnmatch.fnmatch(i.name, pattern)]


def policies_for(path: Path, data: Mapping[str, Any]) -> list[str]:
    """What the file tests: policy paths, or (`registry = "DIR"`) one registry."""
    if "registry" in data:
        return [str(path.parent / str(data["registry"]))]
    raw = data.get("policies", ["."])
    raw = [raw] if isinstance(raw, str) else raw
    return [str(path.parent / p) for p in raw]


class Suites:
    """Compiled policies (or opened registries), one per set of paths, shared by every test
    file that names them; for `stageguard test` and the pytest plugin alike."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="stageguard-test-")
        self._suites: dict[tuple[str, ...], Suite] = {}

    def get(self, paths: Sequence[str], registry: bool = False) -> tuple[Suite, bool]:
        """The suite, and whether it was loaded by this call."""
        key = tuple(paths)
        if key in self._suites:
            return self._suites[key], False
        if registry:
            suite = load_registry_suite(key[0])
        else:
            workdir = Path(self._tmp.name) / str(len(self._suites))
            workdir.mkdir()
            suite = load_suite(list(key), workdir)
        self._suites[key] = suite
        return suite, True

    def close(self) -> None:
        for suite in self._suites.values():
            suite.runtime.close()
        self._tmp.cleanup()


def run_files(paths: Sequence[str], pattern: str | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> Run:
    coverage = Coverage()
    outcomes: list[Outcome] = []
    stages: dict[str, Artifact] = {}
    # Every file is read before any runs, so one run reports every mistake in them.
    read_files = []
    problems: list[str] = []
    for path in discover(paths):
        try:
            read_files.append((path, *read(path)))
        except TestFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TestFileError(*problems)
    suites = Suites()
    try:
        for path, data, cases, props in read_files:
            suite, new = suites.get(policies_for(path, data), "registry" in data)
            if new:
                seed_coverage(coverage, suite.stages.values())
                stages.update(suite.stages)
            for item in select([*cases, *props], pattern):
                began = time.perf_counter()
                outcome = run_case(suite, item, coverage) if isinstance(item, Case) \
                    else check_property(suite, item)
                outcome.seconds = time.perf_counter() - began
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        suites.close()
    return Run(outcomes, coverage, stages)


__all__ = ["SUFFIX", "Case", "Coverage", "Outcome", "Property", "TestFileError",
           "check_property", "read", "run_case", "run_files", "suggest"]
