"""Deciding a stage: a plain reference interpreter and a compiled fast path.

Both take the stage's rulesets (validated artifact values) and a way to get metric values,
and return one status per ruleset, in priority order. The reference interpreter is written
to be read against SEMANTICS.md and galileo-core's `Rule.evaluate`; the fast path generates
one Python function per stage from the same values. A property test proves they agree.

Metric values reach both already normalised (see `normalise_value`): numbers (bool counts,
as in galileo-core), strings, tuples of labels, None for missing, or a `Failure`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stageguard.runtime.model import Operator, RulesetSpec, RuleSpec, Status

Value = float | int | bool | str | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A metric that could not be had: its rules cannot be decided."""

    status: Status  # FAILED (scorer raised), TIMEOUT, or ERROR (no source for the metric)
    message: str


class InvalidValue(ValueError):
    pass


def normalise_value(value: object) -> Value:
    """Accept what a metric may be (SEMANTICS.md): a number, a label, a list of labels, or
    missing. Lists become tuples. Anything else is refused, so evaluation stays total."""
    kind = value.__class__
    if value is None or kind is str or kind is float or kind is int or kind is bool:
        return value  # type: ignore[return-value]
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


# ---- the reference interpreter ----------------------------------------------------------------


def rule_holds(operator: Operator, target: object, value: Value) -> bool:
    """SEMANTICS.md's truth table; anything not listed is false, never an exception."""
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


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What happened to one rule: evaluated (holds True/False), failed, or never reached."""

    evaluated: bool
    holds: bool
    failure: Failure | None = None


NOT_REACHED = RuleOutcome(False, False)


def ruleset_outcome(rules: Sequence[RuleSpec], get: Getter,
                    fail_closed: bool) -> tuple[Status, tuple[RuleOutcome, ...]]:
    """Rules are taken in order (ours): the first false rule ends the ruleset
    `not_triggered`; a rule whose metric failed ends it with that failure's status (fail open)
    or counts as holding (fail closed). Later rules are not reached, so their metrics are
    never computed for this ruleset."""
    outcomes: list[RuleOutcome] = []
    for i, rule in enumerate(rules):
        value = get(rule.metric)
        if isinstance(value, Failure):
            outcomes.append(RuleOutcome(True, fail_closed, value))
            if not fail_closed:
                return value.status, (*outcomes, *[NOT_REACHED] * (len(rules) - i - 1))
            continue
        holds = rule_holds(rule.operator, rule.target_value, value)
        outcomes.append(RuleOutcome(True, holds))
        if not holds:
            return Status.NOT_TRIGGERED, (*outcomes, *[NOT_REACHED] * (len(rules) - i - 1))
    return Status.TRIGGERED, tuple(outcomes)


def reference_decide(rulesets: Sequence[RulesetSpec], get: Getter,
                     fail_closed: bool) -> tuple[Status, ...]:
    return tuple(ruleset_outcome(rs.rules, get, fail_closed)[0] for rs in rulesets)


_PRECEDENCE = (Status.TIMEOUT, Status.FAILED, Status.ERROR)


def stage_status(statuses: Sequence[Status]) -> Status:
    """SEMANTICS.md rule 6 (ours): triggered if any ruleset triggered; else timeout, failed or
    error if any ruleset ended so, in that order; else not_triggered."""
    if Status.TRIGGERED in statuses:
        return Status.TRIGGERED
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    return Status.NOT_TRIGGERED


# ---- the compiled fast path ---------------------------------------------------------------------

_MISSING = object()
Decider = Callable[[dict[str, object], Callable[[str], object]], tuple[Status, ...]]

# Rulesets per generated function: one function for ordinary stages; very large stages are
# split so no single code object grows unwieldy to compile.
_CHUNK = 512


def _condition(rule: RuleSpec, k: Callable[[object], str]) -> str:
    """A Python expression over `v` (already known not to be a Failure) equal to
    `rule_holds(rule.operator, rule.target_value, v)`."""
    op, target = rule.operator, rule.target_value
    number = "(v.__class__ is float or v.__class__ is int or v.__class__ is bool)"
    if isinstance(target, float):
        py = {Operator.GT: ">", Operator.LT: "<", Operator.GTE: ">=", Operator.LTE: "<=",
              Operator.EQ: "==", Operator.NEQ: "!="}.get(op)
        return f"({number} and v {py} {k(target)})" if py else "False"
    if isinstance(target, str):
        if op is Operator.EQ:
            return f"(v.__class__ is str and v == {k(target)})"
        if op is Operator.NEQ:
            return f"(v.__class__ is str and v != {k(target)})"
        if op is Operator.CONTAINS:
            return f"(v.__class__ is tuple and {k(target)} in v)"
        return "False"
    if isinstance(target, tuple):
        labels = k(frozenset(target))
        if op is Operator.ANY:
            return (f"((v.__class__ is str and v in {labels}) or "
                    f"(v.__class__ is tuple and not {labels}.isdisjoint(v)))")
        if op is Operator.ALL:
            return f"(v.__class__ is tuple and {labels}.issubset(v))"
        return "False"
    if op is Operator.EMPTY:
        return "(v.__class__ is tuple and not v)"
    if op is Operator.NOT_EMPTY:
        return "(v.__class__ is tuple and len(v) > 0)"
    return "False"


def compile_decider(rulesets: Sequence[RulesetSpec], fail_closed: bool) -> Decider:
    """Generate `decide(values, resolve) -> statuses`: `values` maps metric names to
    normalised values or Failures (and is filled by `resolve(name)` for metrics not yet
    known, which must store and return the value). Every constant from the artifact is bound
    by reference (K0, K1, ...), never written into the source text."""
    if not rulesets:
        return lambda values, resolve: ()
    chunks = [rulesets[i:i + _CHUNK] for i in range(0, len(rulesets), _CHUNK)]
    parts = [_compile_chunk(chunk, fail_closed) for chunk in chunks]
    if len(parts) == 1:
        return parts[0]

    def decide(values: dict[str, object], resolve: Callable[[str], object]) -> tuple[Status, ...]:
        out: tuple[Status, ...] = ()
        for part in parts:
            out += part(values, resolve)
        return out

    return decide


def _compile_chunk(rulesets: Sequence[RulesetSpec], fail_closed: bool) -> Decider:
    consts: list[object] = []
    index: dict[tuple[type, object], str] = {}

    def k(value: object) -> str:
        key = (type(value), value)
        if key not in index:
            index[key] = f"K{len(consts)}"
            consts.append(value)
        return index[key]

    lines = ["def decide(values, resolve):", "    get = values.get"]
    for i, rs in enumerate(rulesets):
        lines.append("    while True:")
        for rule in rs.rules:
            name = k(rule.metric)
            lines.append(f"        v = get({name}, M)")
            lines.append(f"        if v is M: v = resolve({name})")
            cond = _condition(rule, k)
            if fail_closed:
                lines.append(f"        if v.__class__ is not F and not {cond}:")
                lines.append(f"            s{i} = NT; break")
            else:
                lines.append("        if v.__class__ is F:")
                lines.append(f"            s{i} = v.status; break")
                lines.append(f"        if not {cond}:")
                lines.append(f"            s{i} = NT; break")
        lines.append(f"        s{i} = T; break")
    lines.append("    return (" + "".join(f"s{i}, " for i in range(len(rulesets))) + ")")
    namespace: dict[str, object] = {f"K{j}": c for j, c in enumerate(consts)}
    namespace.update(M=_MISSING, F=Failure, T=Status.TRIGGERED, NT=Status.NOT_TRIGGERED)
    code = compile("\n".join(lines), "<stageguard decider>", "exec")
    exec(code, namespace)  # the source holds names only; values come from the namespace
    return namespace["decide"]  # type: ignore[return-value]


def values_getter(values: Mapping[str, object]) -> Getter:
    """A reference-interpreter getter over already-resolved values (missing ⇒ error)."""

    def get(name: str) -> Value | Failure:
        if name in values:
            return values[name]  # type: ignore[return-value]
        return Failure(Status.ERROR, f"no value for metric `{name}`")

    return get
