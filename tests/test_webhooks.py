"""Subscriptions deliver real HTTP POSTs to a server on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Status
from stageguard.runtime.webhooks import Notifier
from tests.runtime_helpers import Sink, build


def stage(url: str, on: str = "") -> str:
    return (f'project p\nstage s {{\n  ruleset r {{\n    when input_toxicity > 0.5\n'
            f'    override {{\n      choice "no"\n    }}\n    notify "{url}"{on}\n  }}\n'
            f'  ruleset q {{\n    when input_sexist > 0.5\n    notify "{url}" on not_triggered, '
            f"error\n  }}\n}}\n")


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def fast_notifier(**kw: object) -> Notifier:
    return Notifier(timeout=2.0, retries=2, backoff=0.05, allow_hosts=["127.0.0.1"], **kw)


def test_body_is_the_response_and_statuses_filter(tmp_path: Path, sink: Sink) -> None:
    build(tmp_path / "r", stage(sink.url))
    with Runtime(tmp_path / "r", notifier=fast_notifier()) as rt:
        r = rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.9, "input_sexist": 0.1}},
                      "s", metadata={"k": "v"})
        assert rt.flush(5)
    # r triggered (default statuses: triggered) and q ended not_triggered (subscribed).
    assert len(sink.bodies) == 2
    assert {b["trace_metadata"]["id"] for b in sink.bodies} == {r.trace_metadata.id}
    body = sink.bodies[0]
    assert body["status"] == "TRIGGERED" and body["text"] == "no"
    assert body["metadata"] == {"k": "v"}
    assert [x["status"] for x in body["ruleset_results"]] == ["TRIGGERED", "NOT_TRIGGERED"]


def test_no_post_when_the_status_is_not_subscribed(tmp_path: Path, sink: Sink) -> None:
    build(tmp_path / "r", stage(sink.url))
    with Runtime(tmp_path / "r", notifier=fast_notifier()) as rt:
        rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.1, "input_sexist": 0.9}}, "s")
        assert rt.flush(5)
    assert sink.bodies == []  # r not triggered (not subscribed), q triggered (not subscribed)


def test_retries_5xx_with_backoff_then_delivers(tmp_path: Path) -> None:
    sink = Sink(plan=[500, 503])
    try:
        build(tmp_path / "r", stage(sink.url))
        with Runtime(tmp_path / "r", notifier=fast_notifier()) as rt:
            rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.9, "input_sexist": 0.9}},
                      "s")
            assert rt.flush(5)
        assert sink.attempts == 3 and len(sink.bodies) == 1
    finally:
        sink.close()


def test_4xx_is_final_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(plan=[404])
    try:
        build(tmp_path / "r", stage(sink.url))
        notifier = fast_notifier()
        with caplog.at_level(logging.WARNING, "stageguard.webhooks"), \
                Runtime(tmp_path / "r", notifier=notifier) as rt:
            rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.9, "input_sexist": 0.9}},
                      "s")
            assert rt.flush(5)
        assert sink.attempts == 1 and notifier.dropped == 1
        assert "webhook dropped" in caplog.text and "HTTP 404" in caplog.text
    finally:
        sink.close()


def test_dead_endpoint_costs_the_decision_nothing(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    build(tmp_path / "r", stage(dead))
    notifier = fast_notifier()
    with caplog.at_level(logging.WARNING, "stageguard.webhooks"), \
            Runtime(tmp_path / "r", notifier=notifier) as rt:
        started = time.perf_counter()
        for _ in range(20):
            r = rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.9,
                                                     "input_sexist": 0.9}}, "s")
            assert r.status is Status.TRIGGERED
        assert time.perf_counter() - started < 0.5  # 20 decisions, no waiting on delivery
        assert rt.flush(30)
    assert notifier.dropped == 20
    assert "gave up after 3 attempts" in caplog.text


def test_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    notifier = Notifier(max_queue=1, workers=1, allow_hosts=["127.0.0.1"], timeout=0.5,
                        retries=0)
    blocker = Sink()
    try:
        accepted = [notifier.send(blocker.url, lambda i=i: {"n": i}) for i in range(200)]
        assert accepted.count(False) > 0 and notifier.dropped == accepted.count(False)
        assert notifier.flush(10)
    finally:
        notifier.close()
        blocker.close()


def test_allowlist_and_scheme(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(allow_hosts=["127.0.0.1"])
    try:
        with caplog.at_level(logging.WARNING, "stageguard.webhooks"):
            assert not notifier.send("https://hooks.example.com/x", dict)
            assert not notifier.send("ftp://127.0.0.1/x", dict)
        assert notifier.dropped == 2 and "not allowed" in caplog.text
    finally:
        notifier.close()
