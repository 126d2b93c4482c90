"""Well-typed random stages and policy files.

`stages()` draws `StageModel`s over a small catalog (built-in scores, PII lists and tone,
plus four custom metrics of every type) with few thresholds per metric, so that rulesets
overlap, nest, contradict and shadow each other often: the cases tools get wrong.
`policies()` draws the same as a policy file: source text, its syntax tree and artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from stageguard.compiler import ast
from stageguard.compiler.analysis import StageModel
from stageguard.compiler.parser import parse
from stageguard.compiler.pipeline import compile_text
from stageguard.compiler.unparse import policy_source
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.evaluate import FailClosed, fail_modes
from stageguard.runtime.model import (
    Action,
    ActionType,
    Artifact,
    FailMode,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    StageSpec,
    StageType,
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
def stages(draw: st.DrawFn, max_rulesets: int = 6) -> StageModel:
    metrics = draw(st.lists(st.sampled_from(sorted(CATALOG.values(), key=lambda m: m.name)),
                            min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, max_rulesets))
    names = draw(st.permutations([f"r{i}" for i in range(n)]))
    rs = tuple(draw(rulesets(names[i], metrics)) for i in range(n))
    used = {r.metric for x in rs for r in x.rules}
    mode = draw(st.sampled_from(["open", "closed", "per metric"]))
    fail_closed: FailClosed = mode == "closed"
    if mode == "per metric":  # metrics declaring their own `fail closed`
        closed = draw(st.frozensets(st.sampled_from(sorted(used))))
        fail_closed = fail_modes(False, dict.fromkeys(closed, True), used)
    return StageModel("s", rs, {m: CATALOG[m] for m in used}, fail_closed)


def source_of(stage: StageModel, project: str = "gen") -> str:
    """A policy file for a generated stage (unformatted; `stageguard fmt` lays it out)."""
    spec = StageSpec(name=stage.name, type=StageType.CENTRAL,
                     fail_mode=FailMode.CLOSED if stage.fail_closed is True else FailMode.OPEN)
    metrics = sorted(stage.catalog.values(), key=lambda m: m.name)
    if not isinstance(stage.fail_closed, bool):
        metrics = [m.model_copy(update={"fail_mode": FailMode.CLOSED})
                   if m.name in stage.fail_closed else m for m in metrics]
    return policy_source(project, spec, stage.rulesets, metrics)


@dataclass(frozen=True)
class GeneratedPolicy:
    source: str
    file: ast.PolicyFile
    artifact: Artifact
    stage: StageModel


@st.composite
def policies(draw: st.DrawFn, max_rulesets: int = 6) -> GeneratedPolicy:
    stage = draw(stages(max_rulesets))
    source = source_of(stage)
    parsed = parse(source, "generated.sg")
    compiled = compile_text(source, "generated.sg")
    assert parsed.file is not None and compiled.ok, compiled.diagnostics
    return GeneratedPolicy(source, parsed.file, compiled.artifacts[0].to_artifact(), stage)
