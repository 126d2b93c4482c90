"""Deciding a stage: a plain reference interpreter and a compiled fast path.

Both take the stage's rulesets (validated artifact values) and a way to get metric values,
and return one status per ruleset, in priority order. The reference interpreter is written
to be read against docs/semantics.md and galileo-core's `Rule.evaluate`; the fast path generates
one Python function per stage from the same values. A property test proves they agree.

Metric values reach both already normalised (see `normalise_value`): numbers (bool counts,
as in galileo-core), strings, tuples of labels, None for missing, or a `Failure`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from stageguard.runtime.model import Artifact, FailMode, Operator, RulesetSpec, RuleSpec, Status

Value = float | int | bool | str | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A metric that could not be had: its rules cannot be decided."""

    status: Status  # FAILED (scorer raised), TIMEOUT, or ERROR (no source for the metric)
    message: str


class InvalidValue(ValueError):
    pass


# What a failed metric means for its rules: True, every metric fails closed (the rule
# counts as holding); False, every metric fails open (the rule ends its ruleset with the
# failure's status); a set, exactly those metrics fail closed (a stage whose metrics declare
# their own `fail` mode, see `fail_modes`).
FailClosed = bool | Set[str]


def closes(fail_closed: FailClosed, metric: str) -> bool:
    """Whether a failure of `metric` counts as its rules holding."""
    if fail_closed is True or fail_closed is False:
        return fail_closed
    return metric in fail_closed


def fail_modes(stage_closed: bool, metric_modes: Mapping[str, bool],
               metrics: Iterable[str]) -> FailClosed:
    """The stage's `FailClosed` for the metrics its rules use: the stage's own mode, except
    where a metric declares its own (`metric_modes`: name -> fails closed)."""
    used = set(metrics)
    closed = {m for m in used if metric_modes.get(m, stage_closed)}
    if not closed:
        return False
    if closed == used:
        return True
    return frozenset(closed)


def normalise_value(value: object) -> Value:
    """Accept what a metric may be (docs/semantics.md): a number, a label, a list of labels, or
    missing. Lists become tuples. Anything else is refused, so evaluation stays total."""
    kind = value.__class__
    if value is None or kind is str or kind is float or kind is int or kind is bool:
        return value  # type: ignore[return-value]
    if kind is list or kind is tuple:  # (before the subclass checks: no scalar is a list)
        labels: tuple[object, ...] = tuple(value)  # type: ignore[arg-type]
        for label in labels:
            if label.__class__ is not str:
                break
        else:  # every label is a str
            return labels  # type: ignore[return-value]
    # Subclasses (numpy.float64, str enums, ...) become the plain type: the fast path tests
    # exact classes.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return tuple(str(v) for v in value)
        raise InvalidValue("a list metric holds strings (labels) only")
    raise InvalidValue(f"{type(value).__name__} is not a metric value "
                       "(number, label, list of labels or null)")


def stage_fail_closed(artifact: Artifact) -> FailClosed:
    """`fail_modes` of an artifact: its stage's mode, its metrics' own ones."""
    stage_closed = artifact.stage.fail_mode is FailMode.CLOSED
    own = {m.name: m.fail_mode is FailMode.CLOSED for m in artifact.metrics
           if m.fail_mode is not None}
    if not own:
        return stage_closed
    return fail_modes(stage_closed, own, (r.metric for rs in artifact.rulesets
                                          for r in rs.rules))


# ---- the reference interpreter ----------------------------------------------------------------


def rule_holds(operator: Operator, target: object, value: Value) -> bool:
    """docs/semantics.md's truth table; anything not listed is false, never an exception."""
    if value is None:
        return False
    if isinstance(value, int | float):
        if not isinstance(target, int | float) or isinstance(target, bool):
            return False
        if operator is Operator.GT:
            return value > target
        if operator is Operator.LT:
            return value < target
        if operator is Operator.GTE:
            return value >= target
        if operator is Operator.LTE:
            return value <= target
        if operator is Operator.EQ:
            return value == target
        if operator is Operator.NEQ:
            return value != target
        return False
    if isinstance(value, str):
        if isinstance(target, str):
            if operator is Operator.EQ:
                return value == target
            if operator is Operator.NEQ:
                return value != target
        elif isinstance(target, tuple | list) and operator is Operator.ANY:
            return any(t == value for t in target)
        return False
    if isinstance(value, tuple):
        if isinstance(target, str):
            return operator is Operator.CONTAINS and target in value
        if isinstance(target, tuple | list):
            if operator is Operator.ALL:
                return all(t in value for t in target)
            if operator is Operator.ANY:
                return any(t in value for t in target)
            return False
        if target is None:
            if operator is Operator.EMPTY:
                return len(value) == 0
            if operator is Operator.NOT_EMPTY:
                return len(value) > 0
    return False


Getter = Callable[[str], "Value | Failure"]
# What a decision computed, one entry per ruleset in priority order, saying its status and
# where it stopped (so per-rule results are a lookup, never a second evaluation):
#   Status.TRIGGERED      every rule held (or, fail closed, failed);
#   int j                 not triggered: rule j was the first false rule;
#   (Status, int j)       rule j's metric failed (timeout, failed or error), fail open.
# Rules before the stop held, the rule at the stop ended the ruleset, later rules were not
# reached. This shape costs the compiled deciders nothing over statuses alone: each entry is
# one constant, and `Status.TRIGGERED in outcomes` still finds the winner in C.
Outcome = Status | int | tuple[Status, int]
Outcomes = tuple[Outcome, ...]


def outcome_status(outcome: Outcome) -> Status:
    if isinstance(outcome, int):
        return Status.NOT_TRIGGERED
    if isinstance(outcome, tuple):
        return outcome[0]
    return outcome


def outcome_stop(outcome: Outcome, rules: int) -> int:
    """The index of the rule that ended the ruleset; `rules` (its length) when it triggered."""
    if isinstance(outcome, int):
        return outcome
    if isinstance(outcome, tuple):
        return outcome[1]
    return rules


def statuses_of(outcomes: Outcomes) -> tuple[Status, ...]:
    return tuple(outcome_status(o) for o in outcomes)


def outcomes_status(outcomes: Outcomes) -> Status:
    """`stage_status` of the outcomes' statuses, without decoding each one: a large stage
    where nothing triggered or failed (the usual case) is answered by scans in C."""
    if Status.TRIGGERED in outcomes:
        return Status.TRIGGERED
    if tuple not in set(map(type, outcomes)):
        return Status.NOT_TRIGGERED
    return stage_status(statuses_of(outcomes))


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What happened to one rule: evaluated (holds True/False), failed, or never reached."""

    evaluated: bool
    holds: bool
    failure: Failure | None = None


NOT_REACHED = RuleOutcome(False, False)


def ruleset_outcome(rules: Sequence[RuleSpec], get: Getter,
                    fail_closed: FailClosed) -> tuple[Status, tuple[RuleOutcome, ...]]:
    """Rules are taken in order (ours): the first false rule ends the ruleset
    `not_triggered`; a rule whose metric failed ends it with that failure's status (fail open)
    or counts as holding (fail closed). Later rules are not reached, so their metrics are
    never computed for this ruleset."""
    outcomes: list[RuleOutcome] = []
    for i, rule in enumerate(rules):
        value = get(rule.metric)
        if isinstance(value, Failure):
            closed = closes(fail_closed, rule.metric)
            outcomes.append(RuleOutcome(True, closed, value))
            if not closed:
                return value.status, (*outcomes, *[NOT_REACHED] * (len(rules) - i - 1))
            continue
        holds = rule_holds(rule.operator, rule.target_value, value)
        outcomes.append(RuleOutcome(True, holds))
        if not holds:
            return Status.NOT_TRIGGERED, (*outcomes, *[NOT_REACHED] * (len(rules) - i - 1))
    return Status.TRIGGERED, tuple(outcomes)


def reference_decide(rulesets: Sequence[RulesetSpec], get: Getter,
                     fail_closed: FailClosed) -> tuple[Status, ...]:
    return tuple(ruleset_outcome(rs.rules, get, fail_closed)[0] for rs in rulesets)


def reference_outcomes(rulesets: Sequence[RulesetSpec], get: Getter,
                       fail_closed: FailClosed) -> Outcomes:
    """The reference interpreter's answer in the compiled deciders' shape (`Outcome`)."""
    out: list[Outcome] = []
    for rs in rulesets:
        status, outcomes = ruleset_outcome(rs.rules, get, fail_closed)
        if status is Status.TRIGGERED:
            out.append(status)
            continue
        stop = sum(1 for o in outcomes if o.evaluated) - 1
        out.append(stop if status is Status.NOT_TRIGGERED else (status, stop))
    return tuple(out)


_PRECEDENCE = (Status.TIMEOUT, Status.FAILED, Status.ERROR)


def stage_status(statuses: Sequence[Status]) -> Status:
    """docs/semantics.md rule 6 (ours): triggered if any ruleset triggered; else timeout, failed or
    error if any ruleset ended so, in that order; else not_triggered."""
    if Status.TRIGGERED in statuses:
        return Status.TRIGGERED
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    return Status.NOT_TRIGGERED


# ---- the compiled fast path ---------------------------------------------------------------------

_MISSING = object()
Decider = Callable[[dict[str, object], Callable[[str], object]], Outcomes]

# Rulesets per generated function: one function for ordinary stages; larger ones are split,
# so no code object grows unwieldy to compile and a stage compiled in the background
# (served.py) holds the interpreter for a few milliseconds at a time.
CHUNK = 128


def _condition(rule: RuleSpec, k: Callable[[object], str], v: str, c: str) -> str:
    """A Python expression equal to `rule_holds(rule.operator, rule.target_value, value)`,
    where the local `v` holds the value (known not to be a Failure) and `c` its class."""
    op, target = rule.operator, rule.target_value
    number = f"({c} is float or {c} is int or {c} is bool)"
    if isinstance(target, float):
        py = {Operator.GT: ">", Operator.LT: "<", Operator.GTE: ">=", Operator.LTE: "<=",
              Operator.EQ: "==", Operator.NEQ: "!="}.get(op)
        return f"({number} and {v} {py} {k(target)})" if py else "False"
    if isinstance(target, str):
        if op is Operator.EQ:
            return f"({c} is str and {v} == {k(target)})"
        if op is Operator.NEQ:
            return f"({c} is str and {v} != {k(target)})"
        if op is Operator.CONTAINS:
            return f"({c} is tuple and {k(target)} in {v})"
        return "False"
    if isinstance(target, tuple):
        labels = k(frozenset(target))
        if op is Operator.ANY:
            return (f"(({c} is str and {v} in {labels}) or "
                    f"({c} is tuple and not {labels}.isdisjoint({v})))")
        if op is Operator.ALL:
            return f"({c} is tuple and {labels}.issubset({v}))"
        return "False"
    if op is Operator.EMPTY:
        return f"({c} is tuple and not {v})"
    if op is Operator.NOT_EMPTY:
        return f"({c} is tuple and len({v}) > 0)"
    return "False"


# Generated code costs ~0.1 ms per ruleset to compile; above this size a stage gets the
# closure evaluator instead, which builds in microseconds per rule (benchmarks/RESULTS.md).
CODEGEN_LIMIT = 256


def compile_decider(rulesets: Sequence[RulesetSpec], fail_closed: FailClosed,
                    codegen: bool | None = None, chunk: int = CHUNK) -> Decider:
    """`decide(values, resolve) -> outcomes` (see `Outcome`): `values` maps metric names to
    normalised values or Failures (and is filled by `resolve(name)` for metrics not yet known,
    which must store and return the value). Generated code for ordinary stages
    (`codegen=None` picks by size), prebuilt closures for very large ones; both equal the
    reference interpreter."""
    if not rulesets:
        return lambda values, resolve: ()
    if codegen is False or (codegen is None and len(rulesets) > CODEGEN_LIMIT):
        return _closure_decider(rulesets, fail_closed)
    return _generated_decider(rulesets, fail_closed, chunk)


class _Codegen:
    """What both generated deciders share: artifact values bound by reference (`K0`, `K1`,
    ... in the namespace, never written into the source) and one local slot per metric."""

    def __init__(self, rulesets: Sequence[RulesetSpec]) -> None:
        self.consts: list[object] = []
        self._index: dict[tuple[type, object], str] = {}
        self.slots: dict[str, int] = {}
        for rs in rulesets:
            for rule in rs.rules:
                self.slots.setdefault(rule.metric, len(self.slots))

    def k(self, value: object) -> str:
        key = (type(value), value)
        if key not in self._index:
            self._index[key] = f"K{len(self.consts)}"
            self.consts.append(value)
        return self._index[key]

    def build(self, lines: list[str], name: str) -> Callable[..., object]:
        namespace: dict[str, object] = {f"K{j}": c for j, c in enumerate(self.consts)}
        namespace.update(M=_MISSING, F=Failure, T=Status.TRIGGERED, NT=Status.NOT_TRIGGERED)
        exec(compile("\n".join(lines), "<stageguard decider>", "exec"), namespace)
        return namespace[name]  # type: ignore[return-value]


Precomputed = Callable[[dict[str, object]], "Outcomes | None"]


def compile_precomputed(rulesets: Sequence[RulesetSpec], *, limit: int | None = CODEGEN_LIMIT,
                        chunk: int = CHUNK) -> Precomputed | None:
    """For the common case where the payload carries every metric the stage uses: such
    values are never Failures (only scorer resolution makes those), so each ruleset is one
    expression over values fetched once. Returns None from the call when some metric is
    missing (the caller then takes the general path), and None instead of a function for
    stages above `limit` rulesets (None: any size; the runtime compiles those in the
    background)."""
    if not rulesets or (limit is not None and len(rulesets) > limit):
        return None
    if len(rulesets) <= chunk:
        return _precomputed_chunk(rulesets, 0, guard=True)
    parts = [_precomputed_chunk(rulesets[i:i + chunk], i // chunk)
             for i in range(0, len(rulesets), chunk)]
    return _joined(parts, "values", "decide_precomputed", missing=True)  # type: ignore[return-value]


def _joined(parts: Sequence[Callable[..., Outcomes]], args: str, name: str,
            missing: bool = False) -> Callable[..., object]:
    """One function returning the concatenated outcomes of `parts`, built in one tuple
    (adding tuples chunk by chunk would copy the outcomes once per chunk)."""
    namespace: dict[str, object] = {f"P{i}": p for i, p in enumerate(parts)}
    call = ", ".join(f"*P{i}({args})" for i in range(len(parts)))
    lines = [f"def {name}({args}):"]
    if missing:
        lines += ["    try:", f"        return ({call},)", "    except KeyError:",
                  "        return None"]
    else:
        lines.append(f"    return ({call},)")
    exec(compile("\n".join(lines), "<stageguard decider>", "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


def _precomputed_chunk(rulesets: Sequence[RulesetSpec], n: int,
                       guard: bool = False) -> Callable[..., Outcomes]:
    """A chunk's outcomes; raises KeyError when the payload lacks one of its metrics (or,
    `guard`ed, returns None)."""
    gen = _Codegen(rulesets)
    k, slots = gen.k, gen.slots
    lines = [f"def chunk{n}(values):"]
    if guard:
        lines.append("    try:")
        lines += [f"        m{i} = values[{k(metric)}]" for metric, i in slots.items()]
        lines += ["    except KeyError:", "        return None"]
    else:
        lines += [f"    m{i} = values[{k(metric)}]" for metric, i in slots.items()]
    lines += [f"    c{i} = m{i}.__class__" for i in slots.values()]
    # One expression per ruleset: `((T if c2 else 1) if c1 else 0)` is as cheap as
    # `T if (c1 and c2) else NT` and also says which rule was false. The nesting grows with
    # the rules, so a stage with a long ruleset gets flat statements instead (the compiler
    # refuses deeply nested expressions).
    conds = [[_condition(r, k, f"m{slots[r.metric]}", f"c{slots[r.metric]}") for r in rs.rules]
             for rs in rulesets]
    if max(len(c) for c in conds) <= _NESTING:
        exprs = []
        for ruleset_conds in conds:
            expr = "T"
            for j in range(len(ruleset_conds) - 1, -1, -1):
                expr = f"({expr} if {ruleset_conds[j]} else {j})"
            exprs.append(f"        {expr},")
        lines += ["    return (", *exprs, "    )"]
    else:
        for i, ruleset_conds in enumerate(conds):
            lines.append("    while True:")  # compiles to no loop at all
            lines += [f"        if not {cond}: s{i} = {j}; break"
                      for j, cond in enumerate(ruleset_conds)]
            lines.append(f"        s{i} = T; break")
        lines.append("    return (" + "".join(f"s{i}, " for i in range(len(conds))) + ")")
    return gen.build(lines, f"chunk{n}")  # type: ignore[return-value]


_NESTING = 32


_NUMBER_CLASSES = frozenset({float, int, bool})
_COMPARE = {Operator.GT: operator.gt, Operator.LT: operator.lt, Operator.GTE: operator.ge,
            Operator.LTE: operator.le, Operator.EQ: operator.eq, Operator.NEQ: operator.ne}


def rule_predicate(rule: RuleSpec) -> Callable[[object], bool]:
    """A closure equal to `rule_holds(rule.operator, rule.target_value, v)` for non-Failure
    values."""
    op, t = rule.operator, rule.target_value
    num = _NUMBER_CLASSES
    if isinstance(t, float):
        compare = _COMPARE.get(op)
        if compare is None:
            return lambda v: False
        return lambda v: v.__class__ in num and compare(v, t)  # type: ignore[arg-type]
    if isinstance(t, str):
        if op is Operator.EQ:
            return lambda v: v.__class__ is str and v == t
        if op is Operator.NEQ:
            return lambda v: v.__class__ is str and v != t
        if op is Operator.CONTAINS:
            return lambda v: v.__class__ is tuple and t in v
        return lambda v: False
    if isinstance(t, tuple):
        labels = frozenset(t)
        if op is Operator.ANY:
            return lambda v: ((v.__class__ is str and v in labels)
                              or (v.__class__ is tuple and not labels.isdisjoint(v)))
        if op is Operator.ALL:
            return lambda v: v.__class__ is tuple and labels.issubset(v)
        return lambda v: False
    if op is Operator.EMPTY:
        return lambda v: v.__class__ is tuple and not v
    if op is Operator.NOT_EMPTY:
        return lambda v: v.__class__ is tuple and len(v) > 0
    return lambda v: False


def _closure_decider(rulesets: Sequence[RulesetSpec], fail_closed: FailClosed) -> Decider:
    # Rules with the same operator and target share one predicate: large stages repeat
    # thresholds and label lists, and building a closure is the bulk of the work here.
    shared: dict[tuple[Operator, type, object], Callable[[object], bool]] = {}

    def predicate(rule: RuleSpec) -> Callable[[object], bool]:
        key = (rule.operator, type(rule.target_value), rule.target_value)
        found = shared.get(key)
        if found is None:
            found = shared[key] = rule_predicate(rule)
        return found

    plan = tuple(tuple((j, rule.metric, predicate(rule), closes(fail_closed, rule.metric))
                       for j, rule in enumerate(rs.rules))
                 for rs in rulesets)
    T = Status.TRIGGERED

    def decide(values: dict[str, object], resolve: Callable[[str], object]) -> Outcomes:
        out: list[Outcome] = []
        append = out.append
        for rules in plan:
            outcome: Outcome = T
            for j, metric, holds, closed in rules:
                v = values[metric] if metric in values else resolve(metric)
                if v.__class__ is Failure:
                    if closed:
                        continue
                    outcome = (v.status, j)
                    break
                if not holds(v):
                    outcome = j
                    break
            append(outcome)
        return tuple(out)

    return decide


def _generated_decider(rulesets: Sequence[RulesetSpec], fail_closed: FailClosed,
                       chunk: int = CHUNK) -> Decider:
    parts = [_compile_chunk(rulesets[i:i + chunk], fail_closed)
             for i in range(0, len(rulesets), chunk)]
    if len(parts) == 1:
        return parts[0]
    return _joined(parts, "values, resolve", "decide")  # type: ignore[return-value]


def _compile_chunk(rulesets: Sequence[RulesetSpec], fail_closed: FailClosed) -> Decider:
    # Each distinct metric lives in a local (`mN`, its class in `cN`), fetched on first use:
    # a metric shared by several rules costs one lookup, and a metric no reached rule needs
    # is never resolved.
    gen = _Codegen(rulesets)
    k, slots = gen.k, gen.slots
    lines = ["def decide(values, resolve):"]
    lines.append("    " + " = ".join(f"m{n}" for n in slots.values()) + " = M")
    # A ruleset's first rule is always reached, and reaching rule j means rules before it in
    # the same ruleset were; metrics used there are certainly fetched, so later uses skip
    # the "not fetched yet" test.
    fetched: set[int] = set()
    for i, rs in enumerate(rulesets):
        lines.append("    while True:")
        fetched_here = set(fetched)
        for j, rule in enumerate(rs.rules):
            n = slots[rule.metric]
            v, c = f"m{n}", f"c{n}"
            if n not in fetched_here:
                lines.append(f"        if {v} is M:")
                # `in` + subscript: both specialised by CPython, unlike a bound .get call.
                name = k(rule.metric)
                lines.append(f"            {v} = values[{name}] if {name} in values "
                             f"else resolve({name})")
                lines.append(f"            {c} = {v}.__class__")
                fetched_here.add(n)
            cond = _condition(rule, k, v, c)
            # A Failure's class satisfies no condition, so failures are told apart only on
            # the (rarer) false branch.
            lines.append(f"        if not {cond}:")
            if closes(fail_closed, rule.metric):
                lines.append(f"            if {c} is not F:")
                lines.append(f"                s{i} = {j}; break")
            else:
                lines.append(f"            s{i} = ({v}.status, {j}) if {c} is F else {j}; break")
        lines.append(f"        s{i} = T; break")
        fetched.add(slots[rs.rules[0].metric])
    lines.append("    return (" + "".join(f"s{i}, " for i in range(len(rulesets))) + ")")
    return gen.build(lines, "decide")  # type: ignore[return-value]


def values_getter(values: Mapping[str, object]) -> Getter:
    """A reference-interpreter getter over already-resolved values (missing ⇒ error)."""

    def get(name: str) -> Value | Failure:
        if name in values:
            return values[name]  # type: ignore[return-value]
        return Failure(Status.ERROR, f"no value for metric `{name}`")

    return get
