"""docs/semantics.md, "One invocation", rule by rule, through Runtime.invoke."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from stageguard.runtime.engine import InvalidRequest, Payload, Runtime, StageNotFound
from stageguard.runtime.model import ActionType, Status
from stageguard.runtime.scorers import Scorers
from tests.runtime_helpers import build

STAGE = """project p
metric a {
  type score
}
metric b {
  type score
}
metric tone2 {
  type label
  labels ["calm", "angry"]
}
stage s {
  ruleset first {
    when a > 0.5
    override {
      choice "one"
      choice "two"
      choice "three"
    }
  }
  ruleset second {
    when b > 0.5
    passthrough
  }
  ruleset third {
    when a > 0.1
    when tone2 == "angry"
    override {
      choice "calm down"
    }
  }
}
stage empty_local {
  type local
}
"""


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    build(tmp_path / "reg", STAGE)
    runtime = Runtime(tmp_path / "reg", rng=random.Random(7), webhook_allow_hosts=["127.0.0.1"])
    yield runtime
    runtime.close()


def m(**metrics: object) -> dict[str, object]:
    return {"input": "question", "output": "answer", "metrics": metrics}


def test_rule1_paused_stage_evaluates_nothing(rt: Runtime) -> None:
    rt.pause_stage(project="p", stage_name="s")
    r = rt.invoke(m(a=0.9), "s")
    assert r.status is Status.PAUSED and r.text == "answer"
    assert r.ruleset_results == () and r.metric_results == {}
    rt.resume_stage(project="p", stage_name="s")
    assert rt.invoke(m(a=0.9), "s").status is Status.TRIGGERED


def test_rule2_no_rulesets_is_skipped(rt: Runtime) -> None:
    r = rt.invoke({"input": "only input"}, "empty_local")
    assert (r.status, r.text) == (Status.SKIPPED, "only input")


def test_rule3_each_metric_computed_once_and_shared(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    calls: Counter[str] = Counter()
    scorers = Scorers(entry_point_group=None)
    for name in ("a", "b", "tone2"):
        scorers.register(name, lambda req, n=name: calls.update([n]) or
                         {"a": 0.3, "b": 0.1, "tone2": "angry"}[n])
    with Runtime(tmp_path / "r", scorers=scorers) as rt:
        r = rt.invoke({"output": "x"}, "s")
    # `a` is needed by `first` and `third`: computed once.
    assert calls == Counter({"a": 1, "b": 1, "tone2": 1})
    assert r.status is Status.TRIGGERED and r.text == "calm down"
    assert r.metric_results["a"].source == "scorer"


def test_rule3_metrics_computed_only_when_a_rule_needs_them(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    calls: Counter[str] = Counter()
    scorers = Scorers(entry_point_group=None)
    scorers.register("tone2", lambda req: calls.update(["tone2"]) or "calm")
    with Runtime(tmp_path / "r", scorers=scorers) as rt:
        rt.invoke(m(a=0.05, b=0.0), "s")
    assert calls == Counter()  # `third` stops at its first rule (a > 0.1 is false)


def test_rule4_first_triggered_ruleset_wins(rt: Runtime) -> None:
    r = rt.invoke(m(a=0.9, b=0.9, tone2="angry"), "s")
    assert r.ruleset_statuses == (Status.TRIGGERED,) * 3
    assert r.action_result is not None and r.action_result.type is ActionType.OVERRIDE
    assert r.text in {"one", "two", "three"}
    r = rt.invoke(m(a=0.3, b=0.9, tone2="angry"), "s")
    assert r.ruleset_statuses == (Status.NOT_TRIGGERED, Status.TRIGGERED, Status.TRIGGERED)
    assert r.text == "answer"  # passthrough of `second` wins over `third`'s override
    assert r.action_result.type is ActionType.PASSTHROUGH  # type: ignore[union-attr]


def test_rule4_ruleset_is_a_conjunction(rt: Runtime) -> None:
    r = rt.invoke(m(a=0.3, b=0.0, tone2="calm"), "s")
    assert r.status is Status.NOT_TRIGGERED
    assert r.ruleset_results[2].rule_results[0].status == "triggered"
    assert r.ruleset_results[2].rule_results[1].status == "not_triggered"


def test_rule5_text_when_not_triggered_is_output_else_input(rt: Runtime) -> None:
    assert rt.invoke(m(a=0, b=0, tone2="calm"), "s").text == "answer"
    r = rt.invoke({"input": "q", "output": "", "metrics": {"a": 0, "b": 0, "tone2": "calm"}}, "s")
    assert r.text == "q"
    with pytest.raises(InvalidRequest):
        rt.invoke({"input": "", "output": ""}, "s")


def test_rule5_override_choice_is_uniform_and_replayable(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    picks = []
    for _ in range(2):
        with Runtime(tmp_path / "r", rng=random.Random(42)) as rt:
            picks.append([rt.invoke(m(a=0.9), "s").text for _ in range(3000)])
    assert picks[0] == picks[1]  # same seed, same choices
    counts = Counter(picks[0])
    assert set(counts) == {"one", "two", "three"}
    assert all(850 < c < 1150 for c in counts.values()), counts  # ~1000 each


def test_rule5_a_lone_choice_is_the_text_and_draws_nothing(rt: Runtime) -> None:
    state = rt.random.getstate()
    first = rt.invoke(m(a=0.3, b=0.1, tone2="angry"), "s")
    again = rt.invoke(m(a=0.3, b=0.1, tone2="angry"), "s")
    assert first.text == again.text == "calm down"
    assert first.action_result == again.action_result
    assert first.action_result is not None and first.action_result.value == "calm down"
    assert first.action_result.type is ActionType.OVERRIDE
    assert rt.random.getstate() == state  # the choices of other rulesets replay as before
    drawn = rt.invoke(m(a=0.9), "s")
    assert drawn.text in ("one", "two", "three") and rt.random.getstate() != state


def test_rule6_failed_scorer_fails_its_rulesets_never_the_caller(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    scorers = Scorers(entry_point_group=None)

    def boom(req: object) -> float:
        raise RuntimeError("model server down")

    scorers.register("a", boom)
    with Runtime(tmp_path / "r", scorers=scorers) as rt:
        r = rt.invoke({"output": "x", "metrics": {"b": 0.0}}, "s")
    assert r.ruleset_statuses == (Status.FAILED, Status.NOT_TRIGGERED, Status.FAILED)
    assert r.status is Status.FAILED and r.text == "x"
    assert r.metric_results["a"].status == "failed"
    assert "model server down" in (r.metric_results["a"].error or "")


def test_rule6_slow_scorer_times_out_and_the_decision_returns_on_time(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    scorers = Scorers(entry_point_group=None)
    release = threading.Event()
    scorers.register("a", lambda req: release.wait(5) and 0.9)
    with Runtime(tmp_path / "r", scorers=scorers) as rt:
        started = time.perf_counter()
        r = rt.invoke({"output": "x", "metrics": {"b": 0.9}}, "s", timeout=0.2)
        elapsed = time.perf_counter() - started
        release.set()
    assert elapsed < 1.0
    # The third ruleset comes after the winner and needs the scored `a`: the decision does
    # not wait for it (docs/semantics.md, "Scored metrics").
    assert r.ruleset_statuses == (Status.TIMEOUT, Status.TRIGGERED, Status.SKIPPED)
    assert r.status is Status.TRIGGERED  # a triggered ruleset outranks timeouts
    assert [x.status for x in r.ruleset_results[2].rule_results] == ["skipped", "skipped"]


def test_rule6_missing_metric_is_an_error_naming_it(rt: Runtime) -> None:
    r = rt.invoke(m(b=0.0), "s")
    assert r.ruleset_statuses == (Status.ERROR, Status.NOT_TRIGGERED, Status.ERROR)
    assert r.status is Status.ERROR
    assert "`a`" in (r.metric_results["a"].error or "")


def test_rule6_stage_status_order_timeout_failed_error(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE)
    scorers = Scorers(entry_point_group=None)
    scorers.register("b", lambda req: (_ for _ in ()).throw(ValueError("bad")))
    with Runtime(tmp_path / "r", scorers=scorers) as rt:
        r = rt.invoke({"output": "x"}, "s")  # a: no source (error), b: raises (failed)
    assert r.ruleset_statuses == (Status.ERROR, Status.FAILED, Status.ERROR)
    assert r.status is Status.FAILED


def test_fail_closed_stage_treats_metric_failures_as_triggering(tmp_path: Path) -> None:
    build(tmp_path / "r", STAGE.replace("stage s {", "stage s {\n  fail closed"))
    with Runtime(tmp_path / "r", rng=random.Random(1)) as rt:
        r = rt.invoke({"output": "x", "metrics": {"b": 0.0, "tone2": "calm"}}, "s")
        assert r.ruleset_statuses[0] is Status.TRIGGERED  # `a` has no source
        assert r.text in {"one", "two", "three"}
        assert r.ruleset_results[0].rule_results[0].status == "error"
        # A rule that is definitely false still keeps its ruleset from triggering.
        assert r.ruleset_statuses[2] is Status.NOT_TRIGGERED


def test_rule7_wire_status_is_uppercase_with_rich_fields(rt: Runtime) -> None:
    r = rt.invoke(m(a=0.9), "s", metadata={"user": "u1"}, headers={"x-req": "9"})
    d = r.to_dict()
    assert d["status"] == "TRIGGERED"
    assert d["metadata"] == {"user": "u1"} and d["headers"] == {"x-req": "9"}
    assert d["stage_metadata"]["stage_name"] == "s" and d["stage_metadata"]["stage_version"] == 1
    assert d["ruleset_results"][0]["status"] == "TRIGGERED"
    assert d["ruleset_results"][0]["rule_results"][0]["value"] == 0.9
    assert d["action_result"]["type"] == "OVERRIDE"
    tm = d["trace_metadata"]
    assert tm["response_at"] >= tm["received_at"] and tm["execution_time"] >= 0
    import uuid
    assert uuid.UUID(tm["id"]).version == 4
    assert r.to_json() and r.model_dump() == d


def test_payload_metrics_come_first_and_aliases_resolve(rt: Runtime) -> None:
    r = rt.invoke(Payload(output="x", metrics={"a": 0.9}), "s")
    assert r.metric_results["a"].source == "payload"
    with pytest.raises(InvalidRequest, match="metric 'a'"):
        rt.invoke(m(a={"nested": 1}), "s")


def test_label_lists_are_tuples_of_plain_strings_or_refused(tmp_path: Path) -> None:
    """A list metric becomes a tuple of plain `str` (a str subclass, as a str enum, too) and
    decides as that tuple would; a list holding anything but labels is refused, naming
    the metric."""
    import enum

    class Kind(enum.StrEnum):
        SSN = "ssn"

    build(tmp_path / "r", "project p\nstage s {\n  ruleset leak {\n"
                          "    when output_pii any [\"ssn\"]\n    passthrough\n  }\n}\n")
    with Runtime(tmp_path / "r") as rt:
        plain = rt.invoke(m(output_pii=["email", "ssn"]), "s")
        subclass = rt.invoke(m(output_pii=["email", Kind.SSN]), "s")
        for r in (plain, subclass):
            assert r.status is Status.TRIGGERED
            value = r.metric_values["output_pii"]  # type: ignore[index]
            assert value == ("email", "ssn") and all(type(v) is str for v in value)
        for bad in (["ssn", 1], [None], [["ssn"]]):
            with pytest.raises(InvalidRequest, match="metric 'output_pii'"):
                rt.invoke(m(output_pii=bad), "s")


def test_unknown_stage_and_bad_version(rt: Runtime) -> None:
    with pytest.raises(StageNotFound):
        rt.invoke(m(), "nope")
    with pytest.raises(StageNotFound):
        rt.invoke(m(), "s", version=5)


def test_builtin_pii_scorer_on_realistic_text(tmp_path: Path) -> None:
    build(tmp_path / "r", """project p
stage out {
  ruleset leak {
    when output_pii any ["ssn", "credit_card_info"]
    override {
      choice "[redacted]"
    }
  }
}
""")
    with Runtime(tmp_path / "r") as rt:
        leak = rt.invoke({"output": "Sure! The card on file is 4111-1111-1111-1111."}, "out")
        clean = rt.invoke({"output": "Your order ships on Tuesday."}, "out")
    assert (leak.status, leak.text) == (Status.TRIGGERED, "[redacted]")
    assert leak.metric_results["output_pii"].value == ("credit_card_info",)
    assert clean.status is Status.NOT_TRIGGERED


# ---- limits a long-running service needs ------------------------------------------------

def test_pinned_and_local_caches_are_bounded_and_stay_correct(tmp_path: Path) -> None:
    rt = Runtime(tmp_path, cache_size=2, deliver_webhooks=False)
    rt.create_stage("s", project="p", prioritized_rulesets=[
        {"rules": [{"metric": "output_toxicity", "operator": "gt", "target_value": 0.0}],
         "action": {"type": "OVERRIDE", "choices": ["v1"]}}])
    for n in range(2, 6):
        rt.update_stage(stage_name="s", prioritized_rulesets=[
            {"rules": [{"metric": "output_toxicity", "operator": "gt", "target_value": 0.0}],
             "action": {"type": "OVERRIDE", "choices": [f"v{n}"]}}])
    payload = {"output": "x", "metrics": {"output_toxicity": 0.5}}
    for _ in range(2):
        for version in range(1, 6):
            assert rt.invoke(payload, "s", version=version).text == f"v{version}"
    assert len(rt._pinned) == 2
    rt.create_stage("l", project="p", type="local")
    for n in range(5):
        rules = [{"rules": [{"metric": "output_toxicity", "operator": "gt",
                             "target_value": n / 10}]}]
        first = rt.invoke(payload, "l", rulesets=rules).stage_metadata.stage_version
        assert rt.invoke(payload, "l", rulesets=rules).stage_metadata.stage_version == first
    assert len(rt._local) == 2
    rt.close()


def test_create_stage_accepts_only_names_that_are_one_path_part(tmp_path: Path) -> None:
    rt = Runtime(tmp_path / "reg")
    for project, name in (("../evil", "s"), ("p", "../../s"), ("p", "a/b"), ("", "s"),
                          ("p", ".."), ("p", "a\\b"), ("p", " s"), ("p", "s\n"), (".p", "s")):
        with pytest.raises(InvalidRequest, match="not a name"):
            rt.create_stage(name, project=project)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "s").exists()
    # Galileo's names are free text: "My stage" is one.
    assert rt.create_stage("My stage", project="My project").name == "My stage"
    assert (tmp_path / "reg" / "My project" / "My stage").is_dir()
    with pytest.raises(InvalidRequest):
        rt.create_stage("s", project="p", fail_mode="sideways")


def test_webhook_urls_are_checked_when_a_stage_is_accepted(tmp_path: Path) -> None:
    rt = Runtime(tmp_path, webhook_allow_hosts=["hooks.internal"])

    def rules(url: str) -> list[dict]:
        return [{"rules": [{"metric": "output_toxicity", "operator": "gt", "target_value": 0.5}],
                 "action": {"subscriptions": [{"url": url}]}}]

    with pytest.raises(InvalidRequest, match=r"evil\.example"):
        rt.create_stage("s", project="p", prioritized_rulesets=rules("https://evil.example/"))
    assert rt.get_stage(stage_name="s") is None
    rt.create_stage("s", project="p", prioritized_rulesets=rules("https://HOOKS.internal/a"))
    rt.create_stage("l", project="p", type="local")
    with pytest.raises(InvalidRequest, match="not allowed"):
        rt.invoke({"output": "x"}, "l", rulesets=rules("https://evil.example/"))


def test_scorers_false_refuses_before_doing_anything(tmp_path: Path) -> None:
    from stageguard.runtime.engine import NeedsScorer

    build(tmp_path, "project p\nstage s {\n  ruleset r {\n    when output_pii contains "
                    "\"ssn\"\n  }\n}\n")
    calls = []
    scorers = Scorers()
    scorers.register("output_pii", lambda req: calls.append(req) or ["ssn"])
    rt = Runtime(tmp_path, scorers=scorers)
    with pytest.raises(NeedsScorer):
        rt.invoke({"output": "x"}, "s", scorers=False)
    assert calls == []
    decided = rt.invoke({"output": "x", "metrics": {"output_pii": ["ssn"]}}, "s", scorers=False)
    assert decided.status is Status.TRIGGERED
    assert rt.invoke({"output": "x"}, "s").status is Status.TRIGGERED and len(calls) == 1


def test_a_large_stage_serves_at_once_and_gets_generated_code_in_the_background() -> None:
    from stageguard.compiler.pipeline import compile_text
    from stageguard.runtime.evaluate import CODEGEN_LIMIT, reference_outcomes, values_getter
    from stageguard.runtime.served import load_model

    n = CODEGEN_LIMIT + 44
    text = "project p\nstage big {\n  type central\n" + "".join(
        f"  ruleset r{i} {{\n    when input_toxicity > {i / n:.4f}\n"
        f"    when output_toxicity < {1 - i / n:.4f}\n    passthrough\n  }}\n"
        for i in range(n)) + "}\n"
    artifact = compile_text(text, "big.sg").artifacts[0].to_artifact()
    stage = load_model(artifact)
    closures = stage.decide
    assert stage.decide_precomputed is None  # until its code is compiled
    assert stage.compiled.wait(30)
    assert stage.decide is not closures and stage.decide_precomputed is not None
    for a, b in ((0.5, 0.4), (0.99, 0.01), (0.0, 1.0)):
        values = {"input_toxicity": a, "output_toxicity": b}
        want = reference_outcomes(artifact.rulesets, values_getter(values), False)
        assert stage.decide_precomputed(dict(values)) == want
        assert stage.decide(dict(values), lambda m: None) == want == closures(dict(values),
                                                                             lambda m: None)
