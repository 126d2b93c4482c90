"""`stageguard.client`: the same calls, embedded or remote, give the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageguard import client as sg
from stageguard.runtime.engine import InvalidRequest, Payload, StageNotFound
from stageguard.runtime.model import Status
from tests.server_helpers import ADMIN, INVOKER, free_port, serving

RULES = 'ruleset toxic {\n  when output_toxicity > 0.5\n  override { choice "blocked" }\n}'
TONE = [{"name": "sad", "rules": [{"metric": "output_tone", "operator": "any",
                                   "target_value": ["sadness"]}],
         "action": {"type": "PASSTHROUGH"}}]


def script() -> list[Any]:
    """An application's calls, written once against the module-level functions."""
    out: list[Any] = []
    out.append(sg.create_stage("answers", project="shop", prioritized_rulesets=RULES,
                               description="d"))
    out.append(sg.get_stage(stage_name="answers"))
    out.append(sg.get_stage(project="shop", stage_name="missing"))
    r = sg.invoke({"output": "hi", "metrics": {"output_toxicity": 0.9}}, stage_name="answers",
                  metadata={"k": "v"})
    out.append((r.status, r.text, r.action_result, r.stage_metadata, r.metadata,
                r.ruleset_statuses, [x.rule_results for x in r.ruleset_results],
                {n: (m.value, m.status) for n, m in r.metric_results.items()}))
    out.append(sg.update_stage(stage_name="answers", prioritized_rulesets=TONE))
    r = sg.invoke(Payload(output="hi", metrics={"output_tone": "sadness"}),
                  stage_name="answers", project="shop")
    out.append((r.status, r.text, r.stage_metadata.stage_version))
    r = sg.invoke({"output": "hi", "metrics": {"output_toxicity": 0.9}}, stage_name="answers",
                  version=1)
    out.append((r.status, r.text, r.stage_metadata.stage_version))
    out.append(sg.pause_stage(stage_name="answers"))
    out.append(sg.invoke({"output": "hi"}, stage_name="answers").status)
    out.append(sg.resume_stage(stage_name="answers"))
    out.append(sg.create_stage("tools", project="shop", type="local"))
    r = sg.invoke({"input": "q", "metrics": {"output_toxicity": 0.7}}, stage_name="tools",
                  prioritized_rulesets=RULES)
    out.append((r.status, r.text))
    for call in (lambda: sg.update_stage(stage_name="nope", prioritized_rulesets=TONE),
                 lambda: sg.invoke({"output": "x"}, stage_name="nope")):
        with pytest.raises(StageNotFound):
            call()
    with pytest.raises(InvalidRequest, match="output_toxicty"):
        sg.update_stage(stage_name="answers", prioritized_rulesets=RULES.replace(
            "output_toxicity", "output_toxicty"))
    with pytest.raises(InvalidRequest):
        sg.invoke({"output": ""}, stage_name="answers")
    return out


def test_embedded_and_remote_are_interchangeable(tmp_path: Path) -> None:
    embedded_dir, served_dir = tmp_path / "embedded", tmp_path / "served"
    embedded_dir.mkdir()
    served_dir.mkdir()
    sg.configure(embedded_dir)
    embedded = script()
    with serving(served_dir) as s:
        sg.configure(s.url, token=ADMIN)
        remote = script()
        sg.configure(embedded_dir)  # closes the remote client
    assert remote == embedded
    assert embedded[3][0] is Status.TRIGGERED and embedded[3][1] == "blocked"
    assert embedded[5] == (Status.TRIGGERED, "hi", 2)
    assert embedded[6] == (Status.TRIGGERED, "blocked", 1)
    assert embedded[8] is Status.PAUSED


def test_remote_errors(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        with sg.Client(s.url, INVOKER) as c, pytest.raises(sg.AuthError) as caught:
            c.create_stage("x", project="p")
        assert caught.value.status_code == 403 and caught.value.trace_id
        with sg.Client(s.url, ADMIN) as c:
            with pytest.raises(sg.RemoteError) as caught:
                c.publish_source("s", source="project p\nstage s {\n  ruleset r {\n"
                                 "    when nope > 1\n  }\n}\n")
            assert caught.value.code == "policy_errors"
            assert caught.value.diagnostics[0]["span"]["line"] == 4
            published = c.publish_source("s", source="project p\nstage s {\n  ruleset r {\n"
                                         "    when output_toxicity > 1\n  }\n}\n")
            assert published["created"] is True
            assert c.versions(project="p", stage_name="s")[0]["version"] == 1
            assert c.artifact(project="p", stage_name="s", version=1).stage.name == "s"
    with sg.Client(f"http://127.0.0.1:{free_port()}", ADMIN, timeout=2) as c, \
            pytest.raises(sg.ServiceUnavailable):
        c.get_stage(project="p", stage_name="s")
