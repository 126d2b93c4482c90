"""The language server's descriptions, as plain functions (no protocol needed)."""

from __future__ import annotations


def test_a_metrics_budget_is_part_of_its_description() -> None:
    from stageguard.lsp.features import describe_metric
    from stageguard.runtime.model import FailMode, HttpScorerSpec, MetricSpec, MetricType

    spec = MetricSpec(name="brand", type=MetricType.SCORE, minimum=0, maximum=1, timeout=0.25,
                      fail_mode=FailMode.CLOSED,
                      scorer=HttpScorerSpec(url="http://models.internal/score"))
    text = describe_metric(spec, "brand", None)
    assert "budget: timeout 0.25s, fails closed, scored by `http://models.internal/score`" \
        in text
    plain = describe_metric(spec.model_copy(update={"timeout": None, "fail_mode": None,
                                                    "scorer": None}), "brand", None)
    assert "budget" not in plain
