"""Findings of the exact analysis, as diagnostics.

`findings(stage)` states facts about one stage in terms of ruleset and rule indices, each
with the payload that shows it; `lint(compilation)` turns them into diagnostics pointing at
the source. The test suite re-evaluates every witness with the reference interpreter.

The analysis domain is the catalog's (values in the declared range or vocabulary, or
missing); metric failures are left to `diff`, which models them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stageguard.compiler.analysis import (
    AnalysisLimit,
    AnalysisStopped,
    Box,
    Decision,
    Space,
    Sparse,
    StageModel,
    Witness,
    check_time,
    cut_all,
    intersect,
    partition,
    quick_decide,
    sparse,
    time_limit,
)
from stageguard.compiler.artifacts import compile_stage
from stageguard.compiler.checker import CheckedStage
from stageguard.compiler.diagnostics import Diagnostic, Related, Severity, Span
from stageguard.compiler.pipeline import Compilation
from stageguard.compiler.unparse import rule_source

UNSATISFIABLE = "SG0701"
SHADOWED = "SG0702"
REDUNDANT = "SG0703"
ALWAYS_TRUE = "SG0704"
NEVER_TRUE = "SG0705"
OVERLAP = "SG0706"
TOO_LARGE = "SG0707"
STOPPED = "SG0708"


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    message: str
    ruleset: int
    rule: int | None = None
    # (ruleset, rule or None, message): the other places the finding is about.
    related: tuple[tuple[int, int | None, str], ...] = ()
    witness: Witness | None = None
    # What evaluating the witness shows (checked by the test suite).
    decision: Decision | None = None
    region: str | None = None
    help: str | None = None
    others: tuple[int, ...] = field(default=())  # rulesets the claim involves
    # The region's boxes (an overlap's), for its data and whole text: computed only when a
    # JSON report asks (`findings(full=True)`), since a large stage has thousands.
    boxes: tuple[dict[str, object], ...] = ()
    region_full: str | None = None


def _rule_text(stage: StageModel, i: int, k: int) -> str:
    r = stage.rulesets[i].rules[k]
    return rule_source(r.metric, r.operator, r.target_value)


def findings(stage: StageModel, full: bool = False) -> list[Finding]:
    """Every finding of one stage. `full`: each overlap's region whole, as data and text
    (the terminal shows three boxes of it)."""
    space = Space(stage.catalog, stage.rulesets)
    out: list[Finding] = []
    boxes: list[Box | None] = []
    for i, rs in enumerate(stage.rulesets):
        check_time()
        out.extend(_rule_findings(space, stage, i))
        box = space.ruleset_box(rs.rules)
        boxes.append(box)
        if box is None and not any(f.code == NEVER_TRUE and f.ruleset == i for f in out):
            out.append(_unsatisfiable(space, stage, i))
        elif box is not None:
            out.extend(_redundant(space, stage, i, box))
    shapes = [sparse(b, space.full) if b is not None else None for b in boxes]
    wins: dict[str, list[Box]] = {}
    won: dict[str, Decision] = {}  # what the partition decides where each ruleset wins
    for box, decision in partition(space, stage):
        if decision.ruleset is not None:
            wins.setdefault(decision.ruleset, []).append(box)
            won[decision.ruleset] = decision
    actions = [(rs.action.type, rs.action.choices) for rs in stage.rulesets]
    columns: dict[str, list[tuple[int, ...]]] = {}
    for j, rs in enumerate(stage.rulesets):
        check_time()
        box_j = boxes[j]
        if box_j is None:
            continue
        if rs.name not in wins:
            out.append(_shadowed(space, stage, j, box_j, shapes))
            continue
        for i in range(j):
            earlier = stage.rulesets[i]
            by = shapes[i]
            if by is None or actions[i] == actions[j] or not all(box_j[d] & m for d, m in by):
                continue
            region, count = _meeting(wins.get(earlier.name, []), columns, earlier.name,
                                     shapes[j] or [], box_j, None if full else 3)
            if count:
                w = space.witness(region[0])
                out.append(Finding(
                    OVERLAP, Severity.INFO,
                    f"ruleset `{rs.name}` overlaps `{earlier.name}`, which has a different "
                    f"action and wins there", j,
                    related=((i, None, f"`{earlier.name}` wins on the overlap"),),
                    witness=w, decision=won[earlier.name],
                    region=" or ".join(space.describe(b) for b in region[:3])
                    + (f" (and {count - 3} more regions)" if count > 3 else ""),
                    others=(i,),
                    boxes=tuple(space.box_data(b) for b in region) if full else (),
                    region_full=" or ".join(space.describe(b) for b in region)
                    if full else None))
    return out


def _meeting(boxes: list[Box], columns: dict[str, list[tuple[int, ...]]], key: str,
             by: Sparse, box: Box, limit: int | None) -> tuple[list[Box], int]:
    """The parts of `boxes` inside `box` (sparse: `by`), the first `limit` of them, and how
    many there are. Boxes are tested a dimension at a
    time over their columns (one mask per box), built once per key: a stage over many
    metrics has thousands of win boxes per ruleset, and `box` constrains few dimensions."""
    if not boxes:
        return [], 0
    cols = columns.get(key)
    if cols is None:
        cols = columns[key] = list(zip(*boxes, strict=True))
    picked: Sequence[int] = range(len(boxes))
    for d, m in by:
        col = cols[d]
        picked = [k for k in picked if col[k] & m]
    return [hit for k in picked[:limit] if (hit := intersect(boxes[k], box)) is not None], len(
        picked)


def _rule_findings(space: Space, stage: StageModel, i: int) -> list[Finding]:
    out = []
    for k, rule in enumerate(stage.rulesets[i].rules):
        dim = space.dims[space.index[rule.metric]]
        # Over the declared domain: a rule that only out-of-range values or NaN satisfy is
        # never true for the values the team said the metric takes.
        sat = dim.sat(rule) & dim.declared
        text = _rule_text(stage, i, k)
        if sat == 0:
            out.append(Finding(
                NEVER_TRUE, Severity.WARNING,
                f"`{text}` is never true for a value {_domain(dim)}", i, k,
                help="so the ruleset can never trigger; fix the threshold or remove the ruleset"))
        elif sat == dim.declared:
            w = Witness({rule.metric: dim.atoms[dim.pick(dim.declared)].value})
            out.append(Finding(
                ALWAYS_TRUE, Severity.WARNING,
                f"`{text}` is true for every value {_domain(dim)}", i, k, witness=w,
                help=f"it only requires `{rule.metric}` to be present; remove it or fix the "
                     "threshold"))
    return out


def _domain(dim: object) -> str:
    spec = dim.spec  # type: ignore[attr-defined]
    if spec is None:
        return "the metric can take"
    if spec.minimum is not None or spec.maximum is not None:
        lo = "" if spec.minimum is None else f"{spec.minimum:g}"
        hi = "" if spec.maximum is None else f"{spec.maximum:g}"
        return f"in `{spec.name}`'s declared range [{lo}, {hi}]"
    if spec.labels is not None:
        return f"from `{spec.name}`'s labels"
    return f"`{spec.name}` can take"


def _unsatisfiable(space: Space, stage: StageModel, i: int) -> Finding:
    """Name a smallest set of rules that contradict each other (on one metric: rules on
    different metrics never conflict)."""
    rules = stage.rulesets[i].rules
    for metric in dict.fromkeys(r.metric for r in rules):
        dim = space.dims[space.index[metric]]
        involved = [k for k, r in enumerate(rules) if r.metric == metric]
        mask = dim.full
        for k in involved:
            mask &= dim.sat(rules[k])
        if mask:
            continue
        for k in list(involved):  # drop rules the contradiction does not need
            rest = [x for x in involved if x != k]
            m = dim.full
            for x in rest:
                m &= dim.sat(rules[x])
            if not m:
                involved = rest
        first, *others = involved
        return Finding(
            UNSATISFIABLE, Severity.WARNING,
            f"ruleset `{stage.rulesets[i].name}` can never trigger: no value of `{metric}` "
            f"satisfies {' and '.join(f'`{_rule_text(stage, i, k)}`' for k in involved)}",
            i, first, related=tuple((i, k, "contradicts this") for k in others),
            help="these rules cannot all hold at once; did you mean to write two rulesets?")
    raise AssertionError("an empty box has an empty dimension")


def _redundant(space: Space, stage: StageModel, i: int, box: Box) -> list[Finding]:
    """A rule implied by the other rules on its metric. Later duplicates go first, so of two
    identical rules the first one stays."""
    rules = stage.rulesets[i].rules
    kept = set(range(len(rules)))
    out = []
    for k in reversed(range(len(rules))):
        metric = rules[k].metric
        dim = space.dims[space.index[metric]]
        others = [x for x in kept if x != k and rules[x].metric == metric]
        if not others:
            continue
        mask = dim.full
        for x in others:
            mask &= dim.sat(rules[x])
        if mask & ~dim.sat(rules[k]) == 0:
            kept.discard(k)
            w = space.witness(box)
            out.append(Finding(
                REDUNDANT, Severity.WARNING,
                f"`{_rule_text(stage, i, k)}` is implied by the other rules on `{metric}`",
                i, k, related=tuple((i, x, "implies it") for x in sorted(others)),
                witness=w, decision=quick_decide(stage, w.values),
                help="remove it: the ruleset triggers on exactly the same payloads"))
    return out[::-1]


def _volume(box: Box) -> int:
    """How many atom combinations a box holds: the measure the greedy cover maximises."""
    n = 1
    for mask in box:
        n *= mask.bit_count()
    return n


def _overlap(box: Box, volume: int, by: Sparse) -> int:
    """`_volume(box ∩ by)` for a sparse `by`, from the box's own volume: only the
    dimensions `by` constrains change it (each factor divides what is left exactly)."""
    for i, m in by:
        common = (box[i] & m).bit_count()
        if not common:
            return 0
        volume = volume // box[i].bit_count() * common
    return volume


def smallest_cover(box: Box, candidates: Sequence[tuple[int, Sparse]]) -> list[int]:
    """Rulesets whose boxes (sparse, in the box's space) together cover `box`, few: the
    first that covers alone if there is one, else greedily the one covering most of what
    is left, then pruned so that none can be dropped. Minimum set cover is NP-hard; this
    is small and minimal."""
    boxes = dict(candidates)
    for i, by in boxes.items():
        if all(box[d] & ~m == 0 for d, m in by):
            return [i]
    chosen: list[int] = []
    remaining = [(box, _volume(box))]
    while remaining:
        best, gain = None, 0
        for i, by in boxes.items():
            if i in chosen:
                continue
            covered = sum(_overlap(r, v, by) for r, v in remaining)
            if covered > gain:
                best, gain = i, covered
        if best is None:
            break  # not covered (cannot happen for a shadowed ruleset): name what helps
        chosen.append(best)
        remaining = [(x, _volume(x))
                     for x in cut_all([r for r, _ in remaining], boxes[best])[1]]
    for i in list(chosen):
        left = [box]
        for k in chosen:
            if k != i:
                left = cut_all(left, boxes[k])[1]
        if not left:
            chosen.remove(i)
    return sorted(chosen)


def _shadowed(space: Space, stage: StageModel, j: int, box: Box,
              shapes: list[Sparse | None]) -> Finding:
    # Any earlier rulesets whose boxes cover this one's make a true claim; the cover is
    # drawn from those that meet it at all.
    needed = smallest_cover(box, [(i, by) for i, by in enumerate(shapes[:j])
                                  if by is not None and all(box[d] & m for d, m in by)])
    w = space.witness(box)
    rs = stage.rulesets[j]
    names = ", ".join(f"`{stage.rulesets[i].name}`" for i in needed)
    hooks = " (its webhooks still fire: every ruleset is evaluated)" \
        if rs.action.subscriptions else ""
    return Finding(
        SHADOWED, Severity.WARNING,
        f"ruleset `{rs.name}` is shadowed: every payload that triggers it triggers "
        f"{names} first, so its action is never returned{hooks}", j,
        related=tuple((i, None, "triggers first") for i in needed),
        witness=w, decision=quick_decide(stage, w.values), others=tuple(needed),
        help="move it above the rulesets that cover it, narrow them, or remove it")


# ---- as diagnostics ---------------------------------------------------------------------------


def _spans(stage: CheckedStage, i: int, k: int | None) -> Span:
    rs = stage.rulesets[i]
    return rs.rules[k].span if k is not None else rs.span


def diagnostics_for(stage: CheckedStage, model: StageModel,
                    full: bool = False) -> list[Diagnostic]:
    try:
        found = findings(model, full)
    except AnalysisLimit as exc:
        return [Diagnostic(TOO_LARGE, Severity.WARNING,
                           f"stage `{stage.name}` is too large to analyse exactly: {exc}",
                           stage.span)]
    out = []
    for f in found:
        notes = []
        data: dict[str, object] = {"stage": stage.name,
                                   "ruleset": stage.rulesets[f.ruleset].name}
        if f.region:
            notes.append(f"region: {f.region}")
            data["region"] = f.region_full or f.region  # whole in JSON
        if f.boxes:
            data["region_boxes"] = list(f.boxes)
        if f.witness is not None:
            shown = f"witness: {f.witness.text()}"
            if f.decision is not None:
                shown += f" → {f.decision.text()}"
            notes.append(shown)
            data["witness"] = f.witness.to_data()
            if f.decision is not None:
                data["decision"] = f.decision.to_data()
        out.append(Diagnostic(
            f.code, f.severity, f.message, _spans(stage, f.ruleset, f.rule),
            related=tuple(Related(_spans(stage, i, k), msg) for i, k, msg in f.related),
            help=f.help, notes=tuple(notes), data=data))
    return out


def lint(compilation: Compilation,
         on_stage: Callable[[int, int, str], None] | None = None,
         timeout: float | None = None, full: bool = False) -> list[Diagnostic]:
    """Every stage's findings; `on_stage(i, n, name)` is told before each (for progress).
    `full`: overlap regions whole in each finding's data (for JSON; slower on big stages).
    With `timeout` (seconds), the analysis stops there: the findings so far are returned,
    with one SG0708 naming the stages not (fully) analysed."""
    out: list[Diagnostic] = []
    pairs = [*zip(compilation.stages, compilation.artifacts, strict=True),
             *((c, compile_stage(c)) for c in compilation.rulesets)]  # rulesets files
    n = len(pairs)
    with time_limit(timeout):
        for i, (checked, doc) in enumerate(pairs, 1):
            if on_stage is not None:
                on_stage(i, n, checked.name)
            try:
                out.extend(diagnostics_for(checked, StageModel.of(doc.to_artifact()), full))
            except AnalysisStopped:
                rest = [c.name for c, _ in pairs[i - 1:]]
                more = f" and {len(rest) - 1} more" if len(rest) > 1 else ""
                out.append(Diagnostic(
                    STOPPED, Severity.WARNING,
                    f"the analysis stopped at its time limit ({timeout:g} s): stage "
                    f"`{checked.name}`{more} not analysed, so no finding is claimed for "
                    f"{'them' if more else 'it'}", checked.span,
                    help="raise --timeout, or split the stage; the findings above are "
                    "exact", data={"not_analysed": rest}))
                break
    return out
