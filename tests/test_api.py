"""The compiler-side API: Galileo's function names, rulesets as stageguard source."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageguard import api
from stageguard.api import PolicyError, Protect, rulesets_from_source
from stageguard.runtime.model import MetricSpec, MetricType, Status

RULES = '''
ruleset toxic {
  when input_toxicity > 0.8
  override {
    choice "Let's keep it civil."
  }
}
'''


def test_rulesets_from_source_compile_like_files() -> None:
    (spec,) = rulesets_from_source(RULES)
    assert spec.name == "toxic" and spec.rules[0].target_value == 0.8


def test_source_errors_point_into_the_given_text() -> None:
    with pytest.raises(PolicyError) as info:
        rulesets_from_source("ruleset a {\n  when input_toxicty > 0.8\n}\n")
    (d,) = info.value.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("SG0201", 2, 8)
    assert "--> <rulesets>:2:8" in str(info.value)
    assert "2 |   when input_toxicty > 0.8" in str(info.value)


def test_custom_metrics_of_the_stage_are_known() -> None:
    words = MetricSpec(name="words", type=MetricType.NUMBER, minimum=0)
    (spec,) = rulesets_from_source("ruleset a {\n  when words > 5\n}\n", [words])
    assert spec.rules[0].metric == "words"
    with pytest.raises(PolicyError):
        rulesets_from_source("ruleset a {\n  when words > -5\n}\n", [words])


def test_module_functions_drive_a_registry(tmp_path: Path) -> None:
    api.configure(tmp_path / "reg", deliver_webhooks=False)
    try:
        info = api.create_stage("chat_in", project="shop", prioritized_rulesets=RULES)
        assert info.version == 1
        assert api.get_stage(project="shop", stage_name="chat_in") == info
        r = api.invoke({"input": "you fool", "metrics": {"input_toxicity": 0.9}},
                       stage_name="chat_in")
        assert (r.status, r.text) == (Status.TRIGGERED, "Let's keep it civil.")
        updated = api.update_stage(project="shop", stage_name="chat_in",
                                   prioritized_rulesets=RULES.replace("0.8", "0.95"))
        assert updated.version == 2
        assert api.invoke({"input": "you fool", "metrics": {"input_toxicity": 0.9}},
                          stage_name="chat_in").status is Status.NOT_TRIGGERED
        assert api.pause_stage(project="shop", stage_name="chat_in").paused
        assert not api.resume_stage(project="shop", stage_name="chat_in").paused
    finally:
        api._default.runtime.close()  # type: ignore[union-attr]
        api._default = None


def test_local_stage_with_source_rulesets(tmp_path: Path) -> None:
    with Protect(tmp_path / "reg").runtime as rt:
        protect = Protect(runtime=rt)
        protect.create_stage("tools", project="shop", type="local")
        r = protect.invoke({"input": "x", "metrics": {"input_toxicity": 0.99}},
                           stage_name="tools", prioritized_rulesets=RULES)
        # The local stage's own version: invocation rulesets are not recorded by default.
        assert r.status is Status.TRIGGERED and r.stage_metadata.stage_version == 1
