"""Shadow versions (runtime/shadow.py): the candidate decides every request beside the
serving version, unseen by the caller, counted and logged with both decisions."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.decision_log import DecisionLog
from stageguard.runtime.engine import Runtime
from stageguard.runtime.log_sinks import JsonlSink, read_events
from stageguard.runtime.registry import Registry
from stageguard.runtime.scorers import Scorers
from stageguard.testing.generate import source_of
from tests.profiles import examples
from tests.server_helpers import ADMIN, serving
from tests.strategies import payloads, stage_pairs

_CLOCKS = re.compile(r'"(id|received_at|response_at|execution_time)": [^,}]+')


def _wire(response: Any) -> str:
    """The response's JSON, byte for byte, but for what differs per call anyway: its id and
    its clock readings."""
    return _CLOCKS.sub(r'"\1": _', response.to_json())


@examples(0.2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                     HealthCheck.too_slow])
@given(pair=stage_pairs(), data=st.data())
def test_the_response_is_the_same_with_a_shadow_on_or_off(
        tmp_path_factory: pytest.TempPathFactory, pair: Any, data: st.DataObject) -> None:
    old, new = pair
    root = tmp_path_factory.mktemp("shadow")
    plain, shadowed = root / "plain", root / "shadowed"
    for reg in (plain, shadowed):
        Registry(reg).publish(compile_text(source_of(old), "a.sg").artifacts)
        Registry(reg).publish(compile_text(source_of(new), "b.sg").artifacts, activate=False)
    log = DecisionLog([JsonlSink(root / "d.jsonl")])
    with Runtime(plain, rng=random.Random(7), poll_interval=None,
                 deliver_webhooks=False) as off, \
            Runtime(plain, poll_interval=None, deliver_webhooks=False) as judge, \
            Runtime(shadowed, rng=random.Random(7), poll_interval=None, deliver_webhooks=False,
                    decision_log=log) as on:
        versions = Registry(shadowed).stage_entry("gen", "s").versions  # type: ignore[union-attr]
        if len(versions) == 1:  # the edit changed nothing: no candidate to shadow
            return
        on.shadow_stage(2, stage_name="s")
        catalog = {**old.catalog, **new.catalog}
        made = []
        for _ in range(5):
            metrics = {k: v for k, v in data.draw(payloads(catalog)).items() if v is not None}
            a = off.invoke({"output": "x", "metrics": metrics}, "s")
            b = on.invoke({"output": "x", "metrics": metrics}, "s")
            assert _wire(a) == _wire(b)
            made.append((b, judge.invoke({"output": "x", "metrics": metrics}, "s",
                                         version=2)))
        assert on.flush(10)
        stats = on.shadow.snapshot()
    assert stats.decided[("gen", "s")] == 5
    want: dict[tuple[str, str, str, str], int] = {}
    for active, candidate in made:
        if active.status != candidate.status:
            key = ("gen", "s", active.status.value, candidate.status.value)
            want[key] = want.get(key, 0) + 1
    assert stats.disagreements == want, [(a.status, c.status) for a, c in made]
    events = {e["decision_id"]: e for e in read_events([root / "d.jsonl"])}
    for active, candidate in made:
        shadow = events[active.decision_id]["shadow"]
        assert (shadow["version"], shadow["status"]) == (2, candidate.status.value)
        assert [r["status"] for r in shadow["rulesets"]] == \
            [s.value for s in candidate.ruleset_statuses]


def test_a_shadow_that_needs_a_scorer_runs_it_off_the_callers_path(tmp_path: Path) -> None:
    import threading

    root = tmp_path / "reg"
    Registry(root).publish(compile_text(
        "project p\nstage s {\n  ruleset a {\n    when output_toxicity > 0.5\n  }\n}\n",
        "a.sg").artifacts)
    Registry(root).publish(compile_text(
        "project p\nstage s {\n  ruleset a {\n    when output_toxicity > 0.5\n  }\n"
        "  ruleset b {\n    when output_sexist > 0.5\n  }\n}\n", "b.sg").artifacts,
        activate=False)
    release = threading.Event()
    callers = []

    def slow_sexist(request: Any) -> float:
        callers.append(threading.current_thread().name)
        release.wait(10)
        return 0.9

    scorers = Scorers()
    scorers.register("output_sexist", slow_sexist)
    with Runtime(root, scorers=scorers, poll_interval=None) as rt:
        rt.shadow_stage(2, stage_name="s")
        # The active version needs no scorer: it answers while the shadow's scorer waits.
        r = rt.invoke({"output": "x", "metrics": {"output_toxicity": 0.1}}, "s")
        assert r.status.value == "not_triggered"
        release.set()
        assert rt.flush(10)
        stats = rt.shadow.snapshot()
    assert callers and not callers[0].startswith("MainThread")
    assert stats.disagreements == {("p", "s", "not_triggered", "triggered"): 1}


def test_shadow_over_http_and_its_metrics(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    Registry(root).publish(compile_text(
        "project p\nstage s {\n  ruleset a {\n    when output_toxicity > 0.5\n  }\n}\n",
        "a.sg").artifacts)
    Registry(root).publish(compile_text(
        "project p\nstage s {\n  ruleset a {\n    when output_toxicity > 0.3\n  }\n}\n",
        "b.sg").artifacts, activate=False)
    with serving(root) as srv, srv.client() as c:
        bad = c.put("/projects/p/stages/s/serving", json={"action": "shadow"})
        assert bad.status_code == 422 and "needs version" in bad.text
        resp = c.put("/projects/p/stages/s/serving", json={"action": "shadow", "version": 2})
        assert resp.status_code == 200, resp.text
        assert resp.json()["candidate"] == {"version": 2, "mode": "shadow", "percent": 0.0,
                                            "key": None}
        assert resp.json()["version"] == 1
        for value in (0.1, 0.4, 0.4, 0.9):
            r = c.post("/protect/invoke", json={"payload": {"output": "x", "metrics": {
                "output_toxicity": value}}, "stage_name": "s", "project_name": "p"})
            assert r.status_code == 200 and r.json()["stage_metadata"]["stage_version"] == 1
        srv.app.state.runtime.flush(10)
        text = c.get("/metrics").text
        assert 'stageguard_shadow_decisions_total{project="p",stage="s"} 4.0' in text
        assert ('stageguard_shadow_disagreements_total{from_status="not_triggered",'
                'project="p",stage="s",to_status="triggered"} 2.0') in text
        history = c.get("/projects/p/stages/s/history").json()
        assert [(e["kind"], e["version"]) for e in history] == [
            ("published", 1), ("published", 2), ("shadow", 2)]
        stale = c.put("/projects/p/stages/s/serving", json={"action": "clear"},
                      headers={"If-Match": '"1"'})
        assert stale.status_code == 409
        cleared = c.put("/projects/p/stages/s/serving", json={"action": "clear"})
        assert cleared.json()["candidate"] is None
        invoker = httpx.Client(base_url=srv.url, headers={"Authorization": "Bearer nope"})
        assert invoker.put("/projects/p/stages/s/serving",
                           json={"action": "clear"}).status_code == 401
        assert ADMIN
