"""HTTP scorers (`scorer "http://…"` on a metric) against a real model service on 127.0.0.1
that answers, sleeps, fails and returns junk, through `invoke` and `ainvoke`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Status
from stageguard.runtime.scorers import Scorers
from tests.runtime_helpers import build


class ModelService:
    """A model service: `/score` answers `answers`; `/slow` first sleeps; `/fail` answers
    500; `/junk` answers text; `/list` a JSON list; `/big` more than a MiB. It records each
    request's body and the client port it came from (keep-alive reuses ports)."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {"tox": 0.9, "scores": {"topic": "billing"}}
        self.bodies: list[dict[str, Any]] = []
        self.ports: set[int] = set()
        self.in_flight = self.most_in_flight = 0
        self.sleep = 0.0
        self.release = threading.Event()
        service = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                service.bodies.append(body)
                service.ports.add(self.client_address[1])
                if self.path == "/slow":
                    with lock:
                        service.in_flight += 1
                        service.most_in_flight = max(service.most_in_flight,
                                                     service.in_flight)
                    service.release.wait(service.sleep)
                    with lock:
                        service.in_flight -= 1
                if self.path == "/fail":
                    return self._send(500, b'{"error": "overloaded"}')
                if self.path == "/junk":
                    return self._send(200, b"<html>not json</html>")
                if self.path == "/list":
                    return self._send(200, b"[0.5]")
                if self.path == "/big":
                    return self._send(200, b'{"tox": "' + b"x" * (2 << 20) + b'"}')
                return self._send(200, json.dumps(service.answers).encode())

            def _send(self, status: int, raw: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the async test opens 20 connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[ModelService]:
    made = ModelService()
    yield made
    made.close()


def policy(url: str, path: str = "/score", timeout: str = "") -> str:
    budget = f"\n  timeout {timeout}" if timeout else ""
    return f"""project p
metric tox {{
  type score
  scorer "{url}{path}"{budget}
}}
metric topic {{
  type label
  scorer "{url}{path}"
  field "scores.topic"
}}
stage s {{
  type central
  ruleset both {{
    when tox > 0.5
    when topic == "billing"
    override {{
      choice "blocked"
    }}
  }}
}}
"""


def runtime(tmp_path: Path, text: str) -> Runtime:
    build(tmp_path / "r", text)
    return Runtime(tmp_path / "r", poll_interval=None, deliver_webhooks=False,
                   scorers=Scorers(entry_point_group=None))


def test_metrics_sharing_a_service_go_in_one_request_over_kept_connections(
        tmp_path: Path, service: ModelService) -> None:
    with runtime(tmp_path, policy(service.url)) as rt:
        for _ in range(5):
            r = rt.invoke({"input": "my card", "output": "a reply"}, "s",
                          metadata={"user": "u1"})
            assert r.status is Status.TRIGGERED and r.text == "blocked"
            assert r.metric_results["topic"].value == "billing"
            assert r.metric_results["tox"].source == "scorer"
    assert len(service.bodies) == 5  # one request per decision for both metrics
    assert all(sorted(b["metrics"]) == ["topic", "tox"] for b in service.bodies)
    assert service.bodies[0] == {"input": "my card", "output": "a reply",
                                 "metadata": {"user": "u1"},
                                 "metrics": service.bodies[0]["metrics"]}
    assert len(service.ports) == 1  # keep-alive: one connection for every request


def test_the_async_path_batches_and_decides_the_same(tmp_path: Path,
                                                     service: ModelService) -> None:
    with runtime(tmp_path, policy(service.url)) as rt:
        sync = rt.invoke({"output": "x"}, "s")

        async def run() -> list[Any]:
            return await asyncio.gather(*(rt.ainvoke({"output": "x"}, "s") for _ in range(20)))

        out = asyncio.run(run())
    assert all(r.status is sync.status and r.text == sync.text for r in out)
    assert all(r.metric_results["tox"].value == 0.9 for r in out)
    assert len(service.bodies) == 21


def test_the_async_path_keeps_to_its_connections(tmp_path: Path,
                                                 service: ModelService) -> None:
    """Forty invocations at once against a slow service, with 12 connections (split over
    clients of at most 8, `SHARD`): never more than 12 requests at the service at once, over
    at most 12 connections, and every invocation answered."""
    service.sleep = 0.05
    build(tmp_path / "r", policy(service.url, "/slow"))
    with Runtime(tmp_path / "r", poll_interval=None, deliver_webhooks=False,
                 scorers=Scorers(entry_point_group=None, http_connections=12)) as rt:
        async def run() -> list[Any]:
            return await asyncio.gather(*(rt.ainvoke({"output": "x"}, "s", timeout=10)
                                          for _ in range(40)))

        out = asyncio.run(run())
    assert all(r.status is Status.TRIGGERED for r in out)
    assert len(service.bodies) == 40
    assert 8 < service.most_in_flight <= 12  # both clients used, the bound kept
    assert len(service.ports) <= 12


@pytest.mark.parametrize(("path", "words"), [
    ("/fail", "HTTP 500"),
    ("/junk", "not JSON"),
    ("/list", "not an object"),
    ("/big", "above 1,048,576 bytes"),
])
def test_a_failing_service_fails_its_metrics(tmp_path: Path, service: ModelService,
                                             path: str, words: str) -> None:
    with runtime(tmp_path, policy(service.url, path)) as rt:
        r = rt.invoke({"output": "x"}, "s")
        ar = asyncio.run(rt.ainvoke({"output": "x"}, "s"))
    for got in (r, ar):
        assert got.status is Status.FAILED
        assert got.ruleset_statuses == (Status.FAILED,)
        assert words in (got.metric_results["tox"].error or "")


def test_a_missing_field_or_a_bad_value_fails_only_that_metric(tmp_path: Path,
                                                               service: ModelService) -> None:
    service.answers = {"tox": 0.9, "scores": {}}
    with runtime(tmp_path, policy(service.url)) as rt:
        r = rt.invoke({"output": "x"}, "s")
        service.answers = {"tox": {"nested": 1}, "scores": {"topic": "billing"}}
        bad = rt.invoke({"output": "x"}, "s")
    assert r.metric_results["tox"].status == "success"
    assert r.metric_results["topic"].status == "failed"
    assert "no field `scores.topic`" in (r.metric_results["topic"].error or "")
    assert bad.metric_results["tox"].status == "failed"
    assert "bad value" in (bad.metric_results["tox"].error or "")
    assert bad.metric_results["topic"].status == "success"


def test_a_slow_service_times_out_at_the_metrics_budget(tmp_path: Path,
                                                        service: ModelService) -> None:
    service.sleep = 5.0
    with runtime(tmp_path, policy(service.url, "/slow", timeout="100ms")) as rt:
        started = time.perf_counter()
        r = rt.invoke({"output": "x"}, "s", timeout=30)
        waited = time.perf_counter() - started
        ar = asyncio.run(rt.ainvoke({"output": "x"}, "s", timeout=30))
    assert waited < 5.0  # the budget, not the invocation's 30 s, bounded it
    for got in (r, ar):
        # One request for both metrics: it carries the earlier deadline, tox's budget.
        assert got.metric_results["tox"].status == "timeout"
        assert "budget" in (got.metric_results["tox"].error or "")
        assert got.status is Status.TIMEOUT


def test_a_refused_connection_is_a_failure(tmp_path: Path) -> None:
    with runtime(tmp_path, policy("http://127.0.0.1:9")) as rt:
        r = rt.invoke({"output": "x"}, "s")
    assert r.metric_results["tox"].status == "failed"
    assert "ConnectError" in (r.metric_results["tox"].error or "")


def test_payload_values_and_code_scorers_come_before_the_service(
        tmp_path: Path, service: ModelService) -> None:
    with runtime(tmp_path, policy(service.url)) as rt:
        rt.scorers.register("topic", lambda req: "shipping")
        r = rt.invoke({"output": "x", "metrics": {"tox": 0.1}}, "s")
        assert r.status is Status.NOT_TRIGGERED
        r = rt.invoke({"output": "x"}, "s")
    assert r.metric_results["topic"].value == "shipping"
    assert [b["metrics"] for b in service.bodies] == [["tox"]]


def test_the_service_answers_precomputed_invokes_while_a_scorer_is_slow(
        tmp_path: Path, service: ModelService) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.server_helpers import INVOKER, serving

    service.sleep = 30.0  # until released
    build(tmp_path / "r", policy(service.url, "/slow"))
    with serving(tmp_path / "r") as served, served.client(INVOKER) as c, \
            ThreadPoolExecutor(1) as background:
        body = {"stage_name": "s", "timeout": 20}
        slow = background.submit(c.post, "/protect/invoke",
                                 json={**body, "payload": {"output": "x"}})
        deadline = time.monotonic() + 5
        while not service.bodies and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.bodies, "the scored invoke reached the model service"
        with served.client(INVOKER) as other:
            for _ in range(20):  # one event loop: these are answered while it waits
                quick = other.post("/protect/invoke", json={
                    **body, "payload": {"output": "x", "metrics": {"tox": 0.9,
                                                                   "topic": "billing"}}})
                assert quick.status_code == 200 and quick.json()["status"] == "TRIGGERED"
        assert not slow.done()
        service.release.set()
        answer = slow.result(timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "TRIGGERED"
