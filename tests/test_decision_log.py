"""Decision logs (runtime/decision_log.py, runtime/log_sinks.py): the event of a decision,
redaction before any sink, a rotating file, an HTTP collector that goes away and comes back,
and the PostgreSQL store's table, all real."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import strategies as st

from stageguard.runtime.decision_log import (
    MASKED,
    DecisionLog,
    FieldRule,
    LogPolicy,
    decode_value,
    encode_value,
    metric_values,
)
from stageguard.runtime.engine import Runtime
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.log_sinks import HttpSink, JsonlSink, read_events
from stageguard.runtime.model import Status
from tests.profiles import examples
from tests.runtime_helpers import build

STAGE = """project p
stage s {
  ruleset tox {
    when input_toxicity > 0.5
  }
  ruleset pii {
    when input_pii any ["ssn"]
  }
}
"""


class Receiver:
    """A real HTTP collector on 127.0.0.1 (gzip NDJSON bodies), stoppable and restartable
    on the same port."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []  # each accepted body, decompressed
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver.lock:
                    receiver.raw.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for body in self.raw for line in body.splitlines()]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _fast(**kw: Any) -> dict[str, Any]:
    return {"backoff": 0.01, "max_backoff": 0.05, **kw}


# ---- metric values are logged exactly --------------------------------------------------------

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.builds(Failure, st.sampled_from([Status.FAILED, Status.TIMEOUT, Status.ERROR]),
              st.text(max_size=10)))


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@examples(5)
@given(values)
def test_a_metric_value_round_trips_through_the_log_exactly(value: object) -> None:
    logged = json.loads(json.dumps(encode_value(value), allow_nan=False))
    assert _same(decode_value(logged), value)


def test_the_label_nan_and_the_number_nan_stay_apart() -> None:
    assert decode_value(json.loads(json.dumps(encode_value("NaN")))) == "NaN"
    assert math.isnan(decode_value(json.loads(json.dumps(encode_value(float("nan"))))))


# ---- the event of a decision -----------------------------------------------------------------

def test_an_event_holds_the_decision_and_no_text_unless_asked(tmp_path: Path) -> None:
    build(tmp_path / "reg", STAGE)
    out = tmp_path / "decisions.jsonl"
    log = DecisionLog([JsonlSink(out)], LogPolicy(payload=("p/other",)))
    with Runtime(tmp_path / "reg", decision_log=log) as rt:
        r = rt.invoke({"input": "my secret prompt", "metrics": {
            "input_toxicity": 0.9, "input_pii": ["ssn"]}}, "s", metadata={"user": "u1"})
        assert rt.flush(5)
        digest = rt.artifact(stage_name="s").digest
    (event,) = read_events([out])
    assert event["decision_id"] == r.decision_id == r.trace_metadata.id
    assert (event["project"], event["stage"], event["version"], event["digest"]) == \
        ("p", "s", 1, digest)
    at = dt.datetime.strptime(event["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) == \
        r.trace_metadata.received_at // 1000
    assert event["revision"] == 1 and event["served"] == "active"
    assert event["status"] == "triggered" and event["ruleset"] == "tox"
    assert event["rulesets"] == [{"name": n, "status": s.value} for n, s in
                                 zip(["tox", "pii"], r.ruleset_statuses, strict=True)]
    assert metric_values(event) == {"input_toxicity": 0.9, "input_pii": ("ssn",)}
    assert event["metadata"] == {"user": "u1"} and event["latency_ms"] >= 0
    assert "payload" not in event and "my secret prompt" not in out.read_text()


def test_the_operator_can_log_a_stages_text(tmp_path: Path) -> None:
    build(tmp_path / "reg", STAGE)
    out = tmp_path / "d.jsonl"
    with Runtime(tmp_path / "reg", decision_log=DecisionLog(
            [JsonlSink(out)], LogPolicy(payload=("p/*",)))) as rt:
        rt.invoke({"input": "hello", "metrics": {"input_toxicity": 0.1}}, "s")
        assert rt.flush(5)
    (event,) = read_events([out])
    assert event["payload"] == {"input": "hello", "output": ""}
    assert event["status"] == "not_triggered"  # pii: no source, fail open (error)


def test_a_field_rule_names_a_known_section() -> None:
    with pytest.raises(ValueError, match="metadata, metrics, payload"):
        FieldRule("headers.x", "mask")
    rule = FieldRule.parse("metadata.email@p/s,q/*", "drop")
    assert (rule.field, rule.stages) == ("metadata.email", ("p/s", "q/*"))
    assert rule.applies("q/x") and not rule.applies("p/t")


# ---- redaction: a masked field reaches no sink -----------------------------------------------

secret = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=12, max_size=16).map(
    lambda s: f"SECRET{s}#")  # delimited: no secret is a part of another
keys = st.sampled_from(["email", "user", "session", "ip", "note"])


@examples(0.3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=st.dictionaries(keys, secret, min_size=1, max_size=5),
       masked=st.sets(keys, min_size=1), how=st.sampled_from(["mask", "drop"]),
       by_pattern=st.booleans(), text=secret, log_text=st.booleans())
def test_a_masked_field_never_reaches_any_sink(tmp_path_factory: pytest.TempPathFactory,
                                               receiver: Receiver, metadata: dict[str, str],
                                               masked: set[str], how: str, by_pattern: bool,
                                               text: str, log_text: bool) -> None:
    assume(len({*metadata.values(), text}) == len(metadata) + 1)  # each secret its own
    root = tmp_path_factory.mktemp("mask")
    build(root / "reg", STAGE)
    rules = [FieldRule("metadata.*" if by_pattern else f"metadata.{k}", how,  # type: ignore[arg-type]
                       ("p/*",)) for k in (sorted(masked)[:1] if by_pattern else masked)]
    rules.append(FieldRule("payload.input", how, ("p/s",)))  # type: ignore[arg-type]
    hidden = {k: v for k, v in metadata.items() if by_pattern or k in masked}
    before = len(receiver.raw)
    log = DecisionLog([JsonlSink(root / "d.jsonl"), HttpSink(receiver.url)],
                      LogPolicy(payload=("p/*",) if log_text else (), rules=tuple(rules)),
                      **_fast())
    with Runtime(root / "reg", decision_log=log) as rt:
        rt.invoke({"input": text, "metrics": {"input_toxicity": 0.2}}, "s", metadata=metadata)
        assert rt.flush(5)
    written = [(root / "d.jsonl").read_bytes(), *receiver.raw[before:]]
    assert len(written) == 2
    for data in written:
        for value in [*hidden.values(), text]:
            assert value.encode() not in data
        (event,) = [json.loads(line) for line in data.splitlines()]
        for key, value in metadata.items():  # what no rule names is logged as it was
            if key not in hidden:
                assert event["metadata"][key] == value
            elif how == "mask":
                assert event["metadata"][key] == MASKED
            else:
                assert key not in event["metadata"]
        assert {f"metadata.{k}" for k in hidden} <= set(event.get("redacted", ()))


# ---- the file sink -------------------------------------------------------------------------------

def test_the_file_rotates_and_keeps_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = JsonlSink(path, max_bytes=4096, backups=50)
    for i in range(300):
        sink.write([{"decision_id": str(i), "project": "p", "stage": "s", "pad": "x" * 40}])
    sink.close()
    files = sorted(tmp_path.iterdir(), key=lambda p: int(p.suffix[1:]) if p.suffix[1:]
                   .isdigit() else 0, reverse=True)
    assert len(files) > 3 and all(f.stat().st_size <= 4096 for f in files)
    ids = [e["decision_id"] for e in read_events(files)]
    assert ids == [str(i) for i in range(300)]  # oldest file first, nothing lost or torn


def test_the_oldest_files_go_beyond_the_backups_kept(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = JsonlSink(path, max_bytes=4096, backups=2)
    for i in range(300):
        sink.write([{"decision_id": str(i), "pad": "x" * 40}])
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]


def test_an_unterminated_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"decision_id": "a"}\n{"decision_id": "b"}\n{"decision_')
    assert [e["decision_id"] for e in read_events([path])] == ["a", "b"]


# ---- the HTTP sink, with the collector killed and restarted ----------------------------------

def test_5000_decisions_while_the_collector_goes_away_and_comes_back(
        tmp_path: Path, receiver: Receiver) -> None:
    build(tmp_path / "reg", STAGE)
    log = DecisionLog([HttpSink(receiver.url, timeout=1.0)], capacity=20_000, batch=100,
                      **_fast(attempts=100, max_backoff=0.1))
    ids = []
    with Runtime(tmp_path / "reg", decision_log=log) as rt:
        for i in range(5_000):
            if i == 1_500:
                receiver.stop()  # down for the next 2,000 decisions
            if i == 3_500:
                receiver.start()
            r = rt.invoke({"input": "x", "metrics": {"input_toxicity": (i % 10) / 10}}, "s")
            ids.append(r.decision_id)
            if 1_500 <= i < 3_500 and i % 500 == 0:
                time.sleep(0.1)  # the sink retries meanwhile
        assert rt.flush(20)
        stats = log.stats().sinks[f"http:127.0.0.1:{receiver.port}/events"]
    got = [e["decision_id"] for e in receiver.events()]
    print(f"\nhttp sink, collector down for 2,000 of 5,000 decisions: delivered "
          f"{stats.delivered}, distinct received {len(set(got))}, retried writes "
          f"{stats.retried}, dropped {stats.dropped}")
    assert stats.retried > 0  # the collector was down, and the sink tried again
    assert set(got) <= set(ids)
    # At least once: every event is delivered or counted as dropped; duplicates (a batch
    # whose answer was lost) carry the same decision id.
    assert len(set(got)) + stats.dropped >= len(ids)
    assert stats.dropped == 0 and set(got) == set(ids)


def test_a_sink_that_is_down_never_fails_a_decision(tmp_path: Path) -> None:
    build(tmp_path / "reg", STAGE)
    down = Receiver()
    down.stop()  # nothing listens on its port
    log = DecisionLog([HttpSink(down.url, timeout=0.5)], capacity=100, **_fast(attempts=2))
    with Runtime(tmp_path / "reg", decision_log=log) as rt:
        statuses = {rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.9}}, "s").status
                    for _ in range(1_000)}
        assert statuses == {Status.TRIGGERED}
        rt.flush(5)
        stats = log.stats()
    sink = next(iter(stats.sinks.values()))
    assert sink.delivered == 0 and sink.failures > 0
    assert sink.dropped + stats.dropped >= 900  # the bounded buffers dropped and counted


# ---- the PostgreSQL store's table --------------------------------------------------------------

def test_decisions_go_into_the_postgresql_store(postgres: Any) -> None:
    from stageguard.compiler.pipeline import compile_text
    from stageguard.runtime.postgres import PostgresDecisionSink, PostgresRegistry

    url = postgres.new_database()
    store = PostgresRegistry(url)
    store.migrate()
    store.publish(compile_text(STAGE, "p.sg").artifacts)
    sink = PostgresDecisionSink(url)
    log = DecisionLog([sink], LogPolicy(rules=(FieldRule("metadata.email", "mask"),)),
                      **_fast())
    with Runtime(url, decision_log=log) as rt:
        made = [rt.invoke({"input": "x", "metrics": {"input_toxicity": v}}, "s",
                          metadata={"email": "SECRETQWERTY@x"}) for v in (0.1, 0.9, float("nan"))]
        assert rt.flush(10)
    rows = store.read_decisions("p", "s")
    assert sorted(e["decision_id"] for e in rows) == sorted(r.decision_id for r in made)
    assert all("SECRETQWERTY" not in json.dumps(e) for e in rows)
    by_id = {e["decision_id"]: e for e in rows}
    assert [by_id[r.decision_id]["status"] for r in made] == [r.status.value for r in made]
    assert math.isnan(metric_values(by_id[made[2].decision_id])["input_toxicity"])  # type: ignore[index, arg-type]
    again = PostgresDecisionSink(url)
    again.write(rows)  # a batch sent twice inserts nothing twice
    again.close()
    assert len(store.read_decisions()) == 3
    store.close()
