"""The metric scheduler (runtime/scheduling.py) against the reference interpreter: for every
stage, payload and scorer outcome (a value after a random latency, an exception, a bad value,
a hang past the metric's budget, no scorer at all), on threads and on an event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.runtime.engine import Runtime
from stageguard.runtime.evaluate import (
    FailClosed,
    Failure,
    Outcome,
    Outcomes,
    normalise_value,
    outcome_status,
    outcome_stop,
    outcomes_status,
    reference_outcomes,
    values_getter,
)
from stageguard.runtime.model import (
    Action,
    ActionType,
    MetricSpec,
    MetricType,
    Operator,
    RulesetSpec,
    RuleSpec,
    Status,
    Subscription,
)
from stageguard.runtime.resolution import Resolution, ScorerPools, async_entry
from stageguard.runtime.response import Response, StageMetadata, StageResults, TraceMetadata
from stageguard.runtime.scheduling import ScorePlan, decide_on_loop, decide_with_threads
from stageguard.runtime.scorers import ScoreRequest, Scorers
from tests.profiles import examples
from tests.runtime_helpers import build
from tests.strategies import METRICS, fail_modes, metric_values, ruleset_lists

BUDGET = 0.03  # seconds a hanging scorer's metric may take
plain_values = metric_values.filter(lambda v: v != "absent" and not isinstance(v, Failure))


@dataclass(frozen=True)
class Source:
    kind: str  # given | value | raises | bad | hangs | none
    value: object = None
    latency: float = 0.0
    run_async: bool = False


sources = st.one_of(
    st.builds(Source, st.just("given"), plain_values),
    st.builds(Source, st.just("value"), plain_values, st.floats(0, 0.003), st.booleans()),
    st.builds(Source, st.just("raises"), st.none(), st.floats(0, 0.003), st.booleans()),
    st.builds(Source, st.just("bad"), st.just(object()), st.floats(0, 0.002), st.booleans()),
    st.builds(Source, st.just("hangs"), st.none(), st.just(0.0), st.booleans()),
    st.builds(Source, st.just("none")),
)


def _expected_value(source: Source) -> object:
    if source.kind in ("given", "value"):
        return normalise_value(source.value)
    if source.kind in ("raises", "bad"):
        return Failure(Status.FAILED, "")
    if source.kind == "hangs":
        return Failure(Status.TIMEOUT, "")
    return Failure(Status.ERROR, "")


def _same(a: object, b: object) -> bool:
    if isinstance(a, Failure) or isinstance(b, Failure):
        return isinstance(a, Failure) and isinstance(b, Failure) and a.status is b.status
    return a == b or (a != a and b != b)  # NaN is NaN


def expected_outcomes(rulesets: list[RulesetSpec], world: Mapping[str, Source],
                      fail_closed: FailClosed, subscribed: list[bool]) -> Outcomes:
    """The contract of docs/semantics.md, "Scored metrics", written from the reference
    interpreter: up to the winner and for subscribing rulesets, exactly the serial outcome;
    after it, the serial outcome unless a rule it reaches needs a scored metric, from which
    it is skipped."""
    full = {m: _expected_value(s) for m, s in world.items()}
    ref = reference_outcomes(rulesets, values_getter(full), fail_closed)
    scored = {m for m, s in world.items() if s.kind not in ("given", "none")}
    winner = next((i for i, o in enumerate(ref) if o is Status.TRIGGERED), len(ref))
    out: list[Outcome] = []
    for i, (rs, o) in enumerate(zip(rulesets, ref, strict=True)):
        if i <= winner or subscribed[i]:
            out.append(o)
            continue
        stop = outcome_stop(o, len(rs.rules))
        first = next((j for j, r in enumerate(rs.rules) if r.metric in scored), None)
        out.append((Status.SKIPPED, first) if first is not None and first <= stop else o)
    return tuple(out)


def _equal(got: Outcomes, want: Outcomes) -> bool:
    return len(got) == len(want) and all(
        outcome_status(g) is outcome_status(w) and (
            outcome_stop(g, 10**6) == outcome_stop(w, 10**6)) for g, w in zip(got, want,
                                                                             strict=True))


class World:
    """Scorers behaving as `world` says, counting their calls; hanging ones are released
    when the example ends."""

    def __init__(self, world: Mapping[str, Source]) -> None:
        self.world = world
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.catalog = {m: MetricSpec(name=m, type=MetricType.NUMBER,
                                      timeout=BUDGET if s.kind == "hangs" else None)
                        for m, s in world.items()}

    def _count(self, metric: str) -> None:
        with self.lock:
            self.calls[metric] = self.calls.get(metric, 0) + 1

    def scorer(self, metric: str) -> Callable[..., Any] | None:
        source = self.world[metric]
        if source.kind in ("given", "none"):
            return None
        if source.run_async:
            async def ascore(req: ScoreRequest) -> object:
                self._count(req.metric)
                if source.kind == "hangs":
                    await asyncio.sleep(30)
                await asyncio.sleep(source.latency)
                if source.kind == "raises":
                    raise RuntimeError("model down")
                return source.value
            return ascore

        def score(req: ScoreRequest) -> object:
            self._count(req.metric)
            if source.kind == "hangs":
                self.release.wait(30)
            time.sleep(source.latency)
            if source.kind == "raises":
                raise RuntimeError("model down")
            return source.value
        return score

    def resolution(self, pools: ScorerPools) -> Resolution:
        given = {m: normalise_value(s.value) for m, s in self.world.items() if s.kind == "given"}
        now = time.perf_counter()
        return Resolution(self.scorer, pools, "in", "out", None, now + 10.0, 10.0, given,
                          self.catalog)


def _subscribed(rulesets: list[RulesetSpec], flags: list[bool]) -> list[RulesetSpec]:
    hook = (Subscription(url="https://hooks.example.com/x"),)
    return [rs.model_copy(update={"action": Action(type=ActionType.PASSTHROUGH,
                                                   subscriptions=hook if flag else ())})
            for rs, flag in zip(rulesets, flags, strict=True)]


@pytest.fixture(scope="module")
def pools() -> Any:
    made = ScorerPools(4)
    yield made
    made.shutdown()


@examples(0.5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(ruleset_lists(), st.fixed_dictionaries({m: sources for m in METRICS}), fail_modes,
       st.data())
def test_scheduled_decision_equals_the_reference(pools: ScorerPools,
                                                rulesets: list[RulesetSpec],
                                                world: dict[str, Source],
                                                fail_closed: FailClosed,
                                                data: st.DataObject) -> None:
    flags = data.draw(st.lists(st.booleans(), min_size=len(rulesets), max_size=len(rulesets)))
    rulesets = _subscribed(rulesets, flags)
    plan = ScorePlan(rulesets, fail_closed, flags)
    want = expected_outcomes(rulesets, world, fail_closed, flags)
    for on_loop in (False, True):
        scorers = World(world)
        res = scorers.resolution(pools)
        try:
            if on_loop:
                got = asyncio.run(decide_on_loop(plan, res))
            else:
                got = decide_with_threads(plan, res)
        finally:
            scorers.release.set()
        assert _equal(got, want), (on_loop, got, want)
        assert all(n == 1 for n in scorers.calls.values())  # each scorer at most once
        _check_response(rulesets, got, res)
        # What the decision used is what the scorers gave (failures by status).
        for i, o in enumerate(got):
            if outcome_status(o) is Status.SKIPPED:
                continue
            for rule in rulesets[i].rules[:outcome_stop(o, len(rulesets[i].rules)) + 1]:
                assert _same(res.values[rule.metric], _expected_value(world[rule.metric]))


def _check_response(rulesets: list[RulesetSpec], got: Outcomes, res: Resolution) -> None:
    """The response of a scheduled decision: skipped rulesets report each rule from the
    skip on as not reached, and the JSON is to_dict's, byte for byte."""
    response = Response("t", outcomes_status(got), TraceMetadata(None, 1, 2, 0.5), None,
                        StageMetadata("p", "s", "id", 1, "central"), None, None,
                        StageResults(tuple(rulesets)), got, res.values, res.timings)
    for rs, outcome, result in zip(rulesets, got, response.ruleset_results, strict=True):
        assert result.status is outcome_status(outcome)
        if result.status is Status.SKIPPED:
            j = outcome_stop(outcome, len(rs.rules))
            assert all(r.status == "skipped" for r in result.rule_results[j:])
            assert all(r.status != "skipped" for r in result.rule_results[:j])
    assert response.to_json() == json.dumps(response.to_dict(), ensure_ascii=False,
                                            allow_nan=False)


def _stage(n: int, metric: Callable[[int], str]) -> list[RulesetSpec]:
    return [RulesetSpec(name=f"r{i}", rules=(RuleSpec(metric=metric(i), operator=Operator.GT,
                                                      target_value=0.5),),
                        action=Action(type=ActionType.PASSTHROUGH)) for i in range(n)]


def _find(scorers: Mapping[str, Callable[[ScoreRequest], object]]
          ) -> Callable[[str], Callable[[ScoreRequest], object] | None]:
    return scorers.get


def test_scorers_the_decision_needs_run_at_once(pools: ScorerPools) -> None:
    # Five scorers that each wait for all five to have started: one at a time, the first
    # would wait in vain and fail; at once, every one returns.
    together = threading.Barrier(5, timeout=5)

    def score(req: ScoreRequest) -> object:
        together.wait()
        return 0.0

    rulesets = _stage(5, lambda i: f"m{i}")
    res = Resolution(_find({f"m{i}": score for i in range(5)}), pools, "in", "out", None,
                     time.perf_counter() + 10, 10.0, {})
    got = decide_with_threads(ScorePlan(rulesets, False, [False] * 5), res)
    assert [outcome_status(o) for o in got] == [Status.NOT_TRIGGERED] * 5


def test_the_first_ruleset_triggering_ends_the_decision_without_the_others(
        pools: ScorerPools) -> None:
    release = threading.Event()

    def slow(req: ScoreRequest) -> object:
        release.wait(30)
        return 0.9

    found = {"fast": lambda req: 0.9, **{f"slow{i}": slow for i in range(4)}}
    rulesets = _stage(5, lambda i: "fast" if i == 0 else f"slow{i - 1}")
    res = Resolution(_find(found), pools, "in", "out", None, time.perf_counter() + 10, 10.0, {})
    try:
        got = decide_with_threads(ScorePlan(rulesets, False, [False] * 5), res)
        assert not release.is_set()  # decided while the slow scorers still run
    finally:
        release.set()
    assert got == (Status.TRIGGERED, *[(Status.SKIPPED, 0)] * 4)
    assert set(res.values) == {"fast"}  # nothing of theirs was waited for


def test_a_subscribing_ruleset_after_the_winner_is_still_decided(pools: ScorerPools) -> None:
    found = {"fast": lambda req: 0.9, "late": lambda req: time.sleep(0.05) or 0.9}
    rulesets = _stage(2, lambda i: ("fast", "late")[i])
    res = Resolution(_find(found), pools, "in", "out", None, time.perf_counter() + 10, 10.0, {})
    got = decide_with_threads(ScorePlan(rulesets, False, [False, True]), res)
    assert got == (Status.TRIGGERED, Status.TRIGGERED)


def test_a_hung_scorer_holds_only_its_own_pool() -> None:
    pools = ScorerPools(2)
    release = threading.Event()
    calls = {"stuck": 0}

    def stuck(req: ScoreRequest) -> object:
        calls["stuck"] += 1
        release.wait(30)
        return 0.0

    def find(metric: str) -> Callable[[ScoreRequest], object]:
        return stuck if metric == "stuck" else (lambda req: 0.9)

    rulesets = _stage(2, lambda i: ("stuck", "fine")[i])
    catalog = {"stuck": MetricSpec(name="stuck", type=MetricType.SCORE, timeout=0.05)}
    plan = ScorePlan(rulesets, False, [False, False])
    try:
        for _ in range(6):  # more invocations than the stuck scorer has threads
            res = Resolution(find, pools, "in", "out", None, time.perf_counter() + 5, 5.0, {},
                             catalog)
            started = time.perf_counter()
            got = decide_with_threads(plan, res)
            assert time.perf_counter() - started < 1.0
            assert got[0] == (Status.TIMEOUT, 0) and got[1] is Status.TRIGGERED
            assert "0.05s budget" in res.values["stuck"].message  # type: ignore[union-attr]
        assert calls["stuck"] <= 2  # the others waited in its queue and timed out there
    finally:
        release.set()
        pools.shutdown()


def test_ainvoke_cancels_what_the_decision_no_longer_needs(pools: ScorerPools) -> None:
    cancelled: list[str] = []

    def find(metric: str) -> Callable[..., Any]:
        async def score(req: ScoreRequest) -> object:
            try:
                await asyncio.sleep(0.0 if metric == "fast" else 5.0)
            except asyncio.CancelledError:
                cancelled.append(metric)
                raise
            return 0.9
        return score

    rulesets = _stage(3, lambda i: ("fast", "slow1", "slow2")[i])

    async def run() -> Outcomes:
        res = Resolution(find, pools, "in", "out", None, time.perf_counter() + 10, 10.0, {})
        got = await decide_on_loop(ScorePlan(rulesets, False, [False] * 3), res)
        await asyncio.sleep(0)  # let the cancellations land
        return got

    started = time.perf_counter()
    got = asyncio.run(run())
    assert time.perf_counter() - started < 2.0
    assert got == (Status.TRIGGERED, (Status.SKIPPED, 0), (Status.SKIPPED, 0))
    assert sorted(cancelled) == ["slow1", "slow2"]


def test_ainvoke_from_many_tasks_runs_the_async_scorer_at_its_concurrency(
        tmp_path: Path) -> None:
    scorers = Scorers(entry_point_group=None)
    running = {"now": 0, "most": 0}

    async def slow(req: ScoreRequest) -> object:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1
        return 0.1

    scorers.register("a", slow)
    build(tmp_path / "r", STAGE)
    with Runtime(tmp_path / "r", scorers=scorers, poll_interval=None, deliver_webhooks=False,
                 scorer_threads=25) as rt:
        async def many() -> list[Any]:
            return await asyncio.gather(*(rt.ainvoke({"output": f"x{i}"}, "s")
                                          for i in range(200)))
        out = asyncio.run(many())
    assert all(r.status is Status.NOT_TRIGGERED for r in out)
    assert all(r.metric_results["a"].source == "scorer" for r in out)
    assert running["most"] == 25  # overlapping, and never more than configured


STAGE = """project p
metric a {
  type score
}
stage s {
  type central
  ruleset r {
    when a > 0.5
    passthrough
  }
}
"""


def test_async_entry_is_the_coroutine_function_a_scorer_scores_with() -> None:
    async def coro(req: ScoreRequest) -> float:
        return 0.1

    def sync(req: ScoreRequest) -> float:
        return 0.1

    class WithAscore:  # sync when called, async through ascore (LangChain's shape)
        def __call__(self, req: ScoreRequest) -> float:
            return 0.1

        async def ascore(self, req: ScoreRequest) -> float:
            return 0.2

    class AsyncCall:
        async def __call__(self, req: ScoreRequest) -> float:
            return 0.3

    class SyncAscore:
        def ascore(self, req: ScoreRequest) -> float:
            return 0.4

    class Unhashable(WithAscore):
        __hash__ = None  # type: ignore[assignment]

    with_ascore, async_call, unhashable = WithAscore(), AsyncCall(), Unhashable()
    for _ in range(2):  # the second time from what was kept
        assert async_entry(coro) is coro
        assert async_entry(sync) is None
        assert async_entry(with_ascore) == with_ascore.ascore
        assert async_entry(async_call) is async_call
        assert async_entry(SyncAscore()) is None
        assert async_entry(unhashable) == unhashable.ascore
