"""Loading, hot reload, tampered artifacts, local stages and the management API."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from stageguard.runtime.engine import InvalidRequest, Runtime, StageNotFound, stage_id
from stageguard.runtime.model import StageType, Status
from stageguard.runtime.registry import Registry, RegistryError
from tests.runtime_helpers import build


def central(threshold: float) -> str:
    return (f"project p\nstage s {{\n  ruleset r {{\n    when input_toxicity > {threshold}\n"
            '    override {\n      choice "blocked"\n    }\n  }\n}\n'
            "stage loc {\n  type local\n}\n")


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


PAYLOAD = {"input": "hi", "metrics": {"input_toxicity": 0.6}}


def test_hot_reload_switches_to_the_new_latest_version(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    with Runtime(reg, poll_interval=0.05) as rt:
        assert rt.invoke(PAYLOAD, "s").status is Status.TRIGGERED
        build(reg, central(0.7))  # another process publishes v2
        assert wait_for(lambda: rt.invoke(PAYLOAD, "s").stage_metadata.stage_version == 2)
        r = rt.invoke(PAYLOAD, "s")
        assert r.status is Status.NOT_TRIGGERED
        # A pinned version still answers with its own rulesets.
        assert rt.invoke(PAYLOAD, "s", version=1).status is Status.TRIGGERED


def test_hot_reload_sees_pause_and_resume_from_another_runtime(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    with Runtime(reg, poll_interval=0.05) as serving, Runtime(reg) as admin:
        admin.pause_stage(project="p", stage_name="s")
        assert wait_for(lambda: serving.invoke(PAYLOAD, "s").status is Status.PAUSED)
        admin.resume_stage(project="p", stage_name="s")
        assert wait_for(lambda: serving.invoke(PAYLOAD, "s").status is Status.TRIGGERED)


def test_every_decision_sees_exactly_one_version_during_reloads(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    seen: list[tuple[int, Status]] = []
    stop = threading.Event()
    with Runtime(reg, poll_interval=0.01) as rt:
        def hammer() -> None:
            while not stop.is_set():
                r = rt.invoke(PAYLOAD, "s")
                seen.append((r.stage_metadata.stage_version, r.status))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for i, threshold in enumerate([0.7, 0.5, 0.7, 0.5], start=2):
            build(reg, central(threshold))
            assert wait_for(lambda i=i: bool(seen) and seen[-1][0] == i)
        stop.set()
        for t in threads:
            t.join()
    # Odd versions have threshold 0.5 (triggered), even ones 0.7: never a mix.
    assert seen
    for version, status in seen:
        assert status is (Status.TRIGGERED if version % 2 else Status.NOT_TRIGGERED)


def test_tampered_new_version_is_refused_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    with Runtime(reg) as rt:
        build(reg, central(0.7))
        v2 = reg / "p" / "s" / "v2.json"
        v2.write_bytes(v2.read_bytes().replace(b"0.7", b"0.1"))
        assert rt.refresh()
        r = rt.invoke(PAYLOAD, "s")
        assert r.stage_metadata.stage_version == 1 and r.status is Status.TRIGGERED
        assert "v2.json does not match its digest" in rt.load_errors["p/s"]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[: len(b) // 2], "not JSON"),
    (lambda b: b.replace(b'"format_version":1', b'"format_version":9'), "format version 9"),
    (lambda b: b.replace(b"blocked", b"allowed"), "does not match its digest"),
])
def test_loading_a_bad_artifact_file_names_the_file(tmp_path: Path, damage, message) -> None:
    build(tmp_path / "reg", central(0.5))
    path = tmp_path / "reg" / "p" / "s" / "v1.json"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RegistryError, match=message) as info:
        Runtime.from_files(path)
    assert "v1.json" in str(info.value)


def test_runtime_from_artifact_files(tmp_path: Path) -> None:
    build(tmp_path / "reg", central(0.5))
    with Runtime.from_files(tmp_path / "reg" / "p" / "s" / "v1.json") as rt:
        assert rt.invoke(PAYLOAD, "s").status is Status.TRIGGERED
        with pytest.raises(InvalidRequest, match="needs a registry"):
            rt.pause_stage(project="p", stage_name="s")


LOCAL_RULES = [{"description": "Block toxic input", "rules": [
    {"metric": "input_toxicity", "operator": "gt", "target_value": 0.5}],
    "action": {"type": "OVERRIDE", "choices": ["no"]}}]


def test_local_stage_records_versions_and_reuses_identical_rulesets(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    with Runtime(reg, record_local_versions=10) as rt:
        r1 = rt.invoke(PAYLOAD, "loc", rulesets=LOCAL_RULES)
        # Recording happens off the decision path: until it lands, the local stage's own
        # version is reported.
        assert (r1.status, r1.text, r1.stage_metadata.stage_version) == (
            Status.TRIGGERED, "no", 1)
        assert r1.ruleset_results[0].name == "block_toxic_input"
        assert rt.flush(5)
        r2 = rt.invoke(PAYLOAD, "loc", rulesets=json.loads(json.dumps(LOCAL_RULES)))
        assert r2.stage_metadata.stage_version == 2  # identical rulesets: their version
        other = [{**LOCAL_RULES[0], "rules": [{"metric": "input_toxicity", "operator": "gt",
                                                "target_value": 0.9}]}]
        rt.invoke(PAYLOAD, "loc", rulesets=other)
        assert rt.flush(5)
        assert rt.invoke(PAYLOAD, "loc", rulesets=other).stage_metadata.stage_version == 3
    # A fresh runtime over the same registry still knows the earlier rulesets' version.
    with Runtime(reg) as rt:
        assert rt.invoke(PAYLOAD, "loc", rulesets=LOCAL_RULES).stage_metadata.stage_version == 2
        # Without rulesets a local stage has none: skipped, even though v3 recorded some...
        assert rt.invoke(PAYLOAD, "loc").status is Status.SKIPPED
        # ...while pinning a version replays the rulesets it recorded.
        assert rt.invoke(PAYLOAD, "loc", version=2).text == "no"
    assert [v.version for v in Registry(reg).stage_entry("p", "loc").versions] == [1, 2, 3]


def _threshold_rules(t: float) -> list[dict[str, object]]:
    return [{**LOCAL_RULES[0], "rules": [{"metric": "input_toxicity", "operator": "gt",
                                          "target_value": t}]}]


def test_local_rulesets_are_not_recorded_unless_the_operator_asks(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    index = reg / "index.json"
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    with Runtime(reg) as rt:
        for i in range(50):
            r = rt.invoke(PAYLOAD, "loc", rulesets=_threshold_rules(i / 100))
            assert r.stage_metadata.stage_version == 1
        assert rt.flush(5)
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (reg / "p" / "loc").iterdir()) == ["stage.json", "v1.json"]


def test_recorded_local_versions_stop_at_the_cap(tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    build(reg, central(0.5))
    with Runtime(reg, record_local_versions=3) as rt:
        for i in range(10):
            rt.invoke(PAYLOAD, "loc", rulesets=_threshold_rules(i / 100))
            assert rt.flush(5)
        # Recorded ones keep their versions; the rest decide as the stage's own version.
        assert rt.invoke(PAYLOAD, "loc",
                         rulesets=_threshold_rules(0.01)).stage_metadata.stage_version == 3
        assert rt.invoke(PAYLOAD, "loc",
                         rulesets=_threshold_rules(0.09)).stage_metadata.stage_version == 1
    assert [v.version for v in Registry(reg).stage_entry("p", "loc").versions] == [1, 2, 3, 4]


def test_local_rulesets_are_validated_like_source(tmp_path: Path) -> None:
    build(tmp_path / "reg", central(0.5))
    bad = [{"rules": [{"metric": "output_pii_typo", "operator": "eq", "target_value": "ssn"}]}]
    # Galileo accepts `eq` on a label list and never finds it true: decided so, not refused.
    never = [{"rules": [{"metric": "output_pii", "operator": "eq", "target_value": "ssn"}],
              "action": {"type": "OVERRIDE", "choices": ["blocked"]}}]
    with Runtime(tmp_path / "reg") as rt:
        with pytest.raises(InvalidRequest, match=r"rulesets\[0\]\.rules\[0\].*unknown metric"):
            rt.invoke(PAYLOAD, "loc", rulesets=bad)
        r = rt.invoke({"output": "x", "metrics": {"output_pii": ["ssn"]}}, "loc",
                      rulesets=never)
        assert r.ruleset_statuses == (Status.NOT_TRIGGERED,) and r.text == "x"
        with pytest.raises(InvalidRequest, match="central"):
            rt.invoke(PAYLOAD, "s", rulesets=LOCAL_RULES)


def test_management_api_create_get_update_pause_resume(tmp_path: Path) -> None:
    with Runtime(tmp_path / "reg") as rt:
        info = rt.create_stage("guard", project="acme", description="made by the API",
                               prioritized_rulesets=LOCAL_RULES)
        assert (info.version, info.type, info.paused) == (1, StageType.CENTRAL, False)
        assert info.id == stage_id("acme", "guard")
        assert rt.get_stage(stage_id=info.id) == info
        assert rt.get_stage(project="acme", stage_name="nope") is None
        with pytest.raises(InvalidRequest, match="already exists"):
            rt.create_stage("guard", project="acme", prioritized_rulesets=LOCAL_RULES)
        updated = rt.update_stage(project="acme", stage_name="guard", prioritized_rulesets=[
            {**LOCAL_RULES[0], "action": {"type": "OVERRIDE", "choices": ["nope"]}}])
        assert updated.version == 2 and updated.versions == (1, 2)
        assert rt.invoke(PAYLOAD, "guard").text == "nope"
        assert rt.invoke(PAYLOAD, "guard", version=1).text == "no"
        # An identical update makes no new version.
        again = rt.update_stage(stage_id=info.id, prioritized_rulesets=[
            {**LOCAL_RULES[0], "action": {"type": "OVERRIDE", "choices": ["nope"]}}])
        assert again.version == 2
        assert rt.pause_stage(stage_id=info.id).paused
        assert rt.invoke(PAYLOAD, "guard").status is Status.PAUSED
        assert not rt.resume_stage(project="acme", stage_name="guard").paused
        local = rt.create_stage("tools", project="acme", type="local")
        assert local.type is StageType.LOCAL
        assert [(i.project, i.name, i.version) for i in rt.stages()] == [
            ("acme", "guard", 2), ("acme", "tools", 1)]
        with pytest.raises(InvalidRequest, match="local"):
            rt.update_stage(project="acme", stage_name="tools", prioritized_rulesets=LOCAL_RULES)
        with pytest.raises(StageNotFound):
            rt.pause_stage(project="acme", stage_name="ghost")


def test_source_map_is_validated_when_first_needed(tmp_path: Path) -> None:
    build(tmp_path / "reg", central(0.5))
    with Runtime(tmp_path / "reg") as rt:
        loaded = rt._stage(("p", "s"), None)
        smap = loaded.source_map
        assert smap is not None and smap.file == "p.sg" and smap.rulesets[0].ruleset == (3, 3)
    # The source map is outside the digest: damage to it does not stop a stage serving,
    # but asking for it reports the problem.
    path = tmp_path / "reg" / "p" / "s" / "v1.json"
    path.write_bytes(path.read_bytes().replace(b'"rules":[[4,5]]', b'"rules":[]'))
    with Runtime.from_files(path) as rt:
        assert rt.invoke(PAYLOAD, "s").status is Status.TRIGGERED
        with pytest.raises(RegistryError, match="source map"):
            _ = rt._stage(("p", "s"), None).source_map


def test_identical_local_rulesets_reuse_their_version_whatever_came_between(
        tmp_path: Path) -> None:
    # A uses input_toxicity, B output_pii; A again must get A's version back even though
    # the latest version (B's) carries other metrics.
    build(tmp_path / "reg", central(0.5))
    b_rules = [{"rules": [{"metric": "output_pii", "operator": "contains",
                           "target_value": "ssn"}]}]
    with Runtime(tmp_path / "reg", record_local_versions=10) as rt:
        for rules in (LOCAL_RULES, b_rules):
            rt.invoke(PAYLOAD, "loc", rulesets=rules)
            assert rt.flush(5)
        a = rt.invoke(PAYLOAD, "loc", rulesets=LOCAL_RULES).stage_metadata.stage_version
        b = rt.invoke(PAYLOAD, "loc", rulesets=b_rules).stage_metadata.stage_version
    with Runtime(tmp_path / "reg") as rt:  # fresh cache: only the registry remembers
        again = rt.invoke(PAYLOAD, "loc", rulesets=LOCAL_RULES).stage_metadata.stage_version
    assert (a, b, again) == (2, 3, 2)
