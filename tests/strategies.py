"""Hypothesis strategies for the review tools' property tests: random well-typed stages
(as runtime values, and as source text with awkward layout and comments) and payloads
that hit every threshold, label, missing value and metric failure."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from stageguard.compiler.analysis import StageModel
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.evaluate import fail_modes as mixed_modes
from stageguard.runtime.model import (
    Action,
    ActionType,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    Status,
)
from stageguard.testing.generate import (
    CATALOG,
    THRESHOLDS,
    rulesets,
    source_of,
)
from stageguard.testing.generate import stages as stage_models


def edited(draw: st.DrawFn, stage: StageModel) -> StageModel:
    """A plausible next version: rulesets reordered, dropped, added, retargeted."""
    metrics = sorted({CATALOG[m] for m in stage.catalog} | {draw(st.sampled_from(
        sorted(CATALOG.values(), key=lambda m: m.name)))}, key=lambda m: m.name)
    rs = list(stage.rulesets)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["swap", "drop", "add", "rule", "action"]))
        if kind == "swap" and len(rs) > 1:
            i, j = draw(st.integers(0, len(rs) - 1)), draw(st.integers(0, len(rs) - 1))
            rs[i], rs[j] = rs[j], rs[i]
        elif kind == "drop" and len(rs) > 1:
            rs.pop(draw(st.integers(0, len(rs) - 1)))
        elif kind == "add":
            rs.insert(draw(st.integers(0, len(rs))), draw(rulesets(f"n{len(rs)}", metrics)))
        elif kind == "rule":
            i = draw(st.integers(0, len(rs) - 1))
            fresh = draw(rulesets(rs[i].name, metrics))
            rs[i] = rs[i].model_copy(update={"rules": fresh.rules})
        elif kind == "action":
            i = draw(st.integers(0, len(rs) - 1))
            fresh = draw(rulesets(rs[i].name, metrics))
            rs[i] = rs[i].model_copy(update={"action": fresh.action})
    names = [r.name for r in rs]
    rs = [r for k, r in enumerate(rs) if r.name not in names[:k]]
    used = {r.metric for x in rs for r in x.rules}
    # Now and then the other mode (a stage with per-metric modes becomes fail closed).
    fail_closed = stage.fail_closed if draw(st.integers(0, 3)) else stage.fail_closed is not True
    if not isinstance(fail_closed, bool):
        fail_closed = mixed_modes(False, dict.fromkeys(fail_closed, True), used)
    return StageModel("s", tuple(rs), {m: CATALOG[m] for m in used}, fail_closed)


@st.composite
def stage_pairs(draw: st.DrawFn) -> tuple[StageModel, StageModel]:
    old = draw(stage_models())
    return old, edited(draw, old)


def _near(x: float) -> list[float]:
    return [x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf)]


@st.composite
def values(draw: st.DrawFn, metric: MetricSpec, failures: bool) -> object:
    # "outside": what the runtime accepts beyond the catalog's declaration (a score of 1.5,
    # NaN, an infinity, a label outside the vocabulary), which the analysis covers too.
    kinds = ["value"] * 6 + ["missing", "outside"] + (["failure"] if failures else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        return None
    if kind == "outside":
        return draw(_outside(metric))
    if kind == "failure":
        status = draw(st.sampled_from([Status.TIMEOUT, Status.FAILED, Status.ERROR]))
        return Failure(status, "drawn")
    if metric.type in (MetricType.SCORE, MetricType.NUMBER):
        lo = metric.minimum if metric.minimum is not None else -10.0
        hi = metric.maximum if metric.maximum is not None else 10.0
        candidates = [v for t in THRESHOLDS.get(metric.name, ()) for v in _near(t)
                      if lo <= v <= hi]
        if candidates and draw(st.booleans()):
            return draw(st.sampled_from(candidates))
        return draw(st.floats(lo, hi, allow_nan=False))
    labels = metric.labels or ("x", "y")
    if metric.type is MetricType.LABEL:
        return draw(st.sampled_from(labels))
    return tuple(draw(st.lists(st.sampled_from(labels), max_size=5)))


def _outside(metric: MetricSpec) -> st.SearchStrategy[object]:
    if metric.type in (MetricType.SCORE, MetricType.NUMBER):
        beyond: list[st.SearchStrategy[float]] = [
            st.sampled_from([math.nan, math.inf, -math.inf])]
        if metric.minimum is not None:
            beyond.append(st.floats(max_value=metric.minimum, exclude_max=True,
                                    allow_nan=False, allow_infinity=False))
        if metric.maximum is not None:
            beyond.append(st.floats(min_value=metric.maximum, exclude_min=True,
                                    allow_nan=False, allow_infinity=False))
        beyond += [st.sampled_from([t for t in THRESHOLDS.get(metric.name, ()) if not (
            (metric.minimum is None or t >= metric.minimum) and (
                metric.maximum is None or t <= metric.maximum))] or [math.nan])]
        return st.one_of(beyond)
    known = set(metric.labels or ())
    strange = st.text(min_size=1, max_size=6).filter(lambda t: t not in known)
    if metric.type is MetricType.LABEL:
        return strange
    inside = st.sampled_from(metric.labels or ("x", "y"))
    return st.lists(st.one_of(strange, inside), min_size=1, max_size=4).filter(
        lambda xs: not set(xs) <= known).map(tuple)


@st.composite
def payloads(draw: st.DrawFn, catalog: dict[str, MetricSpec],
             failures: bool = False) -> dict[str, object]:
    return {name: draw(values(spec, failures)) for name, spec in sorted(catalog.items())}


COMMENT_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                       max_size=20)


@st.composite
def awkward_sources(draw: st.DrawFn) -> str:
    """A generated policy re-laid out badly: statements joined or split across lines,
    random indentation and blank lines, and comments everywhere a line can end."""
    lines = source_of(draw(stage_models(max_rulesets=4))).splitlines()
    out: list[str] = []
    for line in lines:
        indent = draw(st.sampled_from(["", " ", "\t", "        "]))
        text = indent + line.strip()
        if draw(st.integers(0, 4)) == 0:
            text += "  #" + draw(COMMENT_TEXT)
        if draw(st.integers(0, 5)) == 0:
            out.append("# " + draw(COMMENT_TEXT))
        if draw(st.integers(0, 6)) == 0:
            out.append("")
        joiner = draw(st.sampled_from(["\n", "\n", "\n", " "]))
        if out and joiner == " " and "#" not in out[-1] and '"""' not in out[-1]:
            out[-1] += " " + text.strip()
        else:
            out.append(text)
    return "\n".join(out) + draw(st.sampled_from(["\n", "", "\n\n", "\n# trailing\n"]))


# ---- decider inputs: any operator with any target over loosely typed metrics -------------
# (model_construct skips validation on purpose: the deciders must be total even on rules the
# checker would refuse.)

METRICS = ["m_num", "m_label", "m_list", "m_other"]
LABELS = ["a", "b", "c"]

_scores = st.floats(-2, 2, allow_nan=False)
targets_for = {
    Operator.GT: _scores, Operator.LT: _scores, Operator.GTE: _scores, Operator.LTE: _scores,
    Operator.EQ: st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from(LABELS)),
    Operator.NEQ: st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from(LABELS)),
    Operator.CONTAINS: st.sampled_from(LABELS),
    Operator.ANY: st.lists(st.sampled_from(LABELS), max_size=3).map(tuple),
    Operator.ALL: st.lists(st.sampled_from(LABELS), max_size=3).map(tuple),
    Operator.EMPTY: st.none(), Operator.NOT_EMPTY: st.none(),
}


@st.composite
def rule_specs(draw: st.DrawFn) -> RuleSpec:
    op = draw(st.sampled_from(list(Operator)))
    return RuleSpec.model_construct(metric=draw(st.sampled_from(METRICS)), operator=op,
                                    target_value=draw(targets_for[op]))


@st.composite
def ruleset_lists(draw: st.DrawFn) -> list[RulesetSpec]:
    n = draw(st.integers(1, 8))
    return [RulesetSpec.model_construct(
        name=f"r{i}", description=None,
        rules=tuple(draw(st.lists(rule_specs(), min_size=1, max_size=4))),
        action=Action(type=ActionType.PASSTHROUGH)) for i in range(n)]


# A stage's failure modes: every metric open or closed, or (metrics declaring their own
# `fail`) exactly a set of them closed.
fail_modes = st.one_of(st.booleans(), st.frozensets(st.sampled_from(METRICS)))

metric_values = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
    st.booleans(), st.sampled_from([*LABELS, "", "A", 'é "quoted"\n\\', "\U0001f600"]),
    st.lists(st.sampled_from(LABELS), max_size=4).map(tuple),
    st.sampled_from([Failure(Status.FAILED, "boom"), Failure(Status.TIMEOUT, "slow"),
                     Failure(Status.ERROR, "none")]),
    st.just("absent"),
)
