"""Replay (runtime/replay.py, `stageguard replay`) and `diff --traffic` (compiler/traffic.py)
on real decision logs: their counts equal a brute-force re-evaluation of the same events by
the reference interpreter, and each other, region by region."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.decision_log import DecisionLog, metric_values
from stageguard.runtime.engine import Runtime
from stageguard.runtime.evaluate import (
    outcomes_status,
    reference_outcomes,
    stage_fail_closed,
)
from stageguard.runtime.log_sinks import JsonlSink, read_events
from stageguard.runtime.model import Artifact, Status
from stageguard.runtime.registry import Registry
from stageguard.runtime.replay import replay
from stageguard.runtime.served import load_model
from stageguard.testing.generate import source_of
from tests.profiles import examples
from tests.strategies import payloads, stage_pairs

OLD = """project shop
stage answers {
  ruleset toxic {
    when output_toxicity > 0.8
  }
  ruleset rude {
    when output_toxicity > 0.5
    when output_tone == "anger"
  }
}
"""
NEW = OLD.replace("output_toxicity > 0.8", "output_toxicity > 0.6")
WIDER = NEW.replace("  ruleset rude {", "  ruleset pii {\n    when output_pii any [\"ssn\"]\n"
                    "  }\n  ruleset rude {")


class ListSink:
    """A sink that keeps what it is given (a real sink: it is what replay reads back)."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, events: Sequence[dict[str, Any]],
              lines: Sequence[bytes] | None = None) -> None:
        assert lines is not None and len(lines) == len(events)
        self.events.extend(json.loads(line) for line in lines)

    def close(self) -> None:
        pass


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stageguard.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def brute(artifact: Artifact, event: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The reference interpreter over an event's logged values (None: it lacks one)."""
    values = metric_values(event)
    assert values is not None

    class Lacks(Exception):
        pass

    def get(name: str) -> object:
        if name not in values:
            raise Lacks
        return values[name]

    try:
        outcomes = reference_outcomes(artifact.rulesets, get,  # type: ignore[arg-type]
                                      stage_fail_closed(artifact))
    except Lacks:
        return None
    if Status.TRIGGERED in outcomes:
        return "triggered", artifact.rulesets[outcomes.index(Status.TRIGGERED)].name
    return outcomes_status(outcomes).value, None


def _log(tmp_path: Path, n: int = 3_000, seed: int = 5) -> Path:
    Registry(tmp_path / "reg").publish(compile_text(OLD, "old.sg").artifacts)
    out = tmp_path / "decisions.jsonl"
    rng = random.Random(seed)
    with Runtime(tmp_path / "reg", decision_log=DecisionLog([JsonlSink(out)])) as rt:
        for i in range(n):
            metrics: dict[str, object] = {"output_toxicity": rng.choice(
                [0.1, 0.5, 0.55, 0.6, 0.65, 0.8, 0.85, 0.95, rng.random()])}
            if rng.random() < 0.8:
                metrics["output_tone"] = rng.choice(["anger", "joy", "neutral"])
            if i == 100:
                rt.pause_stage(stage_name="answers")  # paused decisions are not replayed
            if i == 110:
                rt.resume_stage(stage_name="answers")
            rt.invoke({"output": "x", "metrics": metrics}, "answers")
        assert rt.flush(20)
    return out


def test_replay_and_diff_traffic_agree_with_a_brute_force_recount(tmp_path: Path) -> None:
    log = _log(tmp_path)
    (tmp_path / "new.sg").write_text(NEW)
    (tmp_path / "old.sg").write_text(OLD)
    done = cli("replay", str(log), "--stage", "shop/answers", "--against", "new.sg",
               "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    events = read_events([log])
    new = compile_text(NEW, "new.sg").artifacts[0].to_artifact()
    flips: Counter[tuple[str, str]] = Counter()
    changed = decided = undecided = 0
    for e in events:
        if e["status"] in ("paused", "skipped"):
            undecided += 1
            continue
        after = brute(new, e)
        assert after is not None  # NEW needs no metric OLD did not compute
        decided += 1
        if after[0] != e["status"]:
            flips[e["status"], after[0]] += 1
        changed += after != (e["status"], e["ruleset"])
    assert report["events"] == len(events) == 3_000
    assert report["decided"] == decided and report["not_replayed"]["undecided"] == undecided
    assert {(f["from"], f["to"]): f["count"] for f in report["flips"]} == dict(flips)
    assert report["flipped"] == sum(flips.values()) > 0
    assert sum(flips.values()) + report["ruleset_changed"]["count"] == changed

    diffed = cli("diff", "old.sg", "new.sg", "--traffic", str(log), "--format", "json",
                 cwd=tmp_path)
    assert diffed.returncode == 1, diffed.stderr  # behaviour changes
    (stage,) = json.loads(diffed.stdout)["stages"]
    counts = [r["traffic"]["count"] for r in stage["regions"]]
    assert sum(counts) == changed  # the events replay shows changing, region by region
    assert stage["traffic"]["judged"] == decided
    for region in stage["regions"]:
        before, after = region["before"], region["after"]
        want = sum(1 for e in events if e["status"] not in ("paused", "skipped")
                   and (e["status"], e["ruleset"]) == (before["status"], before["ruleset"])
                   and brute(new, e) == (after["status"], after["ruleset"]))
        assert region["traffic"]["count"] == want
    text = cli("diff", "old.sg", "new.sg", "--traffic", str(log), cwd=tmp_path).stdout
    assert "traffic: " in text and "logged decisions" in text
    md = cli("diff", "old.sg", "new.sg", "--traffic", str(log), "--format", "markdown",
             cwd=tmp_path).stdout
    assert "| traffic |" in md and "Traffic: 3,000 logged decisions" in md


def test_max_flip_rate_gates_and_the_formats_render(tmp_path: Path) -> None:
    log = _log(tmp_path, n=400)
    (tmp_path / "new.sg").write_text(NEW)
    rate = json.loads(cli("replay", str(log), "--stage", "answers", "--against", "new.sg",
                          "--format", "json", cwd=tmp_path).stdout)["flip_rate"] * 100
    assert 0 < rate < 100
    over = cli("replay", str(log), "--stage", "answers", "--against", "new.sg",
               "--max-flip-rate", str(rate / 2), cwd=tmp_path)
    assert over.returncode == 1 and "more than --max-flip-rate" in over.stderr
    assert "not_triggered -> triggered" in over.stdout
    under = cli("replay", str(log), "--stage", "answers", "--against", "new.sg",
                "--max-flip-rate", str(rate + 1), "--format", "markdown", cwd=tmp_path)
    assert under.returncode == 0 and "| from | to | decisions | share | examples |" in \
        under.stdout
    same = cli("replay", str(log), "--stage", "answers", "--version", "1", "--registry",
               "reg", "--format", "json", cwd=tmp_path)
    assert same.returncode == 0 and json.loads(same.stdout)["flipped"] == 0
    missing = cli("replay", "nope.jsonl", "--stage", "answers", "--against", "new.sg",
                  cwd=tmp_path)
    assert missing.returncode == 2 and "no decision log nope.jsonl" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_events_that_lack_a_metric_the_new_version_needs_are_counted_apart(
        tmp_path: Path) -> None:
    log = _log(tmp_path, n=300)
    (tmp_path / "wider.sg").write_text(WIDER)
    report = json.loads(cli("replay", str(log), "--stage", "answers", "--against",
                            "wider.sg", "--format", "json", cwd=tmp_path).stdout)
    lacking = report["not_replayed"]["lacking_metrics"]
    assert set(lacking) == {"output_pii"}
    wider = compile_text(WIDER, "w.sg").artifacts[0].to_artifact()
    events = [e for e in read_events([log]) if e["status"] not in ("paused", "skipped")]
    assert lacking["output_pii"] == sum(brute(wider, e) is None for e in events)
    assert report["decided"] + lacking["output_pii"] == len(events)


@examples(0.3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture])
@given(pair=stage_pairs(), data=st.data())
def test_replay_equals_the_reference_interpreter_on_generated_stages(
        tmp_path_factory: pytest.TempPathFactory, pair: Any, data: st.DataObject) -> None:
    old, new = pair
    (old_doc,) = compile_text(source_of(old), "a.sg").artifacts
    new_art = compile_text(source_of(new), "b.sg").artifacts[0].to_artifact()
    served = tmp_path_factory.mktemp("replay") / "old.json"
    served.write_bytes(old_doc.to_bytes(1))
    sink = ListSink()
    with Runtime.from_files(served, deliver_webhooks=False,
                            decision_log=DecisionLog([sink])) as rt:
        catalog = {**old.catalog, **new.catalog}
        for _ in range(8):
            metrics = {k: v for k, v in data.draw(payloads(catalog, failures=False)).items()
                       if v is not None}
            rt.invoke({"output": "x", "metrics": metrics}, "s")
        assert rt.flush(10)
    report = replay(sink.events, "gen", "s", load_model(new_art), "new")
    want: Counter[tuple[str, str]] = Counter()
    decided = 0
    for e in sink.events:
        after = brute(new_art, e)
        if after is None:
            continue
        decided += 1
        if after[0] != e["status"]:
            want[e["status"], after[0]] += 1
    assert report.decided == decided
    assert {k: f.count for k, f in report.flips.items()} == dict(want)
    assert report.decided + report.lacking_total == len(sink.events)
    for e, outcome in zip((e for e in sink.events if brute(new_art, e) is not None),
                          report.outcomes, strict=True):
        assert outcome.after == brute(new_art, e)


def test_an_unreadable_line_is_counted_not_fatal(tmp_path: Path) -> None:
    log = _log(tmp_path, n=50)
    with log.open("a") as f:
        f.write("not json\n[1, 2]\n")
    (tmp_path / "new.sg").write_text(NEW)
    report = json.loads(cli("replay", str(log), "--stage", "answers", "--against", "new.sg",
                            "--format", "json", cwd=tmp_path).stdout)
    assert report["not_replayed"]["unreadable"] == 2 and report["events"] == 50


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_replay_reads_the_postgresql_decision_table(postgres: Any, tmp_path: Path,
                                                    fmt: str) -> None:
    from stageguard.runtime.postgres import PostgresDecisionSink, PostgresRegistry

    url = postgres.new_database()
    store = PostgresRegistry(url)
    store.migrate()
    store.publish(compile_text(OLD, "old.sg").artifacts)
    with Runtime(url, decision_log=DecisionLog([PostgresDecisionSink(url)])) as rt:
        for v in (0.1, 0.7, 0.9, 0.7):
            rt.invoke({"output": "x", "metrics": {"output_toxicity": v,
                                                 "output_tone": "joy"}}, "answers")
        assert rt.flush(10)
    store.close()
    (tmp_path / "new.sg").write_text(NEW)
    done = cli("replay", url, "--stage", "shop/answers", "--against", "new.sg", "--format",
               fmt, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    if fmt == "json":
        report = json.loads(done.stdout)
        assert report["decided"] == 4
        assert report["flips"] == [{"from": "not_triggered", "to": "triggered", "count": 2,
                                    "share": 0.5, "examples": report["flips"][0]["examples"]}]
    else:
        assert "2 change status (50.00%)" in done.stdout
