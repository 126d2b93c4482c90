"""Payload strategies drawn from the exact analysis: a region of metric space is a list of
disjoint boxes, a box is one set of atoms per metric, an atom is a class of values every
rule treats alike; so a payload is drawn by picking a box, an atom per metric, and a value
inside each atom."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

from hypothesis import strategies as st

from stageguard.compiler.analysis import (
    Atom,
    Box,
    Dimension,
    Space,
    StageModel,
    partition,
    subtract,
)
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.model import Artifact, MetricType
from stageguard.runtime.registry import load_artifact

StageLike = StageModel | Artifact | str | os.PathLike[str]


def as_stage(stage: StageLike) -> StageModel:
    """A StageModel from a model, an Artifact, or the path of an artifact file."""
    if isinstance(stage, StageModel):
        return stage
    if isinstance(stage, Artifact):
        return StageModel.of(stage)
    return StageModel.of(load_artifact(stage))


def payloads(stage: StageLike, *, triggering: str | None = None,
             not_triggering: str | None = None, winning: str | None = None,
             failures: bool = False) -> st.SearchStrategy[dict[str, object]]:
    """Payload metric values (`{metric: value}`; label lists as lists; a missing metric as
    None; with `failures=True`, a `Failure` for a metric whose scorer fails).

    `triggering=NAME`: payloads on which ruleset NAME triggers (all its rules hold);
    `not_triggering=NAME`: payloads on which it does not; `winning=NAME`: payloads it
    decides (it triggers and no earlier ruleset does). At most one of the three."""
    model = as_stage(stage)
    if sum(x is not None for x in (triggering, not_triggering, winning)) > 1:
        raise ValueError("give at most one of triggering, not_triggering, winning")
    space = Space(model.catalog, model.rulesets, failures)
    region = _region(space, model, triggering, not_triggering, winning)
    if not region:
        wanted = triggering or not_triggering or winning
        raise ValueError(f"no payload gives ruleset `{wanted}` that fate: the analysis "
                         "proves the region empty (see `stageguard lint`)")
    return st.sampled_from(region).flatmap(lambda box: _in_box(space, box))


def _ruleset(model: StageModel, name: str) -> object:
    for rs in model.rulesets:
        if rs.name == name:
            return rs
    raise ValueError(f"stage `{model.name}` has no ruleset `{name}` (it has "
                     f"{', '.join(r.name for r in model.rulesets)})")


def _region(space: Space, model: StageModel, triggering: str | None,
            not_triggering: str | None, winning: str | None) -> list[Box]:
    if winning is not None:
        _ruleset(model, winning)
        return [box for box, d in partition(space, model) if d.ruleset == winning]
    name = triggering or not_triggering
    if name is None:
        return [space.full]
    rs = _ruleset(model, name)
    box = space.ruleset_box(rs.rules, model.fail_closed)  # type: ignore[attr-defined]
    if triggering is not None:
        return [box] if box is not None else []
    return [space.full] if box is None else subtract(space.full, box)


def _in_box(space: Space, box: Box) -> st.SearchStrategy[dict[str, object]]:
    parts: dict[str, st.SearchStrategy[object]] = {}
    for dim, mask in zip(space.dims, box, strict=True):
        atoms = [a for i, a in enumerate(dim.atoms) if mask >> i & 1]
        parts[dim.metric] = st.sampled_from(atoms).flatmap(partial(_in_atom, dim))
    return st.fixed_dictionaries(parts)


def _in_atom(dim: Dimension, atom: Atom) -> st.SearchStrategy[object]:
    value = atom.value
    if value is None or isinstance(value, Failure):
        return st.just(value)
    if dim.kind in (MetricType.SCORE, MetricType.NUMBER):
        if atom.is_nan or (atom.lo_closed and atom.hi_closed):  # NaN, a threshold, a bound
            return st.just(value)
        return st.floats(atom.lo, atom.hi, exclude_min=atom.lo is not None,
                         exclude_max=atom.hi is not None, allow_nan=False,
                         allow_infinity=False).map(lambda v: v + 0.0)
    if dim.kind is MetricType.LABEL:
        if value != dim.other:
            return st.just(value)
        return _other_labels(dim).map(lambda labels: labels[0])
    return _label_list(dim, value)  # type: ignore[arg-type]


def _other_labels(dim: Dimension) -> st.SearchStrategy[list[str]]:
    """One or more labels no rule names: from the vocabulary, or fresh strings."""
    named = {x for c in dim.classes for x in c} | {
        a.value for a in dim.atoms if isinstance(a.value, str) and a.value != dim.other}
    vocabulary = dim.spec.labels if dim.spec is not None else None
    fresh = st.text(min_size=1, max_size=8).filter(lambda t: t not in named)
    if vocabulary is not None:
        spare = [v for v in vocabulary if v not in named]
        # The runtime accepts labels outside the vocabulary too, and rules cannot tell them
        # from a spare one: both are "another label".
        # Mostly the vocabulary's: they are what a team's scorers produce.
        pool = st.one_of(st.sampled_from(spare), st.sampled_from(spare),
                         st.sampled_from(spare), fresh) if spare else \
            fresh.filter(lambda t: t not in vocabulary)
        return st.lists(pool, min_size=1, max_size=3, unique=True)
    return st.lists(fresh, min_size=1, max_size=2, unique=True)


def _label_list(dim: Dimension, representative: Sequence[str]) -> st.SearchStrategy[object]:
    """Any list in the same class as the atom's representative: per class of labels, none,
    some but not all, or all of them, as the representative has; plus unnamed labels when
    it has one."""
    chosen = set(representative)
    named = {x for c in dim.classes for x in c}
    pieces: list[st.SearchStrategy[list[str]]] = []
    for cls in dim.classes:
        have = [x for x in cls if x in chosen]
        if not have:
            continue
        if len(have) == len(cls):
            pieces.append(st.just(list(cls)))
        else:  # some but not all: any non-empty proper subset
            pieces.append(st.lists(st.sampled_from(cls), min_size=1, max_size=len(cls) - 1,
                                   unique=True))
    if chosen - named:
        pieces.append(_other_labels(dim))
    return st.tuples(*pieces).flatmap(
        lambda groups: st.permutations([x for g in groups for x in g]))
