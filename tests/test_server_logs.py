"""The service's JSON log lines: the per-request fast line equals what logging writes."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from stageguard.server import logs


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("info")
    handler = root.handlers[0]
    yield stream, handler
    handler.close()
    root.handlers[:], level = saved
    root.setLevel(level)
    monkeypatch.setattr(logs, "_installed", None)


def test_the_direct_line_is_the_formatters_line(installed) -> None:  # type: ignore[no-untyped-def]
    stream, handler = installed
    fields = {"trace_id": "t-1", "status": 200, "ratio": 0.25, "who": None, "ü": "é"}
    logs.info(logs.ACCESS, "request", fields)  # written without a LogRecord
    logs.ACCESS.info("request", extra=fields)  # through logging and the formatter
    handler.flush()
    direct, formatted = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct.pop("ts").endswith("Z") and formatted.pop("ts").endswith("Z")
    assert direct == formatted == {"level": "info", "logger": "stageguard.access",
                                   "message": "request", **fields}
    assert list(direct) == list(formatted)


def test_another_handler_gets_the_record(installed,  # type: ignore[no-untyped-def]
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stageguard.decision"):
        logs.info(logs.DECISION, "decision", {"trace_id": "t-2"})
    assert [(r.message, getattr(r, "trace_id", None)) for r in caplog.records] == [
        ("decision", "t-2")]


def test_warnings_are_written_at_once(installed) -> None:  # type: ignore[no-untyped-def]
    stream, _ = installed
    logging.getLogger("stageguard.server").warning("registry unreadable")
    assert json.loads(stream.getvalue())["message"] == "registry unreadable"


def test_what_orjson_refuses_is_written_by_the_standard_encoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # stderr as it is: UTF-8, strict. A line that cannot be encoded would fail the write of
    # its whole batch, the lines around it too.
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8",
                                                        errors="strict"))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("info")
    handler = root.handlers[0]
    try:
        logs.info(logs.ACCESS, "request", {"n": 1})
        logs.info(logs.ACCESS, "request", {"big": 2**70, "lone": "a\ud800b",
                                           "other": {1, 2}.__class__})
        logs.info(logs.ACCESS, "request", {"n": 3})
        handler.flush()
        lines = [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]
    finally:
        handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
        monkeypatch.setattr(logs, "_installed", None)
    assert [line.get("n") for line in lines] == [1, None, 3]
    assert lines[1]["big"] == 2**70 and lines[1]["lone"] == "a\ud800b"
    assert lines[1]["other"] == str(set)
