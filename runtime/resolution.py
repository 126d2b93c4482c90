"""The metric values of one invocation: what the caller passed, then scorers, each on its own
pool (or the event loop) under the invocation's deadline and the metric's own budget.

`resolve` scores one metric and waits for it (the serial path: shadow decisions, replays);
`runtime/scheduling.py` starts several at once through `start`/`astart` and keeps what
`finish` stores.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from stageguard.runtime.clock import seconds_since
from stageguard.runtime.evaluate import Failure, InvalidValue, normalise_value
from stageguard.runtime.model import MetricSpec, Status
from stageguard.runtime.pii import DeadlinePassed, TextTooLong
from stageguard.runtime.scorers import Scorer, ScoreRequest

if TYPE_CHECKING:
    import asyncio

Finder = Callable[[str], "Scorer | None"]


class ScorerPools:
    """One bounded thread pool per scorer (per metric, or per service for scorers that batch),
    made on first use: a scorer that hangs holds only its own threads, so the other metrics
    go on being scored and its own later invocations end `timeout` at their deadline. An
    async scorer is bounded alike: at most `threads` of its calls run at once on a loop."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pools: dict[object, ThreadPoolExecutor] = {}
        self._limits: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[object, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        # The last loop's semaphores, read without the lock or the weak dictionary (a
        # service has one loop: every call of an async scorer asks).
        self._last_limits: tuple[weakref.ref[asyncio.AbstractEventLoop],
                                 dict[object, asyncio.Semaphore]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def pool(self, key: object) -> ThreadPoolExecutor:
        found = self._pools.get(key)
        if found is None:
            with self._lock:
                found = self._pools.get(key)
                if found is None:
                    name = key if isinstance(key, str) else type(key).__name__
                    found = self._pools[key] = ThreadPoolExecutor(
                        self.threads, thread_name_prefix=f"stageguard-scorer-{name}"[:60])
        return found

    def limit(self, key: object) -> asyncio.Semaphore:
        """The running loop's bound on concurrent calls of the async scorer `key`."""
        import asyncio  # only decisions with async scorers need it: imported on first use
        loop = asyncio.get_running_loop()
        last = self._last_limits
        if last is not None and last[0]() is loop:
            found = last[1].get(key)
            if found is not None:
                return found
        with self._lock:
            per_loop = self._limits.get(loop)
            if per_loop is None:
                per_loop = self._limits[loop] = {}
            found = per_loop.get(key)
            if found is None:
                found = per_loop[key] = asyncio.Semaphore(self.threads)
            self._last_limits = (weakref.ref(loop), per_loop)
            return found

    def loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on a thread of its own, where a synchronous invocation runs async
        scorers."""
        import asyncio
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, daemon=True,
                                          name="stageguard-scorer-loop")
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    @property
    def count(self) -> int:
        return len(self._pools)

    def shutdown(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            loop, self._loop = self._loop, None
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


def async_entry(scorer: object) -> Callable[[ScoreRequest], Awaitable[object]] | None:
    """The coroutine function that scores with `scorer` (its `ascore`, or itself), or None
    for a synchronous scorer. Kept per scorer: every scored decision asks, and inspect's
    checks cost microseconds."""
    try:
        return _ENTRIES[scorer]
    except KeyError:
        pass
    except TypeError:  # unhashable: decided every time
        return _async_entry(scorer)
    found = _ENTRIES[scorer] = _async_entry(scorer)
    if len(_ENTRIES) > 1024:  # scorers are registered, few; a caller's fresh objects: bounded
        _ENTRIES.clear()
    return found


def _async_entry(scorer: Any) -> Callable[[ScoreRequest], Awaitable[object]] | None:
    ascore = getattr(scorer, "ascore", None)
    if ascore is not None and inspect.iscoroutinefunction(ascore):
        return ascore  # type: ignore[no-any-return]
    if inspect.iscoroutinefunction(scorer) or inspect.iscoroutinefunction(
            getattr(scorer, "__call__", None)):  # noqa: B004 (a callable object's coroutine)
        return scorer  # type: ignore[no-any-return]
    return None


_ENTRIES: dict[object, Callable[[ScoreRequest], Awaitable[object]] | None] = {}


def service_of(scorer: object) -> object | None:
    """What metrics share to be scored in one request (`HttpScorer.service`), or None."""
    return getattr(scorer, "service", None)


class Resolution:
    """Metric values of one invocation: what the caller passed, then scorers on demand."""

    __slots__ = ("catalog", "deadline", "find", "input", "metadata", "output", "pools",
                 "scored", "timeout", "timings", "values")

    def __init__(self, find: Finder, pools: ScorerPools, payload_in: str, payload_out: str,
                 metadata: Mapping[str, str] | None, deadline: float, timeout: float,
                 values: dict[str, object],
                 catalog: Mapping[str, MetricSpec] | None = None,
                 scored: frozenset[str] = frozenset()) -> None:
        self.find = find
        self.pools = pools
        self.input = payload_in
        self.output = payload_out
        self.metadata = metadata or {}
        self.deadline = deadline
        self.timeout = timeout
        self.values = values
        self.catalog = catalog or {}
        # Which of `values` a scorer gave (an earlier decision's, for a shadow): the rest came
        # with the payload (scheduling.py decides what follows the winner from those only).
        self.scored = scored
        self.timings: dict[str, tuple[float, str]] = {}

    # ---- what every path shares

    def deadline_of(self, name: str, started: float) -> float:
        """The earlier of the invocation's deadline and the metric's own budget."""
        spec = self.catalog.get(name)
        if spec is not None and spec.timeout is not None:
            return min(self.deadline, started + spec.timeout)
        return self.deadline

    def request(self, name: str, deadline: float) -> ScoreRequest:
        return ScoreRequest(name, self.input, self.output, self.metadata, deadline)

    def no_source(self, name: str) -> None:
        self.store(name, Failure(Status.ERROR, f"no source for metric `{name}`: pass it "
                                 "with the payload's metrics or register a scorer"), 0.0,
                   "none")

    def timed_out(self, name: str, started: float) -> None:
        self.store(name, Failure(Status.TIMEOUT, self._timeout_message(name)),
                   seconds_since(started), "scorer")

    def _timeout_message(self, name: str) -> str:
        spec = self.catalog.get(name)
        if spec is not None and spec.timeout is not None and spec.timeout < self.timeout:
            return (f"scorer for `{name}` did not finish within its {spec.timeout:g}s budget "
                    f"(the invocation's timeout is {self.timeout:g}s)")
        return f"scorer for `{name}` did not finish within the {self.timeout:g}s timeout"

    def store(self, name: str, value: object, elapsed: float, source: str) -> None:
        self.timings[name] = (elapsed, source)
        self.values[name] = value

    def finish(self, name: str, outcome: object, error: BaseException | None,
               started: float) -> None:
        """Store what a scorer returned (`outcome`) or raised (`error`)."""
        self.store(name, self._value(name, outcome, error), seconds_since(started),
                   "scorer")

    def _value(self, name: str, raw: object, error: BaseException | None) -> object:
        if error is not None:
            if isinstance(error, TimeoutError | DeadlinePassed):  # asyncio's is TimeoutError
                return Failure(Status.TIMEOUT, self._timeout_message(name))
            if isinstance(error, TextTooLong):
                return Failure(Status.FAILED, f"scorer for `{name}`: {error}")
            return Failure(Status.FAILED, f"scorer for `{name}` raised "
                           f"{type(error).__name__}: {error}")
        try:
            return normalise_value(raw)
        except InvalidValue as exc:
            return Failure(Status.FAILED, f"scorer for `{name}` returned a bad value: {exc}")

    # ---- starting scorers

    def start(self, names: Sequence[str], scorers: Sequence[Any], deadline: float
              ) -> Future[Any]:
        """Score `names` (several only when their scorers share a service) on the scorer's
        pool, or on the pools' event loop for an async scorer. The future's result is one raw
        value, or for a service a mapping name -> value or exception."""
        requests = [self.request(n, deadline) for n in names]
        service = service_of(scorers[0])
        if service is not None:
            return self.pools.pool(service).submit(service.score, requests, scorers)  # type: ignore[attr-defined]
        entry = async_entry(scorers[0])
        if entry is not None:
            import asyncio
            return asyncio.run_coroutine_threadsafe(
                _call_async(entry, requests[0], self.pools, names[0]), self.pools.loop())
        return self.pools.pool(names[0]).submit(scorers[0], requests[0])

    def astart(self, names: Sequence[str], scorers: Sequence[Any], deadline: float
               ) -> asyncio.Future[Any]:
        """`start` for an invocation on the running event loop (`acall` as a task)."""
        import asyncio
        return asyncio.ensure_future(self.acall(names, scorers, deadline))

    def acall(self, names: Sequence[str], scorers: Sequence[Any], deadline: float
              ) -> Awaitable[Any]:
        """What `start` does, for the running event loop, as an awaitable to await in place
        (or wrap in a task: `astart`): async scorers run on the loop, sync ones on their
        pool."""
        import asyncio
        requests = [self.request(n, deadline) for n in names]
        service = service_of(scorers[0])
        if service is not None:
            ascore = getattr(service, "ascore", None)
            if ascore is not None:
                return ascore(requests, scorers)  # type: ignore[no-any-return]
            return asyncio.get_running_loop().run_in_executor(
                self.pools.pool(service), service.score, requests, scorers)  # type: ignore[attr-defined]
        entry = async_entry(scorers[0])
        if entry is not None:
            return _call_async(entry, requests[0], self.pools, names[0])
        return asyncio.get_running_loop().run_in_executor(self.pools.pool(names[0]),
                                                          scorers[0], requests[0])

    # ---- one at a time

    def resolve(self, name: str) -> object:
        """Score `name` and wait for it (the serial path)."""
        started = time.perf_counter()
        scorer = self.find(name)
        if scorer is None:
            self.no_source(name)
            return self.values[name]
        deadline = self.deadline_of(name, started)
        if deadline - started <= 0:
            self.store(name, Failure(Status.TIMEOUT, f"no time left for metric `{name}` "
                                     f"within the {self.timeout:g}s timeout"), 0.0, "scorer")
            return self.values[name]
        future = self.start([name], [scorer], deadline)
        try:
            raw = future.result(timeout=deadline - started)
        except TimeoutError:
            future.cancel()
            self.timed_out(name, started)
            return self.values[name]
        except BaseException as exc:  # SystemExit too: the scorer's, not the caller's
            self.finish(name, None, exc, started)
            return self.values[name]
        self.finish_group([name], raw, service_of(scorer) is not None, started)
        return self.values[name]

    def finish_group(self, names: Sequence[str], raw: object, batched: bool,
                     started: float) -> None:
        """Store a finished start's result for each of its names."""
        if not batched:
            self.finish(names[0], raw, None, started)
            return
        answers = raw if isinstance(raw, Mapping) else {}
        for name in names:
            got = answers.get(name, _MISSING_ANSWER)
            if got is _MISSING_ANSWER:
                self.finish(name, None, LookupError("the service's answer has no value "
                                                    f"for `{name}`"), started)
            elif isinstance(got, BaseException):
                self.finish(name, None, got, started)
            else:
                self.finish(name, got, None, started)


_MISSING_ANSWER = object()


async def _call_async(entry: Callable[[ScoreRequest], Awaitable[object]],
                      request: ScoreRequest, pools: ScorerPools, key: str) -> object:
    async with pools.limit(key):
        return await entry(request)
