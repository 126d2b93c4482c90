"""stageguard.testing.payloads: every drawn payload has the fate it was drawn for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import find as _find
from hypothesis import strategies as st

from stageguard.compiler.analysis import StageModel, decide
from stageguard.compiler.pipeline import compile_paths
from stageguard.runtime.evaluate import Failure, normalise_value, ruleset_outcome
from stageguard.runtime.model import Status
from stageguard.testing import payloads, policies, stages
from tests.conftest import POLICIES
from tests.profiles import examples

SETTINGS = examples(1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _triggers(stage: StageModel, name: str, values: dict[str, object]) -> bool:
    rs = next(r for r in stage.rulesets if r.name == name)
    def get(m: str) -> object:
        v = values.get(m)
        return v if isinstance(v, Failure) else normalise_value(v)

    status, _ = ruleset_outcome(rs.rules, get, stage.fail_closed)
    return status is Status.TRIGGERED


@SETTINGS
@given(stages(), st.data())
def test_fates_are_exact(stage: StageModel, data: st.DataObject) -> None:
    for rs in stage.rulesets:
        for fate in ("triggering", "not_triggering", "winning"):
            try:
                strategy = payloads(stage, **{fate: rs.name}, failures=True)
            except ValueError as exc:  # the analysis proved the fate impossible
                assert "proves the region empty" in str(exc)
                continue
            for _ in range(3):
                p = data.draw(strategy)
                assert set(p) == set(stage.catalog)
                if fate == "triggering":
                    assert _triggers(stage, rs.name, p)
                elif fate == "not_triggering":
                    assert not _triggers(stage, rs.name, p)
                else:
                    assert decide(stage, p).ruleset == rs.name


@SETTINGS
@given(policies())
def test_generated_policies_are_consistent(policy: object) -> None:
    assert policy.artifact.rulesets == policy.stage.rulesets  # type: ignore[attr-defined]
    assert policy.file.stages[0].name.value == policy.stage.name  # type: ignore[attr-defined]


def _output_guard() -> object:
    compilation = compile_paths([str(POLICIES)])
    return next(d.to_artifact() for d in compilation.artifacts
                if d.to_artifact().stage.name == "output_guard")


def find(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool]) -> Any:
    """An example satisfying `condition`: reachability is the point, so the example is
    not shrunk (shrinking a whole payload took seconds per call), and the draws are
    derandomized, as in CI."""
    return _find(strategy, condition, settings=settings(
        phases=[Phase.generate], derandomize=True, database=None, max_examples=1000))


def test_boundaries_labels_and_missing_values_are_reachable() -> None:
    stage = _output_guard()
    strategy = payloads(stage)  # type: ignore[arg-type]
    assert find(strategy, lambda p: p["output_toxicity"] == 0.7)["output_toxicity"] == 0.7
    assert find(strategy, lambda p: p["answer_words"] == 40)
    assert find(strategy, lambda p: p["output_pii"] is None)
    assert find(strategy, lambda p: p["output_tone"] == "fear")
    assert find(strategy, lambda p: isinstance(p["output_pii"], list)
                and "address" in p["output_pii"])  # a label no rule names
    failing = payloads(stage, failures=True)  # type: ignore[arg-type]
    assert find(failing, lambda p: isinstance(p["context_adherence"], Failure))


def test_artifact_files_and_bad_arguments(tmp_path: Path) -> None:
    compilation = compile_paths([str(POLICIES)])
    doc = next(d for d in compilation.artifacts if d.to_artifact().stage.name == "input_guard")
    path = tmp_path / "input_guard.json"
    path.write_bytes(doc.to_bytes(1))
    p = find(payloads(str(path), winning="prompt_injection"), lambda p: True)
    assert p["prompt_injection"]
    with pytest.raises(ValueError, match="has no ruleset `nope`"):
        payloads(str(path), triggering="nope")
    with pytest.raises(ValueError, match="at most one"):
        payloads(str(path), triggering="prompt_injection", winning="prompt_injection")
