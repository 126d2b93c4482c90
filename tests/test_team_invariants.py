"""A team's own invariants for the output_guard stage, stated with stageguard.testing.

This file is the worked example of docs/testing.md (a test keeps the two identical)."""

from hypothesis import given

from stageguard.compiler.analysis import StageModel, decide
from stageguard.compiler.pipeline import compile_paths
from stageguard.runtime.model import ActionType, Status
from stageguard.testing import payloads

# Compile the policies as CI does; a registry artifact path works too:
# payloads("registry/support_bot/output_guard/v3.json").
COMPILED = compile_paths(["policies"])
STAGE = next(StageModel.of(a) for a in (d.to_artifact() for d in COMPILED.artifacts)
             if a.stage.name == "output_guard")


@given(payloads(STAGE, triggering="pii_leak"))
def test_a_leaked_ssn_is_never_shown(metrics: dict[str, object]) -> None:
    # Every payload on which pii_leak triggers is overridden, whatever else it scores.
    decision = decide(STAGE, metrics)
    assert decision.status is Status.TRIGGERED
    assert decision.action is ActionType.OVERRIDE


@given(payloads(STAGE, not_triggering="toxic_answer", failures=True))
def test_calm_answers_pass_unless_another_guard_objects(metrics: dict[str, object]) -> None:
    # Payloads below the toxicity bar are never answered with toxic_answer's text.
    assert decide(STAGE, metrics).ruleset != "toxic_answer"


def test_this_file_is_the_documented_example() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    mine = Path(__file__).read_text(encoding="utf-8")
    assert mine.split("\n\n\ndef test_this_file")[0] in doc
