"""Every wrong type or size handed to the in-process API is an InvalidRequest naming the
argument, never an internal error; a scorer's own BaseException is a failed metric."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest

from stageguard.runtime.engine import InvalidRequest, Runtime
from stageguard.runtime.model import Status
from stageguard.runtime.scorers import Scorers
from tests.runtime_helpers import build

STAGE = """project p
stage s {
  ruleset r {
    when input_toxicity > 0.5
    override {
      choice "no"
    }
  }
}
stage loc {
  type local
}
"""
OK: dict[str, Any] = {"input": "x", "metrics": {"input_toxicity": 0.9}}


@pytest.fixture
def rt(tmp_path: Path):
    build(tmp_path / "r", STAGE)
    with Runtime(tmp_path / "r", deliver_webhooks=False) as runtime:
        yield runtime


BAD_CALLS = [
    ({"payload": {"input": "x", "metrics": ["input_toxicity"]}}, "metrics"),
    ({"payload": {"input": "x", "metrics": "input_toxicity"}}, "metrics"),
    ({"payload": {"input": "x", "metrics": 5}}, "metrics"),
    ({"payload": {"input": "x", "metrics": {5: 0.1}}}, "metric names"),
    ({"payload": {"input": 5}}, "payload input"),
    ({"payload": {"input": "\ud800"}}, "surrogate"),
    ({"version": [1]}, "version"),
    ({"version": True}, "version"),
    ({"version": 0}, "version"),
    ({"stage": ["s"]}, "stage name"),
    ({"stage": "s" * 201}, "200 characters"),
    ({"project": 7}, "project"),
    ({"stage_id": 7}, "stage id"),
    ({"metadata": 5}, "metadata"),
    ({"metadata": {"k": 5}}, "metadata"),
    ({"metadata": {str(i): "v" for i in range(101)}}, "100 entries"),
    ({"headers": "x"}, "headers"),
    ({"timeout": 10**400}, "timeout"),
    ({"timeout": threading.TIMEOUT_MAX * 2}, "timeout"),
    ({"timeout": math.nan}, "timeout"),
    ({"timeout": "5"}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"stage": "loc", "rulesets": {"rules": []}}, "list of rulesets"),
    ({"stage": "loc", "rulesets": [{"description": 5, "rules": [
        {"metric": "input_toxicity", "operator": "gt", "target_value": 0.5}]}]},
     "description"),
    ({"stage": "loc", "rulesets": [{"name": 5, "rules": [
        {"metric": "input_toxicity", "operator": "gt", "target_value": 0.5}]}]}, "name"),
]


@pytest.mark.parametrize(("call", "named"), BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_wrong_arguments_are_invalid_requests_naming_them(rt: Runtime, call: dict[str, Any],
                                                          named: str) -> None:
    kwargs = {"stage": "s", **call}
    payload = kwargs.pop("payload", OK)
    with pytest.raises(InvalidRequest, match=named):
        rt.invoke(payload, **kwargs)


def test_good_arguments_still_decide(rt: Runtime) -> None:
    r = rt.invoke(OK, "s", version=1, timeout=2, metadata={"k": "v"}, headers={"h": "v"})
    assert r.status is Status.TRIGGERED


@pytest.mark.parametrize("exc", [SystemExit, GeneratorExit, KeyboardInterrupt])
def test_a_scorer_raising_a_base_exception_fails_its_metric(tmp_path: Path,
                                                            exc: type[BaseException]) -> None:
    build(tmp_path / "r", STAGE)
    scorers = Scorers(entry_point_group=None)

    def broken(_: object) -> float:
        raise exc("scorer gave up")

    scorers.register("input_toxicity", broken)
    with Runtime(tmp_path / "r", scorers=scorers, deliver_webhooks=False) as rt:
        r = rt.invoke({"input": "x"}, "s")
    assert r.status is Status.FAILED
    assert exc.__name__ in (r.metric_results["input_toxicity"].error or "")


def test_non_finite_metric_values_are_written_as_strings(rt: Runtime) -> None:
    r = rt.invoke({"input": "x", "metrics": {"input_toxicity": math.nan}}, "s")
    assert r.status is Status.NOT_TRIGGERED  # NaN is false for `gt`
    text = r.to_json()
    assert '"value": "NaN"' in text and "NaN," not in text
    r = rt.invoke({"input": "x", "metrics": {"input_toxicity": math.inf}}, "s")
    assert '"value": "Infinity"' in r.to_json()


def test_a_long_stage_name_is_said_to_be_long(tmp_path: Path) -> None:
    with Runtime(tmp_path / "reg") as rt, pytest.raises(InvalidRequest,
                                                         match="at most 200 characters"):
        rt.create_stage("s" * 201, project="p")
