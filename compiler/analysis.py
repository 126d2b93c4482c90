"""Exact analysis of stages: each ruleset is a box in metric space.

A rule constrains one metric, so a ruleset (a conjunction of rules) is a product of
per-metric sets: a box. For each metric the analysis cuts its domain into finitely many
*atoms*, classes of values that every rule on that metric treats alike (the intervals between
and the points at its thresholds; the labels a rule names and "any other label"; for label
lists, which named labels are present), plus the value being missing and, when asked, the
metric failing, timing out or having no source. A box is then one bit mask per metric, and
first-match over a stage is exact set algebra on lists of disjoint boxes: no sampling, no
solver.

Whether an atom satisfies a rule is decided by the runtime's reference interpreter itself
(`rule_holds` on the atom's representative value), so the analysis and evaluation cannot
disagree about what a rule means.

The domain is what the metric catalog declares: numbers inside a declared range, labels from
a declared vocabulary (any string when there is none), missing values and, for `failures=True`,
metric failures. Values the catalog rules out are not considered.

The formatter does not need this module; lint, diff and policy tests share it.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from typing import Any

from stageguard.runtime.evaluate import (
    FailClosed,
    Failure,
    Value,
    closes,
    rule_holds,
    stage_fail_closed,
)
from stageguard.runtime.galileo import wire_value
from stageguard.runtime.model import (
    ActionType,
    Artifact,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    Status,
)

Box = tuple[int, ...]

# Atoms one label-list metric may have before the analysis refuses (2^12 is every subset of
# the eleven PII labels plus "another label"): beyond it, masks stop being cheap.
ATOM_LIMIT = 1 << 14

_FAILURES = (Status.TIMEOUT, Status.FAILED, Status.ERROR)  # also the stage-status precedence


class AnalysisLimit(ValueError):
    """The stage is beyond what the exact analysis handles; the message says why."""


class AnalysisStopped(Exception):
    """The analysis ran past its time limit (`time_limit`): nothing is claimed for what it
    did not finish."""


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "analysis_deadline", default=None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Stop analyses started inside with AnalysisStopped once `seconds` have passed."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_time() -> None:
    """Raise AnalysisStopped past the deadline; called between steps of the analyses."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise AnalysisStopped


# ---- atoms and dimensions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atom:
    """One class of values. `value` is its representative: a normalised metric value, None
    for missing, or a Failure. Numeric atoms also carry their interval for descriptions."""

    value: Value | Failure
    lo: float | None = None
    hi: float | None = None
    lo_closed: bool = False
    hi_closed: bool = False
    # Inside what the catalog declares (the range, the vocabulary). The runtime accepts the
    # rest too, so the analysis covers it; only SG0704/SG0705 speak of the declared domain.
    in_domain: bool = True

    @property
    def is_value(self) -> bool:
        return self.value is not None and not isinstance(self.value, Failure)

    @property
    def is_nan(self) -> bool:
        return isinstance(self.value, float) and self.value != self.value


def _between(a: float | None, b: float | None) -> float | None:
    """The simplest number strictly between a and b (None bounds are infinite), or None when
    no float lies between them."""
    if a is None and b is None:
        return 0.0
    if a is None:
        assert b is not None
        return float(math.floor(b) - 1)
    if b is None:
        return float(math.floor(a) + 1)
    if math.nextafter(a, math.inf) >= b:
        return None
    # The shortest number just above a: witnesses read best next to the threshold they test.
    for digits in range(0, 17):
        step = 10.0 ** -digits
        v = round(math.floor(a / step) * step + step, digits)
        if a < v < b:
            return v + 0.0
    return (a + b) / 2


def _numeric_atoms(spec: MetricSpec | None, targets: Iterable[float]) -> list[Atom]:
    """The whole number line cut at every threshold and declared bound, then NaN: every
    number the runtime accepts falls in exactly one atom (the infinities in the outer gaps,
    where every rule treats them as the gap's representative)."""
    lo = spec.minimum if spec is not None else None
    hi = spec.maximum if spec is not None else None
    points = {float(t) for t in targets if math.isfinite(t)}
    if lo is not None:
        points.add(lo)
    if hi is not None:
        points.add(hi)
    ordered = sorted(points)
    atoms: list[Atom] = []

    def within(v: float) -> bool:
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    def gap(a: float | None, b: float | None) -> None:
        v = _between(a, b)
        if v is not None:
            atoms.append(Atom(v, a, b, in_domain=within(v)))

    gap(None, ordered[0] if ordered else None)
    for i, p in enumerate(ordered):
        atoms.append(Atom(p, p, p, True, True, in_domain=within(p)))
        gap(p, ordered[i + 1] if i + 1 < len(ordered) else None)
    atoms.append(Atom(math.nan, in_domain=False))
    return atoms


def _fresh_label(taken: Iterable[str]) -> str:
    taken = set(taken)
    label, n = "other", 1
    while label in taken:
        label, n = f"other_{n}", n + 1
    return label


class Dimension:
    """One metric's atoms; masks over them are ints (bit i = atom i)."""

    def __init__(self, metric: str, spec: MetricSpec | None, atoms: Sequence[Atom],
                 kind: MetricType, classes: tuple[tuple[str, ...], ...] = (),
                 other: str | None = None) -> None:
        self.metric = metric
        self.spec = spec
        self.kind = kind
        self.atoms = tuple(atoms)
        self.full = (1 << len(self.atoms)) - 1
        self.values = sum(1 << i for i, a in enumerate(self.atoms) if a.is_value)
        # The values the catalog declares (range, vocabulary): what SG0704/SG0705 speak of.
        self.declared = sum(1 << i for i, a in enumerate(self.atoms)
                            if a.is_value and a.in_domain)
        self.missing = sum(1 << i for i, a in enumerate(self.atoms) if a.value is None)
        self.failure = {a.value.status: 1 << i for i, a in enumerate(self.atoms)
                        if isinstance(a.value, Failure)}
        self.classes = classes  # label-list metrics: groups of labels rules treat alike
        self.other = other      # a label no rule names, when the domain has one
        self._sat: dict[tuple[Operator, object], int] = {}
        self._lists: dict[int, dict[str, object]] = {}  # label-list masks as data
        self._described: dict[int, str | None] = {}
        self._data: dict[int, dict[str, object] | None] = {}
        self._picked: dict[int, int] = {}

    def sat(self, rule: RuleSpec) -> int:
        """Atoms on which the rule holds. Failures never hold (fail-closed is the stage's
        business, not the rule's)."""
        key = (rule.operator, rule.target_value)
        mask = self._sat.get(key)
        if mask is None:
            mask = 0
            for i, atom in enumerate(self.atoms):
                if atom.is_value and rule_holds(rule.operator, rule.target_value, atom.value):  # type: ignore[arg-type]
                    mask |= 1 << i
            self._sat[key] = mask
        return mask

    def pick(self, mask: int) -> int:
        """The index of the atom to show for a mask: a declared value if there is one,
        preferring values inside the range over its bounds, then missing, then a value the
        catalog does not declare (out of range, NaN, outside the vocabulary), then a
        failure."""
        best = self._picked.get(mask)
        if best is None:
            best = self._picked[mask] = self._pick(mask)
        return best

    def _pick(self, mask: int) -> int:
        best, best_rank = -1, 99
        for i, atom in enumerate(self.atoms):
            if not mask >> i & 1:
                continue
            if atom.is_value and atom.in_domain:
                rank = 1 if atom.lo_closed and self.kind in (MetricType.SCORE, MetricType.NUMBER) \
                    and len(self.atoms) > 1 else 0
            elif atom.value is None:
                rank = 2
            elif atom.is_value:
                rank = 3 + atom.is_nan
            else:
                rank = 5
            if rank < best_rank:
                best, best_rank = i, rank
        return best

    # -- as data (docs/schemas/region.schema.json)

    def to_data(self, mask: int) -> dict[str, object] | None:
        """The exact set of values a mask allows, as data (None: it does not constrain):
        number intervals with their ends, NaN; labels named or "another label"; label
        lists as their classes' states; missing; failure kinds. Memoised per mask (the
        same dict each time: callers serialise it, never change it)."""
        try:
            return self._data[mask]
        except KeyError:
            found = self._to_data(mask)
            self._data[mask] = found
            return found

    def _to_data(self, mask: int) -> dict[str, object] | None:
        if mask == self.full:
            return None
        out: dict[str, object] = {"kind": self.kind.value}
        atoms = [a for i, a in enumerate(self.atoms) if mask >> i & 1 and a.is_value]
        if self.kind in (MetricType.SCORE, MetricType.NUMBER):
            intervals: list[dict[str, object]] = []
            for a in atoms:
                if a.is_nan:
                    continue
                last = intervals[-1] if intervals else None
                # Atoms are in order along the line: adjacent ones join into one interval.
                if last is not None and last["hi"] == a.lo and (
                        last["hi_closed"] or a.lo_closed):
                    last["hi"], last["hi_closed"] = a.hi, a.hi_closed
                else:
                    intervals.append({"lo": a.lo, "lo_closed": a.lo_closed, "hi": a.hi,
                                      "hi_closed": a.hi_closed})
            out["intervals"] = intervals
            out["nan"] = any(a.is_nan for a in atoms)
        elif self.kind is MetricType.LABEL:
            out["named"] = [a.value for a in self.atoms if a.is_value and a.value != self.other]
            out["labels"] = [a.value for a in atoms if a.value != self.other]
            out["another_label"] = any(a.value == self.other for a in atoms)
        else:
            out.update(self._lists_data(mask))
        out["missing"] = bool(mask & self.missing)
        out["failures"] = [st.value for st, bit in self.failure.items() if mask & bit]
        return out

    def _lists_data(self, mask: int) -> dict[str, object]:
        """The label lists a mask allows, as products: each class of labels in some states
        and an unnamed label present or not, independently. One product when the mask is
        one (the usual case); else `any_of`, disjoint products found by splitting on one
        class at a time. Memoised per mask."""
        found = self._lists.get(mask)
        if found is not None:
            return found
        named = {x for c in self.classes for x in c}
        points = {(*(_state(c, set(a.value)) for c in self.classes),  # type: ignore[arg-type]
                   int(bool(set(a.value) - named)))  # type: ignore[arg-type]
                  for i, a in enumerate(self.atoms) if mask >> i & 1 and a.is_value}
        names = ("none", "some", "all")

        def as_data(axes: list[list[int]]) -> dict[str, object]:
            return {"classes": [{"labels": list(c), "present": [names[k] for k in ax]}
                                for c, ax in zip(self.classes, axes, strict=False)],
                    "another_label": [bool(k) for k in axes[-1]]}

        products = [as_data(p) for p in _products(points)]
        found = products[0] if len(products) == 1 else {"any_of": products}
        self._lists[mask] = found
        return found

    # -- descriptions

    def describe(self, mask: int) -> str | None:
        """A reader's description of a mask, or None when it does not constrain (memoised:
        a stage's regions repeat the same few masks per metric thousands of times)."""
        try:
            return self._described[mask]
        except KeyError:
            found = self._describe(mask)
            self._described[mask] = found
            return found

    def _describe(self, mask: int) -> str | None:
        if mask == self.full:
            return None
        parts: list[str] = []
        failures = [st.value for st, bit in self.failure.items() if mask & bit]
        values = mask & self.values
        if mask & ~sum(self.failure.values()) == self.values | self.missing:
            return f"{self.metric} is computed" if not failures else \
                f"({self.metric} is computed or {'/'.join(failures)})"
        if values == self.values and values:
            parts.append(f"{self.metric} is present")
        elif values:
            if self.kind in (MetricType.SCORE, MetricType.NUMBER):
                parts.extend(self._describe_numbers(values))
            elif self.kind is MetricType.LABEL:
                parts.append(self._describe_label(values))
            else:
                parts.extend(self._describe_labels(values))
        if mask & self.missing:
            parts.append(f"{self.metric} is missing")
        if len(failures) == len(self.failure) and failures:
            parts.append(f"{self.metric} fails")
        elif failures:
            parts.append(f"{self.metric} {'/'.join(failures)}")
        if not parts:
            return f"{self.metric}: nothing"
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def _describe_numbers(self, mask: int) -> list[str]:
        runs: list[tuple[Atom, Atom]] = []
        current: list[Atom] = []
        nan = False
        for i, atom in enumerate(self.atoms):
            if not atom.is_value:
                continue
            if atom.is_nan:
                nan = bool(mask >> i & 1)
                continue
            if mask >> i & 1:
                current.append(atom)
            elif current:
                runs.append((current[0], current[-1]))
                current = []
        if current:
            runs.append((current[0], current[-1]))
        m = self.metric
        out = []
        for first, last in runs:
            lo, hi = first.lo, last.hi
            if lo is not None and lo == hi:
                out.append(f"{m} == {_num(lo)}")
                continue
            if lo is not None and hi is not None:
                out.append(f"{_num(lo)} {'<=' if first.lo_closed else '<'} {m} "
                           f"{'<=' if last.hi_closed else '<'} {_num(hi)}")
            elif lo is not None:
                out.append(f"{m} {'>=' if first.lo_closed else '>'} {_num(lo)}")
            elif hi is not None:
                out.append(f"{m} {'<=' if last.hi_closed else '<'} {_num(hi)}")
            else:
                out.append(f"{m} is a number")
        if nan:
            out.append(f"{m} is NaN")
        return out

    def _describe_label(self, mask: int) -> str:
        inside = [a.value for i, a in enumerate(self.atoms) if a.is_value and mask >> i & 1]
        outside = [a.value for i, a in enumerate(self.atoms) if a.is_value and not mask >> i & 1]
        if self.other in inside and len(outside) <= len(inside):
            shown = ", ".join(f'"{v}"' for v in outside)
            return f"{self.metric} is not {shown}" if len(outside) == 1 else \
                f"{self.metric} is none of {shown}"
        names = ", ".join("another label" if v == self.other else f'"{v}"' for v in inside)
        return f"{self.metric} is {names}" if len(inside) == 1 else \
            f"{self.metric} is one of {names}"

    def _describe_labels(self, mask: int) -> list[str]:
        """Per class of labels when the mask is a product of per-class choices (the usual
        case); otherwise the label lists themselves."""
        atoms = [a for i, a in enumerate(self.atoms) if a.is_value and mask >> i & 1]
        named = {x for c in self.classes for x in c}
        allowed = [{_state(c, set(a.value)) for a in atoms} for c in self.classes]  # type: ignore[arg-type]
        extra = {bool(set(a.value) - named) for a in atoms}  # type: ignore[arg-type]
        if math.prod(len(s) for s in allowed) * len(extra) == len(atoms):
            if len(atoms) == 1 and not atoms[0].value:
                return [f"{self.metric} is empty"]
            phrases = [p for c, s in zip(self.classes, allowed, strict=True)
                       if (p := self._class_phrase(c, s))]
            if len(extra) == 1 and self.other is not None:
                phrases.append("has another label" if True in extra else "has no other label")
            return [f"{self.metric} " + " and ".join(phrases)] if phrases else \
                [f"{self.metric} is present"]
        lists = ["[" + ", ".join(f'"{x}"' for x in a.value) + "]" for a in atoms]  # type: ignore[union-attr]
        more = f" (and {len(lists) - 4} more)" if len(lists) > 4 else ""
        return [f"{self.metric} is one of {', '.join(lists[:4])}{more}"]

    @staticmethod
    def _class_phrase(cls: tuple[str, ...], states: set[int]) -> str | None:
        names = ", ".join(f'"{x}"' for x in cls)
        if len(cls) == 1:
            return {frozenset({2}): f"contains {names}",
                    frozenset({0}): f"lacks {names}"}.get(frozenset(states))
        return {frozenset({1, 2}): f"has some of {names}",
                frozenset({0}): f"has none of {names}",
                frozenset({2}): f"has all of {names}",
                frozenset({0, 1}): f"lacks some of {names}",
                frozenset({1}): f"has some but not all of {names}",
                frozenset({0, 2}): f"has all or none of {names}"}.get(frozenset(states))


def _num(x: float | None) -> str:
    assert x is not None
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _dimension(metric: str, spec: MetricSpec | None, rules: Sequence[RuleSpec],
               failures: bool) -> Dimension:
    kind = spec.type if spec is not None else _guess_kind(rules)
    tail = [Atom(None)]
    if failures:
        tail += [Atom(Failure(s, f"{metric} {s.value}")) for s in _FAILURES]
    vocabulary = spec.labels if spec is not None else None
    if kind in (MetricType.SCORE, MetricType.NUMBER):
        targets = [float(r.target_value) for r in rules
                   if isinstance(r.target_value, float | int)]
        return Dimension(metric, spec, [*_numeric_atoms(spec, targets), *tail], kind)
    named: list[str] = []
    for r in rules:
        t = r.target_value
        for label in ((t,) if isinstance(t, str) else t if isinstance(t, tuple) else ()):
            if label not in named and (vocabulary is None or label in vocabulary):
                named.append(label)
    # `other` stands for every label no rule names: a spare one of the vocabulary, else one
    # outside it, since the runtime accepts any label.
    if vocabulary is not None:
        named.sort(key=vocabulary.index)
        spare = [v for v in vocabulary if v not in named]
        other = spare[0] if spare else _fresh_label(vocabulary)
    else:
        other = _fresh_label(named)
    declared = set(vocabulary) if vocabulary is not None else None
    if kind is MetricType.LABEL:
        atoms = [Atom(label) for label in named] + [
            Atom(other, in_domain=declared is None or other in declared)]
        return Dimension(metric, spec, [*atoms, *tail], kind, other=other)
    # A list of labels: rules only see which named labels are present (and, for emptiness,
    # whether any other label is). Labels every rule treats alike form one class, whose
    # state is none / some / all of its labels.
    groups: dict[frozenset[int], list[str]] = {}
    for label in named:
        signature = frozenset(i for i, r in enumerate(rules) if _names(r.target_value, label))
        groups.setdefault(signature, []).append(label)
    classes = tuple(tuple(g) for g in groups.values())
    states = [(0, 2) if len(c) == 1 else (0, 1, 2) for c in classes]
    count = math.prod(len(s) for s in states) * 2
    if count > ATOM_LIMIT:
        raise AnalysisLimit(f"metric `{metric}`: its rules tell apart {count} kinds of label "
                            f"lists (the limit is {ATOM_LIMIT})")
    atoms = []
    for combo in product(*states):
        chosen: list[str] = []
        for cls, state in zip(classes, combo, strict=True):
            chosen += cls[:1] if state == 1 else list(cls) if state == 2 else []
        for extra in (False, True):
            labels = [*chosen, other] if extra else chosen
            fresh = declared is not None and other not in declared
            order = vocabulary.index if vocabulary is not None and not fresh else None
            atoms.append(Atom(tuple(sorted(labels, key=order) if order else labels),
                              in_domain=not (extra and fresh)))
    return Dimension(metric, spec, [*atoms, *tail], kind, classes=classes, other=other)


def _names(target: object, label: str) -> bool:
    return target == label if isinstance(target, str) else \
        isinstance(target, tuple) and label in target


def _guess_kind(rules: Sequence[RuleSpec]) -> MetricType:
    """Only for a metric with no catalog entry (never the case for a valid artifact)."""
    for r in rules:
        if r.operator in (Operator.CONTAINS, Operator.ALL, Operator.EMPTY, Operator.NOT_EMPTY):
            return MetricType.LABELS
        if isinstance(r.target_value, str):
            return MetricType.LABEL
    return MetricType.NUMBER


# ---- the space --------------------------------------------------------------------------------


class Space:
    """The metric space of one or more stages (a diff analyses both sides in one space)."""

    def __init__(self, catalog: Mapping[str, MetricSpec],
                 rulesets: Iterable[RulesetSpec], failures: bool = False) -> None:
        rulesets = tuple(rulesets)
        by_metric: dict[str, list[RuleSpec]] = {}
        for rs in rulesets:
            for rule in rs.rules:
                by_metric.setdefault(rule.metric, []).append(rule)
        self.failures = failures
        self.dims = tuple(_dimension(m, catalog.get(m), rules, failures)
                          for m, rules in sorted(by_metric.items()))
        self.index = {d.metric: i for i, d in enumerate(self.dims)}
        self.full: Box = tuple(d.full for d in self.dims)
        self._made = (catalog, rulesets)
        self._values: Space | None = None if failures else self

    def value_space(self) -> Space:
        """This space without failure atoms, where a failed metric reads as missing (as it
        does for a rule failing open): its value atoms sit at the same bits (`widen`)."""
        if self._values is None:
            self._values = Space(*self._made, failures=False)
            assert [len(v.atoms) + 3 for v in self._values.dims] == [
                len(d.atoms) for d in self.dims]
        return self._values

    def widen(self, box: Box) -> Box:
        """A box of `value_space()` here: where a metric may be missing, it may fail."""
        return tuple(m | (sum(d.failure.values()) if m & d.missing else 0)
                     for m, d in zip(box, self.dims, strict=True))

    def narrow(self, box: Box) -> Box:
        """The smallest box of `value_space()` whose `widen` holds this one."""
        return tuple((m & (d.values | d.missing)) | (d.missing if m & ~(d.values | d.missing)
                                                      else 0)
                     for m, d in zip(box, self.dims, strict=True))

    def ruleset_box(self, rules: Sequence[RuleSpec],
                    fail_closed: FailClosed = False) -> Box | None:
        """Where every rule holds (fail closed: or its metric failed); None when nowhere."""
        box = list(self.full)
        for rule in rules:
            i = self.index[rule.metric]
            dim = self.dims[i]
            allowed = dim.sat(rule)
            if closes(fail_closed, rule.metric):
                allowed |= sum(dim.failure.values())
            box[i] &= allowed
            if not box[i]:
                return None
        return tuple(box)

    def failure_boxes(self, rules: Sequence[RuleSpec], status: Status,
                      fail_closed: FailClosed = False) -> list[Box]:
        """Where the ruleset ends with `status` because the first rule not known to be false
        needs a metric that ended so, failing open (a metric failing closed holds instead).
        Disjoint (they differ at that rule)."""
        boxes: list[Box] = []
        if not self.failures:
            return boxes
        prefix = list(self.full)
        for rule in rules:
            i = self.index[rule.metric]
            closed = closes(fail_closed, rule.metric)
            if prefix[i] == self.full[i] and not closed:  # else an earlier rule needs a value
                box = list(prefix)
                box[i] = self.dims[i].failure[status]
                boxes.append(tuple(box))
            prefix[i] &= self.dims[i].sat(rule) | (
                sum(self.dims[i].failure.values()) if closed else 0)
            if not prefix[i]:
                break
        return boxes

    @property
    def computed(self) -> Box:
        """Every metric has a value or is missing: no failures."""
        return tuple(d.values | d.missing for d in self.dims)

    def _free(self, dim: Dimension, mask: int, plain: bool) -> bool:
        # `plain`: the box is known to hold no failures, so "value or missing" is no limit.
        return mask == dim.full or (plain and mask == dim.values | dim.missing)

    def witness(self, box: Box, plain: bool = False) -> Witness:
        """A concrete payload in the box: one value per metric the box constrains (a metric
        left out is missing, which every box that does not constrain it admits)."""
        values: dict[str, Value | Failure] = {}
        for dim, mask in zip(self.dims, box, strict=True):
            if not self._free(dim, mask, plain):
                values[dim.metric] = dim.atoms[dim.pick(mask)].value
        return Witness(values)

    def box_data(self, box: Box, plain: bool = False) -> dict[str, object]:
        """A box as data: per constrained metric, the values it allows (Dimension.to_data);
        an unconstrained metric is left out, as in `describe`."""
        return {d.metric: data for d, m in zip(self.dims, box, strict=True)
                if not self._free(d, m, plain) and (data := d.to_data(m)) is not None}

    def describe(self, box: Box, plain: bool = False) -> str:
        parts = [t for d, m in zip(self.dims, box, strict=True)
                 if not self._free(d, m, plain) and (t := d.describe(m))]
        return " and ".join(parts) if parts else "every payload"

    def contains(self, box: Box, values: Mapping[str, object]) -> bool:
        """Whether a payload (metric values, Failures; absent = missing) lies in the box."""
        for dim, mask in zip(self.dims, box, strict=True):
            if mask == dim.full:
                continue
            if not mask >> self.locate(dim, values.get(dim.metric)) & 1:
                return False
        return True

    def locate(self, dim: Dimension, value: object) -> int:
        """The atom a value falls in; ValueError for a value outside the domain."""
        if isinstance(value, Failure):
            if value.status not in dim.failure:
                raise ValueError(f"{dim.metric}: failures are outside this analysis")
            return dim.failure[value.status].bit_length() - 1
        if value is None:
            return dim.missing.bit_length() - 1
        if dim.kind in (MetricType.SCORE, MetricType.NUMBER):
            if isinstance(value, bool | int | float):
                for i, atom in enumerate(dim.atoms):
                    if atom.is_value and _in_atom(atom, float(value)):
                        return i
        elif dim.kind is MetricType.LABEL:
            if isinstance(value, str):
                for i, atom in enumerate(dim.atoms):
                    if atom.value == value:
                        return i
                for i, atom in enumerate(dim.atoms):
                    if atom.is_value and atom.value == dim.other:
                        return i
        elif isinstance(value, tuple | list) and all(isinstance(x, str) for x in value):
            for i, atom in enumerate(dim.atoms):
                if atom.is_value and _same_class(dim, atom.value, value):  # type: ignore[arg-type]
                    return i
        raise ValueError(f"{value!r} is outside the domain of {dim.metric}")


def _in_atom(atom: Atom, v: float) -> bool:
    if v != v or atom.is_nan:  # NaN is its own atom
        return v != v and atom.is_nan
    if atom.lo is not None and (v < atom.lo or (v == atom.lo and not atom.lo_closed)):
        return False
    return not (atom.hi is not None and (v > atom.hi or (v == atom.hi and not atom.hi_closed)))


def _products(points: set[tuple[int, ...]]) -> list[list[list[int]]]:
    """`points` (tuples of coordinates) as a union of disjoint products, each given by the
    values allowed per coordinate: one product when the set is one; otherwise split by the
    values of the first coordinate that varies, and so on within each part."""
    if not points:
        return []
    axes = [sorted({p[k] for p in points}) for k in range(len(next(iter(points))))]
    if math.prod(len(a) for a in axes) == len(points):
        return [axes]
    split = next(k for k, a in enumerate(axes) if len(a) > 1)
    out = []
    for v in axes[split]:
        out.extend(_products({p for p in points if p[split] == v}))
    return out


def _state(cls: tuple[str, ...], present: set[str]) -> int:
    have = sum(1 for x in cls if x in present)
    return 0 if have == 0 else 2 if have == len(cls) else 1


def _same_class(dim: Dimension, rep: Sequence[str], value: Sequence[str]) -> bool:
    present, chosen = set(value), set(rep)
    if any(_state(c, present) != _state(c, chosen) for c in dim.classes):
        return False
    named = {x for c in dim.classes for x in c}
    return bool(present - named) == bool(chosen - named)


@dataclass(frozen=True, slots=True)
class Witness:
    """A concrete payload: values (or failures) of the metrics that matter; every other
    metric may be anything."""

    values: Mapping[str, Value | Failure]

    def to_data(self) -> dict[str, object]:
        metrics: dict[str, object] = {}
        failures: dict[str, str] = {}
        for name, value in self.values.items():
            if isinstance(value, Failure):
                failures[name] = value.status.value
            else:
                metrics[name] = wire_value(value)  # NaN as "NaN", as every body writes it
        return {"metrics": metrics, **({"failures": failures} if failures else {})}

    def text(self) -> str:
        parts = []
        for name, value in self.values.items():
            if isinstance(value, Failure):
                parts.append(f"{name}=<{value.status.value}>")
            elif value is None:
                parts.append(f"{name}=null")
            elif isinstance(value, tuple):
                labels = ", ".join(f'"{x}"' for x in value)
                parts.append(f"{name}=[{labels}]")
            elif isinstance(value, str):
                parts.append(f'{name}="{value}"')
            elif value != value:
                parts.append(f"{name}=NaN")
            else:
                parts.append(f"{name}={_num(float(value))}")
        return ", ".join(parts) if parts else "any payload"


# ---- box algebra ------------------------------------------------------------------------------


def intersect(a: Box, b: Box) -> Box | None:
    out = tuple(map(int.__and__, a, b))  # C-level: the analysis's innermost operation
    return None if 0 in out else out


Sparse = list[tuple[int, int]]


def sparse(box: Box, full: Box) -> Sparse:
    """The dimensions a box constrains, with their masks: a ruleset's box constrains only
    its rules' metrics, so cutting by it need not touch the other dimensions."""
    return [(i, m) for i, (m, f) in enumerate(zip(box, full, strict=True)) if m != f]


def cut(box: Box, by: Sparse) -> tuple[Box | None, list[Box]]:
    """`box` ∩ `by` and `box` − `by` (as disjoint boxes), for a sparse `by`."""
    inside = list(box)
    for i, m in by:
        z = box[i] & m
        if not z:
            return None, [box]
        inside[i] = z
    rest: list[Box] = []
    current = list(box)
    for i, m in by:
        left = box[i] & ~m
        if left:
            piece = current.copy()
            piece[i] = left
            rest.append(tuple(piece))
        current[i] = box[i] & m
    return tuple(inside), rest


def cut_all(boxes: Iterable[Box], by: Sparse) -> tuple[list[Box], list[Box]]:
    """`cut` of each box: the parts inside `by`, and the disjoint parts outside it."""
    inside: list[Box] = []
    outside: list[Box] = []
    for box in boxes:
        hit, rest = cut(box, by)
        if hit is not None:
            inside.append(hit)
        outside.extend(rest)
    return inside, outside


def subtract(a: Box, b: Box) -> list[Box]:
    """a minus b as disjoint boxes (`cut` by every dimension of b)."""
    return cut(a, list(enumerate(b)))[1]


def subtract_all(boxes: Iterable[Box], b: Box) -> list[Box]:
    out: list[Box] = []
    for box in boxes:
        out.extend(subtract(box, b))
    return out


def coalesce(boxes: list[Box]) -> list[Box]:
    """Merge disjoint boxes that differ in one dimension only (fewer, larger pieces)."""
    if len(boxes) < 2:
        return boxes
    for d in range(len(boxes[0])):
        first = boxes[0][d]
        if all(b[d] == first for b in boxes):
            continue  # every box agrees here: nothing merges along d
        merged: dict[tuple[int, ...], int] = {}
        for box in boxes:
            key = box[:d] + box[d + 1:]
            merged[key] = merged.get(key, 0) | box[d]
        if len(merged) < len(boxes):
            boxes = [(*k[:d], m, *k[d:]) for k, m in merged.items()]
    return boxes


# ---- deciding regions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What a stage decides for a payload: status, winning ruleset and its action."""

    status: Status
    ruleset: str | None = None
    action: ActionType | None = None
    choices: tuple[str, ...] | None = None

    def text(self) -> str:
        if self.ruleset is None:
            return self.status.value
        action = self.action.value if self.action else ""
        if self.choices:
            shown = " | ".join(f'"{c}"' for c in self.choices)
            action += f" {shown}"
        return f"{self.status.value} by `{self.ruleset}`: {action}"

    def to_data(self) -> dict[str, object]:
        return {"status": self.status.value, "ruleset": self.ruleset,
                "action": self.action.value if self.action else None,
                "choices": list(self.choices) if self.choices is not None else None}


@dataclass(frozen=True, slots=True)
class StageModel:
    """What the analysis needs of a stage."""

    name: str
    rulesets: tuple[RulesetSpec, ...]
    catalog: Mapping[str, MetricSpec]
    fail_closed: FailClosed = False

    @classmethod
    def of(cls, artifact: Artifact) -> StageModel:
        return cls(artifact.stage.name, artifact.rulesets,
                   {m.name: m for m in artifact.metrics}, stage_fail_closed(artifact))


def _triggered(rs: RulesetSpec) -> Decision:
    return Decision(Status.TRIGGERED, rs.name, rs.action.type, rs.action.choices)


def refine(space: Space, stage: StageModel,
           pieces: Iterable[tuple[Box, object]]) -> list[tuple[Box, object, Decision]]:
    """Split tagged regions by what the stage decides on them. The result's boxes are
    disjoint within each input piece and cover it exactly."""
    if space.failures and stage.fail_closed is False:
        return _refine_open(space, stage, list(pieces))
    return _refine(space, stage, pieces)


def _refine_open(space: Space, stage: StageModel, pieces: list[tuple[Box, object]]
                 ) -> list[tuple[Box, object, Decision]]:
    """`refine` for a stage failing open everywhere. A failed metric makes its rules false,
    as a missing one does, so which ruleset wins is decided in the value space; failure
    kinds then split only what nothing triggers, once per failing metric (`endings`),
    instead of every piece being cut by every rule's failures."""
    found = _refine(space.value_space(), stage,
                    [(space.narrow(box), k) for k, (box, _) in enumerate(pieces)])
    done: list[tuple[Box, object, Decision]] = []
    quiet: list[tuple[Box, object]] = []
    for x, k, decision in found:
        assert isinstance(k, int)
        box, tag = pieces[k]
        hit = intersect(space.widen(x), box)
        assert hit is not None  # x lies in narrow(box), so widen(x) meets box
        if decision.ruleset is not None:
            done.append((hit, tag, decision))
        else:
            quiet.append((hit, tag))
    return done + endings(space, stage, quiet)


def _refine(space: Space, stage: StageModel,
            pieces: Iterable[tuple[Box, object]]) -> list[tuple[Box, object, Decision]]:
    done: list[tuple[Box, object, Decision]] = []
    # Active pieces, grouped by (tag, worst failure status so far) so they can be merged.
    active: dict[tuple[object, int], list[Box]] = {}
    for box, tag in pieces:
        active.setdefault((tag, len(_FAILURES)), []).append(box)
    merged_size: dict[tuple[object, int], int] = {}
    for rs in stage.rulesets:
        if not active:
            break
        check_time()
        trig = space.ruleset_box(rs.rules, stage.fail_closed)
        fails: list[tuple[int, list[Sparse]]] = []
        if stage.fail_closed is not True:
            fails = [(k, [sparse(fb, space.full) for fb in b]) for k, s in enumerate(_FAILURES)
                     if (b := space.failure_boxes(rs.rules, s, stage.fail_closed))]
        if trig is None and not fails:
            continue
        by = sparse(trig, space.full) if trig is not None else None
        decision = _triggered(rs)
        nxt: dict[tuple[object, int], list[Box]] = {}
        for (tag, worst), boxes in active.items():
            for box in boxes:
                rest = [box]
                if by is not None:
                    hit, rest = cut(box, by)
                    if hit is not None:
                        done.append((hit, tag, decision))
                for k, fboxes in fails:
                    for fb in fboxes:
                        hits, rest = cut_all(rest, fb)
                        if hits:
                            nxt.setdefault((tag, min(worst, k)), []).extend(hits)
                if rest:
                    nxt.setdefault((tag, worst), []).extend(rest)
        # Merging costs a pass over every box per dimension: done when a group has grown to
        # twice what its last merge left (pieces are disjoint either way; merging only keeps
        # their number down).
        active = {}
        for key, boxes in nxt.items():
            if len(boxes) >= 2 * merged_size.get(key, 1):
                boxes = coalesce(boxes)
                merged_size[key] = len(boxes)
            active[key] = boxes
    for (tag, worst), boxes in active.items():
        status = _FAILURES[worst] if worst < len(_FAILURES) else Status.NOT_TRIGGERED
        done.extend((box, tag, Decision(status)) for box in boxes)
    # Not merged once more by tag and decision: over many metrics that pass cost as much
    # as the splitting, and what reports regions merges its own (fewer) boxes.
    return done


def endings(space: Space, stage: StageModel, pieces: Iterable[tuple[Box, object]]
            ) -> list[tuple[Box, object, Decision]]:
    """`refine` where the caller knows that no ruleset of the stage triggers anywhere in
    the pieces. The stage's status is then the worst of its rulesets' endings, whatever
    their order, so the pieces are cut by the union of all failure endings of each kind,
    worst first, each union pruned of repeats and of boxes inside another (a metric that
    some ruleset reads first fails alike everywhere: one box, not one per ruleset)."""
    layers: list[tuple[Decision, list[Sparse]]] = []
    for status in _FAILURES:
        boxes = sorted({b for rs in stage.rulesets
                        for b in space.failure_boxes(rs.rules, status, stage.fail_closed)},
                       key=lambda b: sum(m != f for m, f in zip(b, space.full, strict=True)))
        kept: list[Box] = []
        # A failure box fails one metric and holds values elsewhere: it can lie only inside
        # one failing the same metric, and (broadest first) only one kept before it.
        by_failed: dict[int, list[Box]] = {}
        for b in boxes:
            failed = by_failed.setdefault(next(
                i for i, (m, d) in enumerate(zip(b, space.dims, strict=True))
                if m & ~(d.values | d.missing)), [])
            if not any(all(x & ~y == 0 for x, y in zip(b, k, strict=True)) for k in failed):
                failed.append(b)
                kept.append(b)
        layers.append((Decision(status), [sparse(b, space.full) for b in kept]))
    groups: dict[tuple[object, Decision], list[Box]] = {}
    quiet = Decision(Status.NOT_TRIGGERED)
    for box, tag in pieces:
        check_time()
        rest = [box]
        for decision, cuts in layers:
            for by in cuts:
                hits, rest = cut_all(rest, by)
                if hits:
                    groups.setdefault((tag, decision), []).extend(hits)
        if rest:
            groups.setdefault((tag, quiet), []).extend(rest)
    return [(b, tag, decision) for (tag, decision), boxes in groups.items()
            for b in coalesce(boxes)]


def partition(space: Space, stage: StageModel) -> list[tuple[Box, Decision]]:
    """The stage's decision on every part of the space, as disjoint boxes."""
    return [(box, d) for box, _, d in refine(space, stage, [(space.full, None)])]


def decide(stage: StageModel, values: Mapping[str, Value | Failure]) -> Decision:
    """The stage's decision for one payload by the runtime's reference interpreter: what
    every claim of the analysis is checked against."""
    from stageguard.runtime.evaluate import normalise_value, reference_decide, stage_status

    def get(metric: str) -> Value | Failure:
        # As the runtime takes payloads: label lists may come as lists.
        value = values.get(metric)
        return value if isinstance(value, Failure) else normalise_value(value)

    statuses = reference_decide(stage.rulesets, get, stage.fail_closed)
    for rs, status in zip(stage.rulesets, statuses, strict=True):
        if status is Status.TRIGGERED:
            return _triggered(rs)
    return Decision(stage_status(statuses))



def quick_decide(stage: StageModel, values: Mapping[str, Value | Failure]) -> Decision:
    """`decide`, by the runtime's compiled decider (equal to the reference interpreter:
    tests/test_evaluate.py), compiled once per stage: what the analysis reports for its many
    witnesses. Tests check those reports with `decide`."""
    from stageguard.runtime.evaluate import compile_decider, normalise_value, outcomes_status

    found = _COMPILED.get(id(stage))
    if found is None or found[0] is not stage:
        if len(_COMPILED) >= 32:
            _COMPILED.clear()
        # Generated code even for a large stage: its compile (~0.1 ms a ruleset) is soon
        # repaid over a lint's thousands of witnesses.
        found = _COMPILED[id(stage)] = (stage, compile_decider(
            stage.rulesets, stage.fail_closed, codegen=True))
    plain: dict[str, object] = {
        k: v if isinstance(v, Failure) else normalise_value(v) for k, v in values.items()}
    outcomes = found[1](plain, lambda name: plain.setdefault(name, None))
    if Status.TRIGGERED in outcomes:
        return _triggered(stage.rulesets[outcomes.index(Status.TRIGGERED)])
    return Decision(outcomes_status(outcomes))


# Compiled deciders by stage (the entry keeps the stage, so an id is never reused for
# another one while its entry lives).
_COMPILED: dict[int, tuple[StageModel, Callable[..., Any]]] = {}


# ---- comparing two stages -------------------------------------------------------------------


def _disjoint(boxes: Iterable[Box]) -> list[Box]:
    out: list[Box] = []
    for box in boxes:
        pieces = [box]
        for done in out:
            pieces = subtract_all(pieces, done)
        out.extend(pieces)
    return coalesce(out)


def _moved(old: StageModel, new: StageModel, rename: Mapping[str, str]
           ) -> tuple[list[RulesetSpec], list[RulesetSpec]]:
    """The rulesets, on each side, whose triggering can make the stages decide differently.

    A new ruleset is the *twin* of an old one when it has the old one's name (after
    `rename`), rules and action: the two trigger on exactly the same payloads (the fail
    modes being equal) and decide alike. Twins that keep their relative order (a longest
    common subsequence) cannot change a decision; every other ruleset can. Where no
    ruleset returned here triggers, both stages trigger the same twin or neither triggers."""
    olds = {rs.name: i for i, rs in enumerate(old.rulesets)}
    pairs: list[tuple[int, int]] = []  # (old index, new index) of twins, in new order
    for j, rs in enumerate(new.rulesets):
        i = olds.get(rename.get(rs.name, rs.name), -1)
        twin = old.rulesets[i] if i >= 0 else None
        if twin is not None and twin.rules == rs.rules and (
                twin.action.type, twin.action.choices) == (rs.action.type, rs.action.choices):
            pairs.append((i, j))
    kept = longest_increasing([i for i, _ in pairs])
    stay_old = {pairs[k][0] for k in kept}
    stay_new = {pairs[k][1] for k in kept}
    return ([rs for i, rs in enumerate(old.rulesets) if i not in stay_old],
            [rs for j, rs in enumerate(new.rulesets) if j not in stay_new])


def longest_increasing(seq: Sequence[int]) -> list[int]:
    """Positions of a longest strictly increasing subsequence of `seq` (patience sorting)."""
    tails: list[int] = []   # per length, the position whose value ends the best run
    back: list[int] = [-1] * len(seq)
    for k, v in enumerate(seq):
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if seq[tails[mid]] < v:
                lo = mid + 1
            else:
                hi = mid
        back[k] = tails[lo - 1] if lo else -1
        if lo == len(tails):
            tails.append(k)
        else:
            tails[lo] = k
    out: list[int] = []
    k = tails[-1] if tails else -1
    while k >= 0:
        out.append(k)
        k = back[k]
    return out[::-1]


def _unmatched(old: StageModel, new: StageModel
               ) -> tuple[list[RulesetSpec], list[RulesetSpec], list[RulesetSpec]]:
    """Rulesets paired across the sides by their rules alone (`common`, old side), and
    those left on each side: paired rulesets end alike (triggered, or the same failure)
    on every payload, whatever their names, order or actions."""
    left = list(old.rulesets)
    right = list(new.rulesets)
    common = []
    for rs in list(left):
        twin = next((r for r in right if r.rules == rs.rules), None)
        if twin is not None:
            left.remove(rs)
            right.remove(twin)
            common.append(rs)
    return common, left, right


def differences(space: Space, old: StageModel, new: StageModel,
                rename: Mapping[str, str] | None = None
                ) -> list[tuple[Box, Decision, Decision]]:
    """Every box of `space` (which must model failures) where the stages decide differently,
    with both decisions; new rulesets are named as `rename` maps them.

    The stages can decide differently only where a ruleset that is not a twin kept in
    order (`_moved`) triggers, or where a ruleset whose rules changed (`_unmatched`) ends
    with a failure: elsewhere they trigger the same twin, or neither triggers and every
    ruleset ends alike. A change of fail mode changes every ruleset: then the whole space
    is refined.

    Modelling failures naively splits the space by every rule of every ruleset three times
    over. When both stages fail open it need not: a failed metric, like a missing one, makes
    every rule on it false, so *which ruleset wins* is decided in the value space, where
    "missing" stands for "missing or failed". Failure kinds matter only where a stage
    triggers nothing, and there only through its failure endings (`endings`)."""
    rename = rename or {}
    if old.fail_closed != new.fail_closed:
        return _compare(space, old, new, [space.full], rename)
    common, left, right = _unmatched(old, new)
    moved_old, moved_new = _moved(old, new, rename)
    mode = old.fail_closed
    search = _disjoint(b for rs in (*left, *right) for status in _FAILURES
                       for b in space.failure_boxes(rs.rules, status, mode))
    if mode:
        # Fail closed, a failed metric makes its rules hold: no splitting by failure
        # kinds, so the direct refinement is cheap (and exact for mixed modes).
        region = _disjoint([*(b for rs in (*moved_old, *moved_new)
                              if (b := space.ruleset_box(rs.rules, mode)) is not None),
                            *search])
        return _compare(space, old, new, region, rename) if region else []
    values = space.value_space()
    widen = space.widen

    # Which ruleset wins, in the value space: only where a moved ruleset triggers, unless
    # rules changed, when the region where neither stage triggers is needed everywhere.
    region = [values.full] if search else _disjoint(
        b for rs in (*moved_old, *moved_new) if (b := values.ruleset_box(rs.rules)) is not None)
    out = []
    quiet: list[Box] = []  # neither stage triggers
    old_quiet: list[tuple[Box, object]] = []  # only the new one does (tagged with it)
    new_quiet: list[tuple[Box, object]] = []  # only the old one does
    before = refine(values, old, [(box, None) for box in region])
    for box, was, now in _renamed(_then(values, old, new, before), rename):
        idle = (was.status is Status.NOT_TRIGGERED, now.status is Status.NOT_TRIGGERED)
        if all(idle):
            quiet.append(widen(box))
        elif idle[0]:
            old_quiet.append((widen(box), now))
        elif idle[1]:
            new_quiet.append((widen(box), was))
        elif was != now:
            out.append((widen(box), was, now))
    # Where one stage triggers, it does whatever fails; the other ends as its failures say,
    # which is never a trigger, so every such box differs.
    out.extend((box, ending, now) for box, now, ending  # type: ignore[misc]
               in endings(space, old, old_quiet))
    out.extend((box, was, ending) for box, was, ending  # type: ignore[misc]
               in endings(space, new, new_quiet))
    # Where neither triggers, a stage's status is the worst ending of its rulesets, whatever
    # their order: rulesets with the same rules on both sides (`common`) end alike, so the
    # statuses can differ only where the changed ones end differently (a != b), and only
    # where the common ones do not already end at least as badly as the worse of a and b.
    if not search or not quiet:
        return out
    pieces = [hit for q in quiet for s in search if (hit := intersect(q, s)) is not None]
    only_old = StageModel(old.name, tuple(left), old.catalog)
    only_new = StageModel(new.name, tuple(right), new.catalog)
    candidates = []
    for box, a, z in _compare(space, only_old, only_new, pieces, {}, quiet=True):
        worse = min(_rank(a.status), _rank(z.status))
        part = [box]
        for rs in common:
            for k in range(worse + 1):
                for fb in space.failure_boxes(rs.rules, _FAILURES[k]):
                    part = subtract_all(part, fb)
            if not part:
                break
        candidates.extend(part)
    out.extend(_compare(space, old, new, coalesce(candidates), rename, quiet=True))
    return out


def _then(space: Space, old: StageModel, new: StageModel,
          before: list[tuple[Box, object, Decision]]) -> list[tuple[Box, object, Decision]]:
    """`refine(space, new, ...)` of the old stage's pieces, tagged with the old decision,
    where no ruleset ends with a failure (failures not modelled, or every metric failing
    closed).

    On a piece the old stage gives to its ruleset i, none of the old rulesets before i
    triggers and i triggers everywhere. So no new ruleset with the rules of one of those
    triggers there, and the first with i's rules triggers on all of it: only the new
    rulesets in between can split the piece, which after a small change are few."""
    first: dict[object, int] = {}
    for k, rs in enumerate(old.rulesets):
        first.setdefault(rs.rules, k)
    index = {rs.name: k for k, rs in enumerate(old.rulesets)}
    groups: dict[int, list[tuple[Box, object]]] = {}
    for box, _, was in before:
        k = index[was.ruleset] if was.ruleset is not None else len(old.rulesets)
        groups.setdefault(k, []).append((box, was))
    out: list[tuple[Box, object, Decision]] = []
    for k, pieces in groups.items():
        ends = old.rulesets[k].rules if k < len(old.rulesets) else None
        kept = []
        for rs in new.rulesets:
            if rs.rules == ends:
                kept.append(rs)
                break
            if first.get(rs.rules, k) >= k:
                kept.append(rs)
        out.extend(refine(space, StageModel(new.name, tuple(kept), new.catalog,
                                            new.fail_closed), pieces))
    return out


def _rank(status: Status) -> int:
    """Precedence of a non-triggered stage status: lower is worse (0 = timeout)."""
    return _FAILURES.index(status) if status in _FAILURES else len(_FAILURES)


def _compare(space: Space, old: StageModel, new: StageModel, pieces: list[Box],
             rename: Mapping[str, str], keep_same: bool = False, quiet: bool = False
             ) -> list[tuple[Box, Decision, Decision]]:
    split = endings if quiet else refine
    before = split(space, old, [(box, None) for box in pieces])
    after = split(space, new, [(box, d) for box, _, d in before])
    return [(box, was, now) for box, was, now in _renamed(after, rename)
            if keep_same or was != now]


def _renamed(refined: Iterable[tuple[Box, object, Decision]], rename: Mapping[str, str]
             ) -> Iterator[tuple[Box, Decision, Decision]]:
    """Refined pieces tagged with the old decision, the new one named as `rename` says."""
    for box, was, now in refined:
        assert isinstance(was, Decision)
        if now.ruleset is not None and now.ruleset in rename:
            now = Decision(now.status, rename[now.ruleset], now.action, now.choices)
        yield box, was, now
