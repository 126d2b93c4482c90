"""Metrics scored by a model service the team runs: `scorer "http://…"` on a metric.

One `HttpService` per url: pooled keep-alive clients (one for threads; on each event loop,
clients of at most `SHARD` connections), a bound on connections, and batching: the metrics
of one invocation that share a service are sent in one request. The protocol
(docs/runtime.md, "HTTP scorers"):

    POST url  {"input": "…", "output": "…", "metadata": {…}, "metrics": ["a", "b"]}
    200       {"a": 0.93, "scores": {"b": ["ssn"]}}   each metric's value at its `field`

An answer that is not a JSON object, lacks a field, or holds a value that is no metric value
makes that metric `failed`; an HTTP error status or a refused connection makes every metric
of the request `failed`; no answer before the deadline makes them `timeout`. Redirects are not
followed and answers above `MAX_ANSWER` bytes are refused. The client is httpx2 (pydantic's
maintained successor of httpx, same API), imported on first use (the `server` and `http`
extras bring it): httpx 0.28's connection pool spends most of a busy scorer's CPU on its own
bookkeeping, a quarter of the throughput at 32 connections (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from stageguard.runtime.scorers import ScoreRequest

if TYPE_CHECKING:
    import httpx2 as httpx

MAX_ANSWER = 1 << 20  # bytes
SHARD = 8  # connections per async client (HttpService.async_client)
_NOT_FOUND = object()


class ScorerAnswerError(ValueError):
    """The service answered, but not with a value for this metric."""


class HttpService:
    """One model service; thread-safe. `score` blocks, `ascore` runs on the caller's loop."""

    def __init__(self, url: str, *, max_connections: int = 32,
                 headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.max_connections = max_connections
        self.headers = dict(headers or {})
        self._client: httpx.Client | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[httpx.AsyncClient, asyncio.Semaphore]]] = (
            weakref.WeakKeyDictionary())
        self._turn = 0
        # Requests wait here, not in httpcore's pool, whose bookkeeping grows with the square
        # of its queue (640 queued requests cost it seconds).
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self.requests = 0  # POSTs sent, for tests and metrics

    def __repr__(self) -> str:
        return f"HttpService({self.url!r})"

    def _limits(self, connections: int | None = None) -> httpx.Limits:
        import httpx2 as httpx
        connections = connections or self.max_connections
        return httpx.Limits(max_connections=connections,
                            max_keepalive_connections=connections)

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx2 as httpx
                # One retry of a refused connect: a service restarting, a full backlog.
                self._client = httpx.Client(
                    transport=httpx.HTTPTransport(limits=self._limits(), retries=1),
                    follow_redirects=False, headers=self.headers, trust_env=False)
            return self._client

    def async_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """A client of the running loop's, and its bound on requests in flight: the first
        with a free connection, else the next in turn. The loop's connections are split
        over clients of at most `SHARD` each: httpcore's pool looks over every connection
        it holds for every request, most of a busy scorer's CPU with 64 in one pool."""
        loop = asyncio.get_running_loop()
        shards = self._async.get(loop)
        if shards is None:
            with self._lock:
                shards = self._async.get(loop)
                if shards is None:
                    import httpx2 as httpx
                    total = self.max_connections
                    sizes = [min(SHARD, total - i) for i in range(0, total, SHARD)]
                    shards = self._async[loop] = [(httpx.AsyncClient(
                        transport=httpx.AsyncHTTPTransport(limits=self._limits(size),
                                                           retries=1),
                        follow_redirects=False, headers=self.headers, trust_env=False),
                        asyncio.Semaphore(size)) for size in sizes]
        for shard in shards:
            if not shard[1].locked():
                return shard
        self._turn = turn = (self._turn + 1) % len(shards)
        return shards[turn]

    @staticmethod
    def _body(requests: Sequence[ScoreRequest]) -> bytes:
        first = requests[0]
        return json.dumps({"input": first.input, "output": first.output,
                           "metadata": dict(first.metadata),
                           "metrics": [r.metric for r in requests]},
                          ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _timeout(requests: Sequence[ScoreRequest]) -> float:
        deadlines = [r.deadline for r in requests if r.deadline is not None]
        if not deadlines:
            return 30.0
        left = min(deadlines) - time.perf_counter()
        if left <= 0:
            raise TimeoutError("no time left")
        return left

    def score(self, requests: Sequence[ScoreRequest], scorers: Sequence[HttpScorer]
              ) -> dict[str, object]:
        """One POST for these metrics: name -> value, or the exception that metric fails
        with."""
        if not self._slots.acquire(timeout=self._timeout(requests)):
            raise TimeoutError(f"{self.url}: every connection stayed busy")
        try:
            timeout = self._timeout(requests)
            self.requests += 1
            with self._errors(), self.client().stream(
                    "POST", self.url, content=self._body(requests),
                    headers={"content-type": "application/json"}, timeout=timeout) as answer:
                status = answer.status_code
                raw = bytearray()
                for chunk in answer.iter_bytes():
                    _grow(raw, chunk)
        finally:
            self._slots.release()
        return _answers(self.url, status, bytes(raw), scorers)

    async def ascore(self, requests: Sequence[ScoreRequest], scorers: Sequence[HttpScorer]
                     ) -> dict[str, object]:
        client, slots = self.async_client()
        try:
            # In place, not as wait_for's task: one cancelled before its first step left its
            # acquire() never awaited (a RuntimeWarning) when little time was left.
            async with asyncio.timeout(self._timeout(requests)):
                await slots.acquire()
        except TimeoutError:
            raise TimeoutError(f"{self.url}: every connection stayed busy") from None
        try:
            timeout = self._timeout(requests)
            self.requests += 1
            with self._errors():
                async with client.stream(
                        "POST", self.url, content=self._body(requests),
                        headers={"content-type": "application/json"},
                        timeout=timeout) as answer:
                    status = answer.status_code
                    raw = bytearray()
                    async for chunk in answer.aiter_bytes():
                        _grow(raw, chunk)
        finally:
            slots.release()
        return _answers(self.url, status, bytes(raw), scorers)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """httpx2's exceptions as the scorer's: no answer in time is a TimeoutError (the
        metric times out), anything else on the wire a ConnectionError (it fails)."""
        import httpx2 as httpx
        try:
            yield
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"{self.url}: no answer in time") from exc
        except httpx.HTTPError as exc:
            raise ConnectionError(f"{self.url}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            clients = list(self._async.items())
            self._async = weakref.WeakKeyDictionary()
        if client is not None:
            client.close()
        for loop, shards in clients:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            for aclient, _ in shards:
                if running is loop:
                    loop.create_task(aclient.aclose())
                elif not loop.is_running():
                    loop.run_until_complete(aclient.aclose())


def _grow(answer: bytearray, chunk: bytes) -> None:
    """Add a chunk of the answer, refusing answers above MAX_ANSWER bytes."""
    answer += chunk
    if len(answer) > MAX_ANSWER:
        raise ScorerAnswerError(f"answer above {MAX_ANSWER:,} bytes")


def _answers(url: str, status: int, raw: bytes, scorers: Sequence[HttpScorer]
             ) -> dict[str, object]:
    if status != 200:
        raise ConnectionError(f"{url} answered HTTP {status}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ScorerAnswerError(f"{url} answered with something that is not JSON") from None
    if not isinstance(doc, dict):
        raise ScorerAnswerError(f"{url} answered with JSON that is not an object")
    out: dict[str, object] = {}
    for scorer in scorers:
        value = _at(doc, scorer.field)
        out[scorer.metric] = (ScorerAnswerError(f"{url}'s answer has no field "
                                                f"`{scorer.field}`")
                              if value is _NOT_FOUND else value)
    return out


def _at(doc: object, path: str) -> object:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _NOT_FOUND
        doc = doc[part]
    return doc


class HttpScorer:
    """The scorer of one metric at a service. Called alone (`__call__`, `ascore`), it sends
    a request of its own; the scheduler batches metrics that share `service`."""

    def __init__(self, service: HttpService, metric: str, field: str | None = None) -> None:
        self.service = service
        self.metric = metric
        self.field = field or metric

    def __repr__(self) -> str:
        return f"HttpScorer({self.service.url!r}, {self.metric!r}, field={self.field!r})"

    def __call__(self, request: ScoreRequest) -> object:
        return _one(self.service.score([request], [self]), self.metric)

    async def ascore(self, request: ScoreRequest) -> object:
        return _one(await self.service.ascore([request], [self]), self.metric)


def _one(answers: Mapping[str, object], metric: str) -> object:
    value = answers[metric]
    if isinstance(value, BaseException):
        raise value
    return value
