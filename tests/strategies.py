"""Hypothesis strategies for the review tools' property tests: random well-typed stages
(as runtime values, and as source text with awkward layout and comments) and payloads
that hit every threshold, label, missing value and metric failure."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from stageguard.compiler.analysis import StageModel
from stageguard.compiler.unparse import policy_source
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.model import (
    Action,
    ActionType,
    FailMode,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    StageSpec,
    StageType,
    Status,
    Subscription,
)

CUSTOM = (
    MetricSpec(name="words", type=MetricType.NUMBER, minimum=0, maximum=1000),
    MetricSpec(name="drift", type=MetricType.NUMBER),
    MetricSpec(name="topic", type=MetricType.LABEL, labels=("billing", "shipping", "other")),
    MetricSpec(name="tags", type=MetricType.LABELS, labels=("a", "b", "c", "d")),
)
CATALOG = {m.name: m for m in (
    *(BUILTIN_METRICS[n] for n in ("output_toxicity", "input_toxicity", "output_pii",
                                    "output_tone", "prompt_injection")),
    *CUSTOM)}
# Few thresholds per metric, so rulesets overlap, nest and shadow each other often.
THRESHOLDS = {"output_toxicity": (0.0, 0.2, 0.5, 0.7, 1.0), "input_toxicity": (0.3, 0.8),
              "words": (0.0, 10.0, 100.0, 1000.0), "drift": (-1.0, 0.0, 2.5)}
CHOICES = ("no", "stop", "Sorry.")


@st.composite
def rules(draw: st.DrawFn, metric: MetricSpec) -> RuleSpec:
    name = metric.name
    if metric.type in (MetricType.SCORE, MetricType.NUMBER):
        op = draw(st.sampled_from([Operator.GT, Operator.LT, Operator.GTE, Operator.LTE,
                                   Operator.EQ, Operator.NEQ]))
        return RuleSpec(metric=name, operator=op,
                        target_value=draw(st.sampled_from(THRESHOLDS[name])))
    labels = metric.labels or ()
    if metric.type is MetricType.LABEL:
        op = draw(st.sampled_from([Operator.EQ, Operator.NEQ, Operator.ANY]))
        if op is Operator.ANY:
            return RuleSpec(metric=name, operator=op, target_value=tuple(draw(
                st.lists(st.sampled_from(labels[:4]), min_size=1, max_size=3, unique=True))))
        return RuleSpec(metric=name, operator=op, target_value=draw(st.sampled_from(labels[:4])))
    op = draw(st.sampled_from([Operator.CONTAINS, Operator.ANY, Operator.ALL, Operator.EMPTY,
                               Operator.NOT_EMPTY]))
    if op is Operator.CONTAINS:
        return RuleSpec(metric=name, operator=op, target_value=draw(st.sampled_from(labels[:5])))
    if op in (Operator.ANY, Operator.ALL):
        return RuleSpec(metric=name, operator=op, target_value=tuple(draw(
            st.lists(st.sampled_from(labels[:5]), min_size=1, max_size=3, unique=True))))
    return RuleSpec(metric=name, operator=op)


@st.composite
def rulesets(draw: st.DrawFn, name: str, metrics: list[MetricSpec]) -> RulesetSpec:
    chosen = draw(st.lists(st.sampled_from(metrics), min_size=1, max_size=3))
    if draw(st.booleans()):
        action = Action(type=ActionType.OVERRIDE, choices=tuple(draw(
            st.lists(st.sampled_from(CHOICES), min_size=1, max_size=2, unique=True))))
    else:
        action = Action(type=ActionType.PASSTHROUGH)
    if draw(st.integers(0, 5)) == 0:
        action = action.model_copy(update={"subscriptions": (
            Subscription(url="https://hooks.example.com/x"),)})
    return RulesetSpec(name=name, rules=tuple(draw(rules(m)) for m in chosen), action=action)


@st.composite
def stage_models(draw: st.DrawFn, max_rulesets: int = 6) -> StageModel:
    metrics = draw(st.lists(st.sampled_from(sorted(CATALOG.values(), key=lambda m: m.name)),
                            min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, max_rulesets))
    names = draw(st.permutations([f"r{i}" for i in range(n)]))
    rs = tuple(draw(rulesets(names[i], metrics)) for i in range(n))
    used = {r.metric for x in rs for r in x.rules}
    return StageModel("s", rs, {m: CATALOG[m] for m in used}, draw(st.booleans()))


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
    fail_closed = stage.fail_closed if draw(st.integers(0, 3)) else not stage.fail_closed
    return StageModel("s", tuple(rs), {m: CATALOG[m] for m in used}, fail_closed)


@st.composite
def stage_pairs(draw: st.DrawFn) -> tuple[StageModel, StageModel]:
    old = draw(stage_models())
    return old, edited(draw, old)


def _near(x: float) -> list[float]:
    return [x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf)]


@st.composite
def values(draw: st.DrawFn, metric: MetricSpec, failures: bool) -> object:
    kinds = ["value"] * 6 + ["missing"] + (["failure"] if failures else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        return None
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


@st.composite
def payloads(draw: st.DrawFn, catalog: dict[str, MetricSpec],
             failures: bool = False) -> dict[str, object]:
    return {name: draw(values(spec, failures)) for name, spec in sorted(catalog.items())}


def source_of(stage: StageModel) -> str:
    spec = StageSpec(name=stage.name, type=StageType.CENTRAL,
                     fail_mode=FailMode.CLOSED if stage.fail_closed else FailMode.OPEN)
    return policy_source("gen", spec, stage.rulesets,
                         sorted(stage.catalog.values(), key=lambda m: m.name))


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
