"""Subscriptions deliver real HTTP POSTs to a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stageguard.runtime.engine import InvalidRequest, Runtime
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


# ---- where a POST may go, and how long it may take ---------------------------------------

class _Scripted:
    """A raw TCP receiver on 127.0.0.1 whose answer a test scripts byte by byte."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.answer = answer
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            self.answer(conn)

    def close(self) -> None:
        self.sock.close()


def _drip(conn: socket.socket) -> None:
    for _ in range(100):  # one byte every 0.1 s: each read is quick, the answer never ends
        conn.sendall(b"H")
        time.sleep(0.1)


def _endless_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400000000\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(100):
        conn.sendall(chunk)
        time.sleep(0.01)


def test_redirects_are_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    target = Sink()
    redirect = _Scripted(lambda c: c.sendall(
        f"HTTP/1.1 302 Found\r\nLocation: {target.url}\r\nContent-Length: 0\r\n\r\n".encode()))
    notifier = fast_notifier()
    try:
        with caplog.at_level(logging.WARNING, "stageguard.webhooks"):
            assert notifier.send(redirect.url, lambda: {"a": 1})
            assert notifier.flush(5)
        assert (notifier.sent, notifier.dropped, target.attempts) == (0, 1, 0)
        assert "HTTP 302 (redirects are not followed)" in caplog.text
    finally:
        notifier.close()
        redirect.close()
        target.close()


def test_without_an_allowlist_only_public_addresses_are_posted_to(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    open_notifier = Notifier(timeout=1.0, retries=0)
    try:
        with caplog.at_level(logging.WARNING, "stageguard.webhooks"):
            for url in (sink.url, "http://169.254.169.254/latest/meta-data",
                        "http://10.0.0.7/x", "http://[::1]:8080/x", "http://localhost/x",
                        "http://[::ffff:127.0.0.1]/x"):
                assert not open_notifier.send(url, dict), url
            # A name is checked where it resolves, at delivery: this machine's own name
            # resolves to one of its private or loopback addresses.
            name = socket.gethostname()
            address = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0]
            if ipaddress.ip_address(address).is_global:
                pytest.skip(f"{name} resolves to a public address here")
            port = sink.url.split(":")[2].split("/")[0]
            assert open_notifier.send(f"http://{name}:{port}/hook", dict)
            assert open_notifier.flush(5)
        assert open_notifier.dropped == 7 and sink.attempts == 0
        assert f"{name} resolves to {address}" in caplog.text
    finally:
        open_notifier.close()
    allowed = Notifier(timeout=1.0, retries=0, allow_networks=["127.0.0.0/8"])
    try:
        assert allowed.send(sink.url, lambda: {"ok": True})
        assert allowed.flush(5) and allowed.sent == 1 and sink.bodies == [{"ok": True}]
    finally:
        allowed.close()
        sink.close()


def test_a_slow_or_endless_receiver_costs_one_deadline_per_attempt() -> None:
    drippers = [_Scripted(_drip), _Scripted(_drip)]
    endless = _Scripted(_endless_body)
    good = Sink()
    notifier = Notifier(timeout=0.5, retries=0, workers=1, allow_hosts=["127.0.0.1"])
    try:
        for d in drippers:
            notifier.send(d.url, dict)
        notifier.send(endless.url, dict)
        notifier.send(good.url, lambda: {"after": "the slow ones"})
        # Two drippers at 0.5 s each; the endless body is never read; then the good one.
        assert notifier.flush(5)
        assert good.bodies == [{"after": "the slow ones"}]
        assert notifier.dropped == 2 and notifier.sent == 2  # the endless one answered 200
    finally:
        notifier.close()
        for r in (*drippers, endless):
            r.close()
        good.close()


def test_runtime_refuses_non_public_webhook_urls_when_rulesets_are_accepted(
        tmp_path: Path) -> None:
    build(tmp_path / "r", stage("https://hooks.example.com/x"))
    with Runtime(tmp_path / "r") as rt:
        rules = [{"rules": [{"metric": "input_toxicity", "operator": "gt", "target_value": 0.5}],
                  "action": {"type": "PASSTHROUGH", "subscriptions": [
                      {"url": "http://169.254.169.254/latest", "statuses": ["triggered"]}]}}]
        with pytest.raises(InvalidRequest, match=r"169\.254\.169\.254.*not public"):
            rt.update_stage(project="p", stage_name="s", prioritized_rulesets=rules)


def test_a_scorers_infinite_value_reaches_the_webhook_as_strict_json(tmp_path: Path,
                                                                    sink: Sink) -> None:
    import json

    from stageguard.runtime.scorers import Scorers

    build(tmp_path / "r", stage(sink.url))
    scorers = Scorers(entry_point_group=None)
    scorers.register("input_toxicity", lambda _: float("inf"))
    scorers.register("input_sexist", lambda _: float("nan"))
    with Runtime(tmp_path / "r", notifier=fast_notifier(), scorers=scorers) as rt:
        rt.invoke({"input": "x"}, "s")
        assert rt.flush(5)
    assert sink.bodies, "the webhook was not delivered"
    raw = json.dumps(sink.bodies[0])
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} in the body"))
    values = sink.bodies[0]["metric_results"]
    assert values["input_toxicity"]["value"] == "Infinity"
    assert values["input_sexist"]["value"] == "NaN"


def test_a_hanging_name_lookup_costs_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver is the system's; a hanging one is made here by a lookup that sleeps.
    real = socket.getaddrinfo

    def hanging(host: str, *args: object, **kwargs: object) -> object:
        if host == "slow.example":
            time.sleep(5)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    good = Sink()
    notifier = Notifier(timeout=0.3, retries=0, workers=1,
                        allow_hosts=["slow.example", "127.0.0.1"])
    try:
        started = time.monotonic()
        notifier.send("http://slow.example/hook", dict)
        notifier.send(good.url, lambda: {"after": "the lookup"})
        assert notifier.flush(3) and time.monotonic() - started < 2
        assert good.bodies == [{"after": "the lookup"}] and notifier.dropped == 1
    finally:
        notifier.close()
        good.close()
