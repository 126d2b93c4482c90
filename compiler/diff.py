"""`stageguard diff`: what a policy change does, structurally and exactly.

Structural changes are read off the two artifacts (rulesets matched by name; a ruleset that
disappears while one with the same content appears is a rename). Behaviour is compared by
the exact analysis in one space built from both versions, with metric failures modelled: the
old stage's decision regions are refined by the new stage's first-match, and every part where
the decision (status, winning ruleset, action) differs is reported with a witness payload.
An empty list of such regions is a proof that the stage behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stageguard.compiler.analysis import (
    AnalysisStopped,
    Box,
    Decision,
    Space,
    StageModel,
    Witness,
    coalesce,
    differences,
    intersect,
    refine,
    subtract,
    time_limit,
)
from stageguard.compiler.unparse import rule_source
from stageguard.runtime.model import (
    Artifact,
    FailMode,
    MetricSpec,
    RulesetSpec,
    RuleSpec,
    Status,
)

if TYPE_CHECKING:
    from stageguard.compiler.traffic import StageTraffic

TIGHTENED = "tightened: more payloads trigger"
LOOSENED = "loosened: fewer payloads trigger"
RESHAPED = "changed: some payloads start and others stop triggering"


@dataclass(frozen=True, slots=True)
class Change:
    """One structural change. `effect` marks changes observable though no payload's
    decision or webhook changes (a stage renamed or retyped): they count as behaviour."""

    kind: str
    message: str
    ruleset: str | None = None
    direction: str | None = None
    effect: bool = False

    def to_data(self) -> dict[str, object]:
        return {"kind": self.kind, "ruleset": self.ruleset, "message": self.message,
                "direction": self.direction, "effect": self.effect}


@dataclass(frozen=True, slots=True)
class Region:
    """A part of metric space (a union of boxes) where the decision changes from `before`
    to `after`; `witness` is a payload in it."""

    before: Decision
    after: Decision
    boxes: tuple[Box, ...]
    witness: Witness
    # True when some metric fails throughout (the region exists only under failures).
    failures: bool = False

    def where(self, space: Space, limit: int | None = None) -> list[str]:
        """The boxes (the first `limit` of them) in words: worded when asked, since a
        region of a large stage can hold many thousands."""
        return [space.describe(b, not self.failures) for b in self.boxes[:limit]]

    def to_data(self, space: Space | None = None) -> dict[str, object]:
        """`where` describes each box; `boxes` (given the space) says exactly the same as
        data, every box (docs/schemas/diff.schema.json)."""
        return {"where": self.where(space) if space else [], "metric_failures": self.failures,
                **({"boxes": [space.box_data(b, not self.failures) for b in self.boxes]}
                   if space else {}),
                "witness": self.witness.to_data(),
                "before": self.before.to_data(), "after": self.after.to_data()}


@dataclass(frozen=True, slots=True)
class HookRegion:
    """Where a subscription starts or stops firing: its ruleset ends `before` / `after`
    (None: the ruleset is absent) and the url is posted to on one side only."""

    url: str
    ruleset: str
    before: Status | None
    after: Status | None
    fires_before: bool
    boxes: tuple[Box, ...]
    witness: Witness

    def where(self, space: Space, limit: int | None = None) -> list[str]:
        return [space.describe(b) for b in self.boxes[:limit]]

    def text(self) -> str:
        def side(status: Status | None, fires: bool) -> str:
            state = "absent" if status is None else f"ends {status.value}"
            return f"{state}, {'posts' if fires else 'does not post'}"
        return (f"`{self.ruleset}` {side(self.before, self.fires_before)} → "
                f"{side(self.after, not self.fires_before)}")

    def to_data(self, space: Space | None = None) -> dict[str, object]:
        return {"url": self.url, "ruleset": self.ruleset,
                "before": self.before.value if self.before else None,
                "after": self.after.value if self.after else None,
                "fires_before": self.fires_before, "fires_after": not self.fires_before,
                "where": self.where(space) if space else [],
                **({"boxes": [space.box_data(b) for b in self.boxes]} if space else {}),
                "witness": self.witness.to_data()}


@dataclass(frozen=True)
class StageDiff:
    project: str
    name: str
    old: Artifact | None
    new: Artifact | None
    changes: tuple[Change, ...]
    regions: tuple[Region, ...]
    space: Space | None = field(default=None, compare=False, repr=False)
    hooks: tuple[HookRegion, ...] = ()
    # How many logged decisions lie in each region (`diff --traffic`, compiler/traffic.py).
    traffic: StageTraffic | None = field(default=None, compare=False)
    # Regions and webhook regions a report left out (`--max-regions`, compiler/report.py).
    regions_left_out: int = field(default=0, compare=False)
    hooks_left_out: int = field(default=0, compare=False)

    @property
    def behaviour_changed(self) -> bool:
        return self.old is None or self.new is None or bool(self.regions) or bool(
            self.hooks) or bool(self.regions_left_out or self.hooks_left_out) or any(
            c.effect for c in self.changes)

    @property
    def status(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        if self.behaviour_changed:
            return "behaviour changed"
        return "no behavioural change" if self.changes else "unchanged"

    def to_data(self) -> dict[str, object]:
        return {
            "project": self.project, "stage": self.name, "status": self.status,
            "old_version": self.old.version if self.old else None,
            "new_version": self.new.version if self.new else None,
            "behaviour_changed": self.behaviour_changed,
            "changes": [c.to_data() for c in self.changes],
            "regions": [self._region_data(i, r) for i, r in enumerate(self.regions)],
            "webhooks": [h.to_data(self.space) for h in self.hooks],
            **({"traffic": self.traffic.to_data()} if self.traffic is not None else {}),
        }

    def _region_data(self, i: int, region: Region) -> dict[str, object]:
        data = region.to_data(self.space)
        t = self.traffic
        if t is not None:
            data["traffic"] = {"count": t.regions[i], "share": t.share(t.regions[i]),
                               "examples": t.examples[i]}
        return data


@dataclass(frozen=True)
class DiffReport:
    old_label: str
    new_label: str
    stages: tuple[StageDiff, ...]
    # Stages not compared: the analysis stopped at its time limit (`diff --timeout`).
    incomplete: tuple[str, ...] = ()

    @property
    def behaviour_changed(self) -> bool:
        return any(s.behaviour_changed for s in self.stages)

    def to_data(self) -> dict[str, object]:
        return {"old": self.old_label, "new": self.new_label,
                "behaviour_changed": self.behaviour_changed,
                "stages": [s.to_data() for s in self.stages],
                **({"incomplete": list(self.incomplete)} if self.incomplete else {})}


# ---- comparing ------------------------------------------------------------------------------


def diff(old: Mapping[tuple[str, str], Artifact], new: Mapping[tuple[str, str], Artifact],
         old_label: str = "old", new_label: str = "new",
         on_stage: Callable[[int, int, str], None] | None = None,
         timeout: float | None = None) -> DiffReport:
    """`on_stage(i, n, name)` is told before each stage is compared (for progress). With
    `timeout` (seconds), comparing stops there: the stages not compared are `incomplete`."""
    with time_limit(timeout):
        return _diff(old, new, old_label, new_label, on_stage)


def _diff(old: Mapping[tuple[str, str], Artifact], new: Mapping[tuple[str, str], Artifact],
          old_label: str, new_label: str,
          on_stage: Callable[[int, int, str], None] | None) -> DiffReport:
    stages = []
    gone = [k for k in old if k not in new]
    came = [k for k in new if k not in old]
    renamed: dict[tuple[str, str], tuple[str, str]] = {}
    for k in gone:
        for n in came:
            if n[0] == k[0] and n not in renamed.values() and _same_stage(old[k], new[n]):
                renamed[k] = n
                break
    keys = sorted(set(old) | set(new))
    for i, key in enumerate(keys, 1):
        if on_stage is not None:
            on_stage(i, len(keys), key[1])
        if key in renamed.values():
            continue
        if key in renamed:
            a, b = old[key], new[renamed[key]]
            stages.append(StageDiff(key[0], f"{key[1]} → {b.stage.name}", a, b, (Change(
                "stage-renamed", f"stage `{key[1]}` renamed to `{b.stage.name}`: callers of "
                "the old name no longer find it", effect=True),), ()))
            continue
        try:
            stages.append(diff_stage(old.get(key), new.get(key), key))
        except AnalysisStopped:
            rest = tuple(f"{k[0]}/{k[1]}" for k in keys[i - 1:] if k not in renamed.values())
            return DiffReport(old_label, new_label, tuple(stages), rest)
    return DiffReport(old_label, new_label, tuple(stages))


def _same_stage(a: Artifact, b: Artifact) -> bool:
    return (a.rulesets, a.stage.type, a.stage.fail_mode, a.metrics) == (
        b.rulesets, b.stage.type, b.stage.fail_mode, b.metrics)


def diff_stage(old: Artifact | None, new: Artifact | None,
               key: tuple[str, str] | None = None) -> StageDiff:
    some = old or new
    assert some is not None
    project, name = key or (some.project, some.stage.name)
    if old is None or new is None:
        kind = "stage-added" if old is None else "stage-removed"
        verb = "added" if old is None else "removed"
        n = len(some.rulesets)
        return StageDiff(project, name, old, new, (Change(
            kind, f"stage `{name}` {verb} ({n} ruleset{'s' if n != 1 else ''})"),), ())
    renames = _renames(old.rulesets, new.rulesets)
    changes = _structural(old, new, renames)
    rename = {v: k for k, v in renames.items()}
    before, after = StageModel.of(old), StageModel.of(new)
    space, regions = behaviour(before, after, rename)
    return StageDiff(project, name, old, new, tuple(changes), tuple(regions), space,
                     tuple(webhooks(space, before, after, rename)))


def _hooks(rs: RulesetSpec | None) -> dict[str, set[Status]]:
    out: dict[str, set[Status]] = {}
    for sub in rs.action.subscriptions if rs is not None else ():
        out.setdefault(sub.url, set()).update(sub.statuses)
    return out


def webhooks(space: Space, old: StageModel, new: StageModel,
             rename: Mapping[str, str] | None = None) -> list[HookRegion]:
    """Every region where a subscription starts or stops being posted to. Every ruleset is
    evaluated (not only up to the winner), so a ruleset's own outcome decides its hooks,
    whatever the others do: this compares each ruleset with itself."""
    rename = rename or {}
    back = {v: k for k, v in rename.items()}  # old name -> new name
    old_by = {rs.name: rs for rs in old.rulesets}
    new_by = {rename.get(rs.name, rs.name): rs for rs in new.rulesets}
    out = []
    for name in dict.fromkeys([*old_by, *new_by]):
        a, b = old_by.get(name), new_by.get(name)
        hooks_a, hooks_b = _hooks(a), _hooks(b)
        if not (hooks_a or hooks_b) or (
                hooks_a == hooks_b and a is not None and b is not None
                and a.rules == b.rules and old.fail_closed == new.fail_closed):
            continue
        pieces: list[tuple[Box, object]] = [(space.full, None)]
        if a is not None:
            alone = StageModel(name, (a,), old.catalog, old.fail_closed)
            pieces = [(box, d.status) for box, _, d in refine(space, alone, pieces)]
        outcomes: list[tuple[Box, object, object]]
        if b is not None:
            alone = StageModel(name, (b,), new.catalog, new.fail_closed)
            outcomes = [(box, was, d.status) for box, was, d in refine(space, alone, pieces)]
        else:
            outcomes = [(box, was, None) for box, was in pieces]
        for url in dict.fromkeys([*hooks_a, *hooks_b]):
            groups: dict[tuple[object, object], list[Box]] = {}
            for box, was, now in outcomes:
                fires_a = was in hooks_a.get(url, ())
                fires_b = now in hooks_b.get(url, ())
                if fires_a != fires_b:
                    groups.setdefault((was, now), []).append(box)
            for (was, now), boxes in groups.items():
                merged = coalesce(boxes)
                out.append(HookRegion(
                    url, back.get(name, name), was, now,  # type: ignore[arg-type]
                    was in hooks_a.get(url, ()), tuple(merged), space.witness(merged[0])))
    return out


def behaviour(old: StageModel, new: StageModel,
              rename: Mapping[str, str] | None = None) -> tuple[Space, list[Region]]:
    """Every region where the two stages decide differently. `rename` maps new ruleset names
    to old ones for rulesets that were only renamed."""
    rename = rename or {}
    inverse = {v: k for k, v in rename.items()}
    space = joint_space(old, new)
    groups: dict[tuple[Decision, Decision], list[Box]] = {}
    for box, was, now in differences(space, old, new, rename):
        if now.ruleset in inverse:  # report the new side under its own name
            now = Decision(now.status, inverse[now.ruleset], now.action, now.choices)
        groups.setdefault((was, now), []).append(box)
    # Regions reachable with every metric computed come first and apart from those that
    # need a metric to fail: reviewers read the former, CI counts both.
    computed = space.computed
    regions = []
    for (was, now), boxes in groups.items():
        plain = coalesce([hit for b in boxes if (hit := intersect(b, computed)) is not None])
        failing = coalesce([piece for b in boxes for piece in subtract(b, computed)])
        for merged, failures in ((plain, False), (failing, True)):
            if merged:
                regions.append(Region(was, now, tuple(merged),
                                      space.witness(merged[0], not failures), failures))
    regions.sort(key=lambda r: (r.failures, r.before.status != Status.TRIGGERED,
                                r.before.ruleset or "", r.after.ruleset or "", r.after.status))
    return space, regions


def joint_space(old: StageModel, new: StageModel,
                extra: Sequence[RulesetSpec] = ()) -> Space:
    """One space for both versions, failures modelled. A metric declared differently on
    the two sides gets the wider declaration: the analysis must cover every value either
    version admits. `extra` rulesets only add thresholds (a property's region, say)."""
    catalog = {**old.catalog, **new.catalog}
    for name in set(old.catalog) & set(new.catalog):
        a, b = old.catalog[name], new.catalog[name]
        if a == b or a.type != b.type:
            continue
        lo = None if a.minimum is None or b.minimum is None else min(a.minimum, b.minimum)
        hi = None if a.maximum is None or b.maximum is None else max(a.maximum, b.maximum)
        labels = None if a.labels is None or b.labels is None else tuple(
            dict.fromkeys((*a.labels, *b.labels)))
        catalog[name] = b.model_copy(update={"minimum": lo, "maximum": hi, "labels": labels})
    return Space(catalog, (*old.rulesets, *new.rulesets, *extra), failures=True)


def _content(rs: RulesetSpec) -> object:
    return (rs.rules, rs.action)


def _renames(old: Sequence[RulesetSpec], new: Sequence[RulesetSpec]) -> dict[str, str]:
    """old name -> new name for rulesets that only changed their name."""
    old_names = {r.name for r in old}
    new_names = {r.name for r in new}
    gone = [r for r in old if r.name not in new_names]
    came = [r for r in new if r.name not in old_names]
    out: dict[str, str] = {}
    for o in gone:
        for n in came:
            if n.name not in out.values() and _content(n) == _content(o):
                out[o.name] = n.name
                break
    return out


def _seconds(t: float | None) -> str:
    return "none" if t is None else f"{t:g}s"


def _mode(mode: FailMode | None) -> str:
    return "as the stage" if mode is None else mode.value


def _budgets(old: Artifact, new: Artifact) -> list[Change]:
    """Metrics whose budget or scorer changed. A timeout or a scorer changes what a payload
    is decided on in ways no payload shows (how long scoring takes, where a value comes
    from): those count as behaviour. A fail mode's effect the analysis finds."""
    out: list[Change] = []
    was = {m.name: m for m in old.metrics}
    for m in new.metrics:
        o = was.get(m.name)
        if o is None:
            continue
        if o.timeout != m.timeout:
            out.append(Change("metric-budget", f"metric `{m.name}`: timeout "
                              f"{_seconds(o.timeout)} → {_seconds(m.timeout)}", effect=True))
        if o.fail_mode != m.fail_mode:
            out.append(Change("metric-budget", f"metric `{m.name}`: fail {_mode(o.fail_mode)} "
                              f"→ {_mode(m.fail_mode)}"))
        if o.scorer != m.scorer:
            out.append(Change("metric-scorer", f"metric `{m.name}`: scorer "
                              f"{o.scorer.url if o.scorer else 'none'} → "
                              f"{m.scorer.url if m.scorer else 'none'}", effect=True))
    return out


def _structural(old: Artifact, new: Artifact, renames: Mapping[str, str]) -> list[Change]:
    out: list[Change] = []
    os_, ns = old.stage, new.stage
    if os_.type != ns.type:
        out.append(Change("stage-type", f"stage type {os_.type.value} → {ns.type.value}",
                          effect=True))
    if os_.fail_mode != ns.fail_mode:
        out.append(Change("fail-mode", f"fail {os_.fail_mode.value} → fail {ns.fail_mode.value}"))
    if os_.description != ns.description:
        out.append(Change("description", "stage description changed"))
    out += _budgets(old, new)
    old_by = {r.name: (i, r) for i, r in enumerate(old.rulesets)}
    new_by = {r.name: (i, r) for i, r in enumerate(new.rulesets)}
    inverse = {v: k for k, v in renames.items()}
    for name, (i, _) in old_by.items():
        if name in renames:
            out.append(Change("ruleset-renamed", f"ruleset `{name}` renamed to "
                              f"`{renames[name]}`", ruleset=renames[name]))
        elif name not in new_by:
            out.append(Change("ruleset-removed", f"ruleset `{name}` removed (was priority "
                              f"{i + 1})", ruleset=name))
    for name, (j, _) in new_by.items():
        if name not in old_by and name not in inverse:
            out.append(Change("ruleset-added", f"ruleset `{name}` added at priority {j + 1}",
                              ruleset=name))
    # Priority: rulesets present on both sides (renames followed) whose relative order changed.
    old_order = [r.name for r in old.rulesets if r.name in new_by or r.name in renames]
    new_order = [inverse.get(r.name, r.name) for r in new.rulesets
                 if r.name in old_by or r.name in inverse]
    # Ranks among the rulesets both sides share: insertions and removals elsewhere shift
    # absolute priorities without reordering anything.
    new_rank = {name: k for k, name in enumerate(new_order)}
    for rank, name in enumerate(old_order):
        now = renames.get(name, name)
        if new_rank[name] != rank:
            out.append(Change("ruleset-moved", f"ruleset `{now}` moved from priority "
                              f"{old_by[name][0] + 1} to {new_by[now][0] + 1}", ruleset=now))
    catalog = {m.name: m for m in (*old.metrics, *new.metrics)}
    for name, (_, o) in old_by.items():
        if name in new_by:
            out.extend(_ruleset_changes(o, new_by[name][1], catalog))
    return out


def _rule_text(r: RuleSpec) -> str:
    return f"`{rule_source(r.metric, r.operator, r.target_value)}`"


def _direction(space: Space, old: Sequence[RuleSpec], new: Sequence[RuleSpec]) -> str | None:
    a, b = space.ruleset_box(old), space.ruleset_box(new)
    if a == b:
        return None
    if a is None:
        return TIGHTENED
    if b is None:
        return LOOSENED
    a_in_b = all(x & ~y == 0 for x, y in zip(a, b, strict=True))
    b_in_a = all(y & ~x == 0 for x, y in zip(a, b, strict=True))
    return TIGHTENED if a_in_b else LOOSENED if b_in_a else RESHAPED


def _ruleset_changes(o: RulesetSpec, n: RulesetSpec,
                     catalog: Mapping[str, MetricSpec]) -> list[Change]:
    out: list[Change] = []
    name = n.name
    if o.rules != n.rules:
        space = Space(catalog, [o, n])
        # Identical rules pair off; of the rest, rules on the same metric are "changed".
        left = list(o.rules)
        right = list(n.rules)
        for r in list(left):
            if r in right:
                left.remove(r)
                right.remove(r)
        for r in list(left):
            same = next((x for x in right if x.metric == r.metric), None)
            if same is not None:
                left.remove(r)
                right.remove(same)
                direction = _direction(space, [r], [same])
                out.append(Change("rule-changed", f"ruleset `{name}`: {_rule_text(r)} → "
                                  f"{_rule_text(same)}", name, direction))
        for r in left:
            out.append(Change("rule-removed", f"ruleset `{name}`: rule {_rule_text(r)} removed",
                              name, _direction(space, o.rules, [x for x in o.rules if x != r])))
        for r in right:
            out.append(Change("rule-added", f"ruleset `{name}`: rule {_rule_text(r)} added",
                              name, _direction(space, [x for x in n.rules if x != r] or n.rules,
                                               n.rules) if len(n.rules) > 1 else None))
        if sorted(map(repr, o.rules)) == sorted(map(repr, n.rules)):
            out.append(Change("rules-reordered", f"ruleset `{name}`: rules reordered", name))
        whole = _direction(space, o.rules, n.rules)
        if whole and len(out) > 1:
            out.append(Change("ruleset-direction", f"ruleset `{name}` overall: {whole}", name,
                              whole))
    oa, na = o.action, n.action
    if oa.type != na.type:
        out.append(Change("action-changed", f"ruleset `{name}`: action {oa.type.value} → "
                          f"{na.type.value}", name))
    elif oa.choices != na.choices:
        gone = [c for c in oa.choices or () if c not in (na.choices or ())]
        came = [c for c in na.choices or () if c not in (oa.choices or ())]
        parts = [f"- {c!r}" for c in gone] + [f"+ {c!r}" for c in came]
        out.append(Change("choices-changed", f"ruleset `{name}`: override choices changed"
                          + (f" ({'; '.join(parts)})" if parts else " (order)"), name))
    if oa.subscriptions != na.subscriptions:
        before = {(s.url, s.statuses) for s in oa.subscriptions}
        after = {(s.url, s.statuses) for s in na.subscriptions}
        parts = [f"- {u} on {', '.join(x.value for x in st)}" for u, st in sorted(before - after)]
        parts += [f"+ {u} on {', '.join(x.value for x in st)}" for u, st in sorted(after - before)]
        out.append(Change("subscriptions-changed", f"ruleset `{name}`: notifications changed ("
                          + "; ".join(parts or ["order"]) + ")", name))
    if o.description != n.description:
        out.append(Change("description", f"ruleset `{name}`: description changed", name))
    return out


def stages_of(artifacts: Iterable[Artifact]) -> dict[tuple[str, str], Artifact]:
    return {(a.project, a.stage.name): a for a in artifacts}
