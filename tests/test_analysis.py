"""The exact analysis against the runtime's reference interpreter."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.compiler.analysis import (
    AnalysisLimit,
    Space,
    StageModel,
    decide,
    endings,
    longest_increasing,
    partition,
    subtract,
)
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.model import MetricSpec, MetricType, Operator, RulesetSpec
from tests.profiles import examples
from tests.strategies import payloads, stage_models

SETTINGS = examples(2,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(stage_models(), st.booleans(), st.data())
def test_partition_is_exact(stage: StageModel, failures: bool, data: st.DataObject) -> None:
    space = Space(stage.catalog, stage.rulesets, failures)
    parts = partition(space, stage)
    # Every box's witness is decided as the box claims ...
    for box, decision in parts:
        assert decide(stage, space.witness(box).values) == decision
    # ... and every payload lies in exactly one box, whose decision is the payload's.
    for payload in data.draw(st.lists(payloads(stage.catalog, failures), min_size=1,
                                      max_size=20)):
        holding = [d for box, d in parts if space.contains(box, payload)]
        assert holding == [decide(stage, payload)], payload


@SETTINGS
@given(stage_models(), st.data())
def test_endings_decide_as_the_stage_where_nothing_triggers(
        stage: StageModel, data: st.DataObject) -> None:
    # The regions where no ruleset triggers, as the partition finds them, merged into one
    # tag: `endings` must split them by status exactly as the reference decides.
    space = Space(stage.catalog, stage.rulesets, failures=True)
    quiet = [(box, None) for box, d in partition(space, stage) if d.ruleset is None]
    split = endings(space, stage, quiet)
    for box, _, decision in split:
        assert decide(stage, space.witness(box).values) == decision
    for payload in data.draw(st.lists(payloads(stage.catalog, True), min_size=1,
                                      max_size=20)):
        if any(space.contains(box, payload) for box, _ in quiet):
            holding = [d for box, _, d in split if space.contains(box, payload)]
            assert holding == [decide(stage, payload)], payload
        else:
            assert not any(space.contains(box, payload) for box, _, _ in split)


@examples(3)
@given(st.lists(st.integers(0, 30), max_size=40))
def test_increasing_finds_a_longest_increasing_subsequence(seq: list[int]) -> None:
    picked = longest_increasing(seq)
    assert picked == sorted(set(picked))
    assert all(seq[a] < seq[b] for a, b in itertools.pairwise(picked))
    # The longest length, by the quadratic recurrence.
    best = [1] * len(seq)
    for j in range(len(seq)):
        for i in range(j):
            if seq[i] < seq[j]:
                best[j] = max(best[j], best[i] + 1)
    assert len(picked) == max(best, default=0)


def test_witness_numbers_sit_next_to_the_thresholds() -> None:
    spec = MetricSpec(name="words", type=MetricType.NUMBER, minimum=0, maximum=20000)
    rs = RulesetSpec.model_validate({"name": "r", "rules": [
        {"metric": "words", "operator": "gt", "target_value": 40}],
        "action": {"type": "PASSTHROUGH"}})
    space = Space({"words": spec}, [rs])
    box = space.ruleset_box(rs.rules)
    assert box is not None
    assert space.witness(box).values == {"words": 41.0}
    assert space.describe(box) == "words > 40"
    (rest,) = subtract(space.full, box)
    # NaN is a value the runtime accepts, and `> 40` is false for it.
    assert space.describe(rest) == "(words <= 40 or words is NaN or words is missing)"


def test_label_lists_are_split_only_as_finely_as_the_rules_need() -> None:
    spec = MetricSpec(name="pii", type=MetricType.LABELS, labels=tuple("abcdefghijkl"))
    rs = RulesetSpec.model_validate({"name": "r", "rules": [
        {"metric": "pii", "operator": "any", "target_value": ["a", "b", "c"]}],
        "action": {"type": "PASSTHROUGH"}})
    dim = Space({"pii": spec}, [rs]).dims[0]
    # one class {a,b,c} in three states (none, some, all) x another label or not, + missing
    assert len(dim.atoms) == 3 * 2 + 1
    assert dim.describe(dim.sat(rs.rules[0])) == 'pii has some of "a", "b", "c"'


def test_too_many_label_classes_is_a_clear_limit() -> None:
    labels = tuple(f"l{i}" for i in range(20))
    spec = MetricSpec(name="tags", type=MetricType.LABELS, labels=labels)
    rs = [RulesetSpec.model_validate({"name": f"r{i}", "rules": [
        {"metric": "tags", "operator": "contains", "target_value": label}],
        "action": {"type": "PASSTHROUGH"}}) for i, label in enumerate(labels)]
    with pytest.raises(AnalysisLimit, match="tags"):
        Space({"tags": spec}, rs)


def test_operators_cover_the_truth_table() -> None:
    # Every operator the language has is analysed through rule_holds, so none is skipped.
    assert {op.value for op in Operator} == {"gt", "lt", "gte", "lte", "eq", "neq",
                                             "contains", "all", "any", "empty", "not_empty"}


def _state_of(present: set[str], labels: list[str]) -> str:
    n = len(present & set(labels))
    return "none" if n == 0 else "all" if n == len(labels) else "some"


def _in_data(data: dict[str, object], payload: dict[str, object]) -> bool:
    """Whether a payload lies in a box given as data (docs/schemas/region.schema.json),
    read without the analysis: the data must say exactly what the box holds."""
    for metric, c in data.items():
        assert isinstance(c, dict)
        v = payload.get(metric)
        if isinstance(v, Failure):
            ok = v.status.value in c["failures"]
        elif v is None:
            ok = c["missing"]
        elif c["kind"] in ("score", "number"):
            x = float(v)  # type: ignore[arg-type]
            ok = c["nan"] if x != x else any(
                (i["lo"] is None or x > i["lo"] or (x == i["lo"] and i["lo_closed"]))
                and (i["hi"] is None or x < i["hi"] or (x == i["hi"] and i["hi_closed"]))
                for i in c["intervals"])
        elif c["kind"] == "label":
            ok = v in c["labels"] or (c["another_label"] and v not in c["named"])
        else:
            present = set(v)  # type: ignore[arg-type]
            named = {x for p in c.get("any_of", [c]) for k in p["classes"] for x in k["labels"]}
            ok = any(all(_state_of(present, k["labels"]) in k["present"]
                         for k in p["classes"])
                     and bool(present - named) in p["another_label"]
                     for p in c.get("any_of", [c]))
        if not ok:
            return False
    return True


@SETTINGS
@given(stage_models(), st.booleans(), st.data())
def test_region_data_is_exact(stage: StageModel, failures: bool, data: st.DataObject) -> None:
    """Every box as data holds exactly the payloads the box holds: out-of-range numbers,
    NaN, labels outside the vocabulary and failures included."""
    space = Space(stage.catalog, stage.rulesets, failures)
    boxes = [box for box, _ in partition(space, stage)]
    for payload in data.draw(st.lists(payloads(stage.catalog, failures), min_size=1,
                                      max_size=20)):
        for box in boxes:
            assert space.contains(box, payload) == _in_data(space.box_data(box), payload)
