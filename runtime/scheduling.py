"""Scoring a decision's metrics concurrently, and deciding as soon as the answer is known.

docs/semantics.md ("Scored metrics") is the contract. In short: every scored metric the
decision may still need starts at once (each at most once), on its scorer's pool or the
event loop; after each result the stage is settled again over the values known so far. The
decision is made when every ruleset up to the first one that triggered is settled (that one
wins), or every ruleset is: what is still running is then cancelled or abandoned.

Up to the winner, and for every ruleset that subscribes webhooks, outcomes equal the serial
semantics for every scorer outcome. A ruleset after the winner without webhooks is decided
from the payload's metrics (and metrics without a source) only: where it would need a scored
metric it is reported `skipped` from that rule on, whatever the scorers did, so the response
does not depend on which scorer happened to finish first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from stageguard.runtime.evaluate import (
    FailClosed,
    Failure,
    Outcome,
    Outcomes,
    closes,
    rule_predicate,
)
from stageguard.runtime.model import RulesetSpec, Status
from stageguard.runtime.resolution import Resolution, service_of

if TYPE_CHECKING:
    import asyncio

_T = Status.TRIGGERED
_SKIPPED = Status.SKIPPED
_UNKNOWN = object()

_Rule = tuple[str, Callable[[object], bool], bool]  # metric, holds, fails closed


def _walk(rules: Sequence[_Rule], values: Mapping[str, object]) -> tuple[Outcome | None, int]:
    """The ruleset's outcome over the values known so far, or (None, index of the first rule
    whose metric is not known yet)."""
    for j, (metric, holds, closed) in enumerate(rules):
        v = values.get(metric, _UNKNOWN)
        if v is _UNKNOWN:
            return None, j
        if v.__class__ is Failure:
            if closed:
                continue
            return (v.status, j), j
        if not holds(v):
            return j, j
    return _T, len(rules)


class ScorePlan:
    """A stage's rulesets as the scheduler walks them. Built once per loaded stage."""

    __slots__ = ("metrics", "rules", "subscribed")

    def __init__(self, rulesets: Sequence[RulesetSpec], fail_closed: FailClosed,
                 subscribed: Sequence[bool]) -> None:
        self.rules: tuple[tuple[_Rule, ...], ...] = tuple(
            tuple((r.metric, rule_predicate(r), closes(fail_closed, r.metric)) for r in rs.rules)
            for rs in rulesets)
        self.subscribed = tuple(subscribed)
        self.metrics = tuple(dict.fromkeys(r[0] for rules in self.rules for r in rules))

    def settle(self, values: Mapping[str, object], given: Mapping[str, object] | set[str]
               ) -> tuple[Outcomes | None, list[str]]:
        """(outcomes, []) once the decision is determined by `values`; else (None, the
        metrics it may still need, in priority order). `given` names the values that came
        without a scorer (the payload's, and failures of metrics without a source)."""
        need: dict[str, None] = {}
        out: list[Outcome | None] = []
        first_trigger = -1
        unsettled = False
        for i, rules in enumerate(self.rules):
            if first_trigger >= 0 and not self.subscribed[i]:
                out.append(None)  # cannot win: decided from the given values below
                continue
            outcome, j = _walk(rules, values)
            out.append(outcome)
            if outcome is None:
                unsettled = True
                # Every rule from the first unknown one may be reached, up to one that is
                # known to end the ruleset whatever the unknown ones turn out to be.
                for metric, holds, closed in rules[j:]:
                    v = values.get(metric, _UNKNOWN)
                    if v is _UNKNOWN:
                        need[metric] = None
                    elif v.__class__ is Failure:
                        if not closed:
                            break
                    elif not holds(v):
                        break
            elif outcome is _T and first_trigger < 0:
                first_trigger = i
        if unsettled:
            return None, list(need)
        if None not in out:
            return tuple(out), []  # type: ignore[arg-type]
        # What cannot win is walked over the given values alone: where it would reach a
        # scored metric it is skipped from that rule on.
        visible = {m: values[m] for m in given}
        decided: list[Outcome] = []
        for rules, outcome in zip(self.rules, out, strict=True):
            if outcome is None:
                outcome, j = _walk(rules, visible)
                if outcome is None:
                    outcome = (_SKIPPED, j)
            decided.append(outcome)
        return tuple(decided), []


def _classify(plan: ScorePlan, res: Resolution) -> tuple[set[str], dict[str, Any]]:
    """The given metric names (payload values and metrics without a source, whose failures
    are stored now) and the scorer of every other metric of the stage."""
    values = res.values
    given = {n for n in values if n not in res.scored}
    scorers: dict[str, Any] = {}
    for metric in plan.metrics:
        if metric in values:
            continue
        scorer = res.find(metric)
        if scorer is None:
            res.no_source(metric)
            given.add(metric)
        else:
            scorers[metric] = scorer
    return given, scorers


def _groups(names: Sequence[str], scorers: Mapping[str, Any]
            ) -> list[tuple[list[str], list[Any]]]:
    """Names to start, grouped so metrics sharing a service go in one request."""
    by_service: dict[int, tuple[list[str], list[Any]]] = {}
    groups: list[tuple[list[str], list[Any]]] = []
    for name in names:
        scorer = scorers[name]
        service = service_of(scorer)
        if service is None:
            groups.append(([name], [scorer]))
        elif id(service) in by_service:
            group = by_service[id(service)]
            group[0].append(name)
            group[1].append(scorer)
        else:
            by_service[id(service)] = group = ([name], [scorer])
            groups.append(group)
    return groups


class _Started:
    __slots__ = ("batched", "deadline", "names", "started")

    def __init__(self, names: list[str], batched: bool, started: float,
                 deadline: float) -> None:
        self.names = names
        self.batched = batched
        self.started = started
        self.deadline = deadline


def _deadline(res: Resolution, names: Sequence[str], now: float) -> float:
    return min(res.deadline_of(n, now) for n in names)


def _launch(res: Resolution, groups: Sequence[tuple[list[str], list[Any]]],
            started: set[str], running: dict[Any, _Started],
            start: Callable[[list[str], list[Any], float], Any], now: float) -> None:
    """Start each group (`start`: the thread or the loop way) unless its deadline passed."""
    for names, group in groups:
        started.update(names)
        deadline = _deadline(res, names, now)
        if deadline <= now:
            for n in names:
                res.timed_out(n, now)
            continue
        running[start(names, group, deadline)] = _Started(
            names, service_of(group[0]) is not None, now, deadline)


def _record(res: Resolution, item: _Started, raw: object,
            error: BaseException | None) -> None:
    """Store what a finished start gave, or the error it ended with."""
    if error is not None:
        for n in item.names:
            res.finish(n, None, error, item.started)
    else:
        res.finish_group(item.names, raw, item.batched, item.started)


def _expire(res: Resolution, running: dict[Any, _Started]) -> None:
    """Give up (cancel) the starts whose deadline passed: their metrics time out."""
    now = time.perf_counter()
    for future, item in list(running.items()):
        if item.deadline <= now:
            del running[future]
            future.cancel()
            for n in item.names:
                res.timed_out(n, item.started)


def decide_with_threads(plan: ScorePlan, res: Resolution) -> Outcomes:
    """Decide on the calling thread, scorers on their pools (or the pools' loop)."""
    given, scorers = _classify(plan, res)
    values = res.values
    running: dict[Future[Any], _Started] = {}
    started: set[str] = set()
    try:
        while True:
            outcomes, need = plan.settle(values, given)
            if outcomes is not None:
                return outcomes
            fresh = [n for n in need if n not in started]
            _launch(res, _groups(fresh, scorers), started, running, res.start,
                    time.perf_counter())
            if not running:
                continue  # everything just started already timed out: settle again
            nearest = min(s.deadline for s in running.values())
            done, _ = wait(running, timeout=max(0.0, nearest - time.perf_counter()),
                           return_when=FIRST_COMPLETED)
            for future in done:
                item = running.pop(future)
                try:
                    raw = future.result()
                except BaseException as exc:  # SystemExit too: the scorer's
                    _record(res, item, None, exc)
                    continue
                _record(res, item, raw, None)
            _expire(res, running)
    finally:
        for future in running:  # the decision no longer needs them
            future.cancel()


async def decide_on_loop(plan: ScorePlan, res: Resolution) -> Outcomes:
    """`decide_with_threads` on the running event loop: async scorers run on it, sync ones
    on their pools; what the decision no longer needs is cancelled."""
    import asyncio  # imported on first use: `import stageguard.runtime` stays light
    given, scorers = _classify(plan, res)
    values = res.values
    running: dict[asyncio.Future[Any], _Started] = {}
    started: set[str] = set()
    try:
        while True:
            outcomes, need = plan.settle(values, given)
            if outcomes is not None:
                return outcomes
            fresh = [n for n in need if n not in started]
            now = time.perf_counter()
            groups = _groups(fresh, scorers)
            if not running and len(groups) == 1:
                # One scorer to wait for and nothing else running (a stage with one scored
                # metric, or the last one needed): awaited in place, without a task, a
                # set of futures to wait on and their callbacks.
                names, group = groups[0]
                started.update(names)
                await _await_one(res, names, group, now)
                continue
            _launch(res, groups, started, running, res.astart, now)
            if not running:
                continue
            nearest = min(s.deadline for s in running.values())
            done, _ = await asyncio.wait(running, timeout=max(0.0, nearest - time.perf_counter()),
                                         return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                item = running.pop(future)
                error = (asyncio.CancelledError() if future.cancelled()
                         else future.exception())
                _record(res, item, None if error is not None else future.result(), error)
            _expire(res, running)
    finally:
        for future in running:
            future.cancel()


async def _await_one(res: Resolution, names: list[str], group: list[Any],
                     now: float) -> None:
    """Score one group on the running loop and store what it gave (or why it did not)."""
    import asyncio
    deadline = _deadline(res, names, now)
    if deadline <= now:
        for n in names:
            res.timed_out(n, now)
        return
    item = _Started(names, service_of(group[0]) is not None, now, deadline)
    try:
        async with asyncio.timeout(deadline - time.perf_counter()):
            raw = await res.acall(names, group, deadline)
    except TimeoutError:  # the deadline, or the scorer's own: a timeout either way
        for n in names:
            res.timed_out(n, now)
        return
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the invocation itself is being cancelled
        _record(res, item, None, exc)
        return
    except (Exception, SystemExit) as exc:  # the scorer's, not the caller's
        _record(res, item, None, exc)
        return
    _record(res, item, raw, None)
