"""Decision logs: one event per decision, redacted as the operator declared, handed to sinks
off the decision path.

A decision costs the log one append to a bounded buffer (`DecisionLog.record`): the event is
built, redacted and encoded by the log's own thread, then offered to each sink's buffer, and
each sink (`log_sinks`) delivers on its own thread with its own retries. A full buffer drops
the event and counts it; a sink that is down never slows or fails a decision.

Payload text is not logged unless the operator names the stage (`LogPolicy.payload`).
Masking and dropping rules name fields (`metadata.user_email`, `metadata.*`,
`metrics.input_pii`, `payload.input`, `payload`) and the stages they apply to; they run once,
before any sink sees the event, so a masked value reaches no sink. The event's schema is
`EVENT_SCHEMA` below and docs/operations.md.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stageguard.runtime.clock import utc_text
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.model import Status

log = logging.getLogger("stageguard.runtime")

EVENT_VERSION = 1
MASKED = "***"
LOG_EVERY = 60.0  # seconds between two error lines about one failing sink
WAIT = 0.05  # how long a buffer's consumer sleeps when fewer than a batch are waiting
CHUNK = 64  # events built and encoded between two yields of the interpreter
SECTIONS = ("metadata", "metrics", "payload")


# ---- metric values, exactly -------------------------------------------------------------------

def encode_value(value: object) -> object:
    """A metric value as JSON data that decodes back to exactly it: labels stay strings,
    label lists lists, non-finite numbers and failures become tagged objects (so the label
    "NaN" and the number NaN stay apart)."""
    if isinstance(value, Failure):
        return {"failure": value.status.value, "message": value.message}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, tuple):
        return list(value)
    return value


def decode_value(data: object) -> object:
    """`encode_value` undone; ValueError for data no encoding produces."""
    if isinstance(data, dict):
        if set(data) == {"failure", "message"}:
            return Failure(Status(data["failure"]), str(data["message"]))
        if set(data) == {"float"} and data["float"] in ("NaN", "Infinity", "-Infinity"):
            return float(data["float"].replace("Infinity", "inf"))
        raise ValueError(f"not a logged metric value: {data!r}")
    if isinstance(data, list):
        if not all(isinstance(x, str) for x in data):
            raise ValueError("a label list holds strings only")
        return tuple(data)
    if data is None or isinstance(data, str | int | float | bool):
        return data
    raise ValueError(f"not a logged metric value: {data!r}")


# ---- what is logged --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldRule:
    """Mask (replace with `***`) or drop one field, or every field a pattern matches, of
    the events of the stages `stages` match (`fnmatch` over `project/stage`)."""

    field: str  # SECTION or SECTION.NAME, NAME an fnmatch pattern
    action: Literal["mask", "drop"]
    stages: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        section = self.field.split(".", 1)[0]
        if section not in SECTIONS:
            raise ValueError(f"a log field is one of {', '.join(SECTIONS)} or SECTION.NAME, "
                             f"not {self.field!r}")
        if self.action not in ("mask", "drop"):
            raise ValueError(f"a log rule masks or drops, not {self.action!r}")

    @classmethod
    def parse(cls, text: str, action: Literal["mask", "drop"]) -> FieldRule:
        """`FIELD` or `FIELD@STAGE,STAGE` (the command line's spelling)."""
        name, _, stages = text.partition("@")
        return cls(name, action, tuple(s for s in stages.split(",") if s) or ("*",))

    def applies(self, stage_key: str) -> bool:
        return any(fnmatch.fnmatchcase(stage_key, p) for p in self.stages)


@dataclass(frozen=True, slots=True)
class LogPolicy:
    payload: tuple[str, ...] = ()  # stages (fnmatch over project/stage) whose text is logged
    rules: tuple[FieldRule, ...] = ()

    def logs_payload(self, stage_key: str) -> bool:
        return any(fnmatch.fnmatchcase(stage_key, p) for p in self.payload)

    def redact(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` with every rule for its stage applied; the paths touched are listed in
        `redacted`, so a reader (replay) knows a value was there and is not."""
        key = f"{event['project']}/{event['stage']}"
        touched: list[str] = []
        for rule in self.rules:
            if not rule.applies(key):
                continue
            section, _, pattern = rule.field.partition(".")
            held = event.get(section)
            if not isinstance(held, dict):
                continue
            if not pattern:
                if rule.action == "drop":
                    del event[section]
                else:
                    event[section] = {name: MASKED for name in held}
                touched.append(section)
                continue
            for name in [n for n in held if fnmatch.fnmatchcase(n, pattern)]:
                if rule.action == "drop":
                    del held[name]
                else:
                    held[name] = MASKED
                touched.append(f"{section}.{name}")
        if touched:
            event["redacted"] = sorted(set(touched))
        return event


# ---- one decision ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Decision:
    """What the decision path hands the log: the response and what it does not carry."""

    response: Any  # runtime.response.Response
    digest: str
    revision: int | None
    served: str  # "active", "candidate" (a rollout's), "pinned" or "local"
    payload: tuple[str, str] | None  # (input, output) when the policy logs text
    shadow: dict[str, Any] | None = None


def build_event(decision: Decision) -> dict[str, Any]:
    """The logged event of one decision (unredacted)."""
    r = decision.response
    meta = r.stage_metadata
    statuses = [s.value for s in r.ruleset_statuses]
    winner = r.winner
    names = r.ruleset_names
    event: dict[str, Any] = {
        "v": EVENT_VERSION,
        "decision_id": r.trace_metadata.id,
        "at": utc_text(r.trace_metadata.received_at),
        "project": meta.project,
        "stage": meta.stage_name,
        "version": meta.stage_version,
        "digest": decision.digest,
        "revision": decision.revision,
        "served": decision.served,
        "status": r.status.value,
        "ruleset": winner.name if winner is not None else None,
        "rulesets": [{"name": n, "status": s} for n, s in zip(names, statuses, strict=True)],
        "metrics": {name: encode_value(v) for name, v in (r.metric_values or {}).items()},
        "latency_ms": r.trace_metadata.execution_time * 1000,
        "metadata": dict(r.metadata) if r.metadata else {},
    }
    if r.error is not None:
        event["error"] = r.error
    if decision.payload is not None:
        event["payload"] = {"input": decision.payload[0], "output": decision.payload[1]}
    if decision.shadow is not None:
        event["shadow"] = decision.shadow
    return event


# ---- the log and its sinks -------------------------------------------------------------------

class Sink(Protocol):
    """Where events go: `write` delivers one batch or raises (the worker retries). `lines`
    are the events encoded, one JSON line each (encoded once for every sink)."""

    name: str

    def write(self, events: Sequence[dict[str, Any]],
              lines: Sequence[bytes] | None = None) -> None: ...

    def close(self) -> None: ...


@dataclass
class SinkStats:
    delivered: int = 0  # events a write accepted
    retried: int = 0  # failed writes of a batch that was then tried again
    dropped: int = 0  # events lost: the buffer was full, attempts ran out, or it closed
    failures: int = 0  # failed writes, in all
    last_error: str | None = None


class _Buffer:
    """A bounded FIFO that costs an offer one append: no lock, no wake-up per item (a
    deque's append and popleft are atomic). The consumer wakes every `wait` seconds, or at
    once when `batch` items are waiting; a full buffer drops."""

    def __init__(self, capacity: int, batch: int) -> None:
        self.items: deque[Any] = deque()
        self.capacity = capacity
        self.batch = batch
        self.wake = threading.Event()
        self.closed = False
        self.busy = 0  # items taken, not yet finished (written by the consumer only)

    def offer(self, item: Any) -> bool:
        items = self.items
        if self.closed or len(items) >= self.capacity:
            return False
        items.append(item)
        if len(items) == self.batch:
            self.wake.set()
        return True

    def take(self, most: int, wait: float) -> list[Any]:
        if len(self.items) < self.batch and not self.closed:
            self.wake.wait(wait)
        self.wake.clear()
        batch = []
        pop = self.items.popleft
        for _ in range(min(most, len(self.items))):
            batch.append(pop())
        self.busy = len(batch)
        return batch

    def done(self) -> None:
        """The batch last taken is finished."""
        self.busy = 0

    def pending(self) -> int:
        return len(self.items) + self.busy

    def close(self) -> int:
        """Stop taking offers; how many items were still waiting (then dropped)."""
        self.closed = True
        left = len(self.items)
        self.items.clear()
        self.wake.set()
        return left


class SinkWorker:
    """One sink on its own thread: batches of up to `batch` events, each write retried with
    exponential backoff (from `backoff` to `max_backoff` seconds) up to `attempts` times."""

    def __init__(self, sink: Sink, *, capacity: int = 10_000, batch: int = 500,
                 attempts: int = 8, backoff: float = 0.05, max_backoff: float = 2.0) -> None:
        self.sink = sink
        self.stats = SinkStats()
        self._buffer = _Buffer(capacity, batch)
        self._batch = batch
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._logged_at = -LOG_EVERY
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"stageguard-log-{sink.name}")
        self._thread.start()

    def offer(self, item: tuple[dict[str, Any], bytes]) -> None:
        if not self._buffer.offer(item):
            self.stats.dropped += 1

    def _run(self) -> None:
        while True:
            batch = self._buffer.take(self._batch, WAIT)
            if not batch:
                if self._buffer.closed:
                    return
                continue
            try:
                self._deliver(batch)
            finally:
                self._buffer.done()

    def _deliver(self, batch: list[tuple[dict[str, Any], bytes]]) -> None:
        delay = self._backoff
        events = [event for event, _ in batch]
        lines = [line for _, line in batch]
        for attempt in range(1, self._attempts + 1):
            try:
                self.sink.write(events, lines)
            except Exception as exc:  # any failure of the sink is the sink's
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if attempt == self._attempts or self._stop.is_set():
                    break
                self.stats.retried += 1
                if self._stop.wait(delay):
                    break
                delay = min(self._max_backoff, delay * 2)
            else:
                self.stats.delivered += len(batch)
                return
        self.stats.dropped += len(batch)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:  # a sink that stays down says so once a minute
            self._logged_at = now
            log.error("decision log sink %s dropped %d events so far: %s", self.sink.name,
                      self.stats.dropped, self.stats.last_error)

    def flush(self, timeout: float) -> bool:
        return _drain(self._buffer, timeout)

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        self._stop.set()  # a write still retrying gives up
        self.stats.dropped += self._buffer.close()
        self._thread.join(timeout=5)
        try:
            self.sink.close()
        except Exception as exc:
            log.error("decision log sink %s did not close: %s", self.sink.name, exc)


@dataclass
class LogStats:
    recorded: int = 0  # decisions handed to the log
    dropped: int = 0  # decisions the log's own buffer had no room for
    sinks: dict[str, SinkStats] = field(default_factory=dict)


class DecisionLog:
    """Decision events to sinks. `record` is what the decision path calls: one bounded
    append. Events are built, redacted once and offered to every sink by the log's thread."""

    def __init__(self, sinks: Iterable[Sink], policy: LogPolicy | None = None, *,
                 capacity: int = 10_000, **worker: Any) -> None:
        self.policy = policy or LogPolicy()
        self.workers = [SinkWorker(s, capacity=capacity, **worker) for s in sinks]
        names = [w.sink.name for w in self.workers]
        if len(set(names)) != len(names):
            raise ValueError(f"two decision log sinks share a name: {names}")
        self._buffer = _Buffer(capacity, 500)
        self.recorded = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stageguard-decision-log")
        self._thread.start()

    def wants_payload(self, stage_key: str) -> bool:
        return self.policy.logs_payload(stage_key)

    def record(self, decision: Decision) -> None:
        if self._buffer.offer(decision):
            self.recorded += 1
        else:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            batch = self._buffer.take(CHUNK, WAIT)
            if not batch:
                if self._buffer.closed:
                    return
                continue
            try:
                for decision in batch:
                    try:
                        event = self.policy.redact(build_event(decision))
                        line = encode_line(event)  # once, for every sink
                    except Exception:
                        log.exception("decision event not built")
                        continue
                    for worker in self.workers:
                        worker.offer((event, line))
            finally:
                self._buffer.done()
            time.sleep(0)  # between chunks, let a deciding thread have the interpreter

    def stats(self) -> LogStats:
        return LogStats(self.recorded, self.dropped,
                        {w.sink.name: w.stats for w in self.workers})

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        if not _drain(self._buffer, timeout):
            return False
        return all(w.flush(max(0.0, deadline - time.monotonic())) for w in self.workers)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self.dropped += self._buffer.close()
        self._thread.join(timeout=5)
        for w in self.workers:
            w.close(max(0.1, timeout / 2))


def _drain(buffer: _Buffer, timeout: float) -> bool:
    """Wait until `buffer` is empty and its consumer idle (waking it); False on timeout."""
    deadline = time.monotonic() + timeout
    while buffer.pending():
        if time.monotonic() >= deadline:
            return False
        buffer.wake.set()
        time.sleep(0.005)
    return True


def encode_line(event: Mapping[str, Any]) -> bytes:
    """An event as one JSON line (strict JSON: non-finite numbers are tagged already)."""
    return (json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            + "\n").encode("utf-8")


def decided_nothing(event: Mapping[str, Any]) -> bool:
    """A logged decision that evaluated no ruleset: paused, skipped, or refused (on_stale
    fail_closed, with its `error`). Replay and diff --traffic count these apart."""
    status = event.get("status")
    return status in (Status.PAUSED.value, Status.SKIPPED.value) or (
        status == Status.ERROR.value and bool(event.get("error")))


def metric_values(event: Mapping[str, Any]) -> dict[str, object] | None:
    """A logged event's metric values as the decision had them (None for an event this
    stageguard cannot read); redacted metrics are left out."""
    metrics = event.get("metrics")
    if not isinstance(metrics, dict):
        return None
    redacted = set(event.get("redacted") or ())
    try:
        return {name: decode_value(v) for name, v in metrics.items()
                if f"metrics.{name}" not in redacted and "metrics" not in redacted}
    except (ValueError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Which sinks a service logs decisions to, and what it logs (the `serve` flags)."""

    file: str | None = None  # JSONL, rotated at `max_bytes`, `backups` kept
    url: str | None = None  # an HTTP collector
    postgres: str | None = None  # the PostgreSQL store's table
    policy: LogPolicy = field(default_factory=LogPolicy)
    max_bytes: int = 64 * 2**20
    backups: int = 5

    def open(self) -> DecisionLog | None:
        """The log these settings describe (None when they name no sink)."""
        from stageguard.runtime.log_sinks import HttpSink, JsonlSink

        sinks: list[Sink] = []
        if self.file is not None:
            sinks.append(JsonlSink(self.file, max_bytes=self.max_bytes, backups=self.backups))
        if self.url is not None:
            sinks.append(HttpSink(self.url))
        if self.postgres is not None:
            from stageguard.runtime.postgres import PostgresDecisionSink

            sinks.append(PostgresDecisionSink(self.postgres))
        return DecisionLog(sinks, self.policy) if sinks else None
