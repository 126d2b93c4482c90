"""The metric values of one invocation: what the caller passed, then scorers on demand,
each on the scorer pool under the invocation's deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stageguard.runtime.evaluate import Failure, InvalidValue, normalise_value
from stageguard.runtime.model import Status
from stageguard.runtime.pii import DeadlinePassed, TextTooLong
from stageguard.runtime.scorers import Scorer, ScoreRequest


class Resolution:
    """Metric values of one invocation: what the caller passed, then scorers on demand."""

    __slots__ = ("deadline", "find", "input", "metadata", "output", "pool", "timeout",
                 "timings", "values")

    def __init__(self, find: Callable[[str], Scorer | None], pool: ThreadPoolExecutor,
                 payload_in: str, payload_out: str, metadata: Mapping[str, str] | None,
                 deadline: float, timeout: float, values: dict[str, object]) -> None:
        self.find = find
        self.pool = pool
        self.input = payload_in
        self.output = payload_out
        self.metadata = metadata or {}
        self.deadline = deadline
        self.timeout = timeout
        self.values = values
        self.timings: dict[str, tuple[float, str]] = {}

    def resolve(self, name: str) -> object:
        started = time.perf_counter()
        scorer = self.find(name)
        if scorer is None:
            value: object = Failure(Status.ERROR, f"no source for metric `{name}`: pass it with "
                                    "the payload's metrics or register a scorer")
            source = "none"
        else:
            source = "scorer"
            value = self._score(name, scorer, started)
        self.timings[name] = (time.perf_counter() - started, source)
        self.values[name] = value
        return value

    def _score(self, name: str, scorer: Any, started: float) -> object:
        remaining = self.deadline - started
        if remaining <= 0:
            return Failure(Status.TIMEOUT, f"no time left for metric `{name}` within the "
                           f"{self.timeout:g}s timeout")
        request = ScoreRequest(name, self.input, self.output, self.metadata, self.deadline)
        future = self.pool.submit(scorer, request)
        try:
            raw = future.result(timeout=remaining)
        except (TimeoutError, DeadlinePassed):
            future.cancel()
            return Failure(Status.TIMEOUT, f"scorer for `{name}` did not finish within the "
                           f"{self.timeout:g}s timeout")
        except TextTooLong as exc:
            return Failure(Status.FAILED, f"scorer for `{name}`: {exc}")
        except BaseException as exc:  # SystemExit too: the scorer's, not the caller's
            return Failure(Status.FAILED, f"scorer for `{name}` raised {type(exc).__name__}: "
                           f"{exc}")
        try:
            return normalise_value(raw)
        except InvalidValue as exc:
            return Failure(Status.FAILED, f"scorer for `{name}` returned a bad value: {exc}")
