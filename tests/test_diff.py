"""`stageguard diff`: structural changes, and exact behavioural regions with witnesses."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from stageguard.cli import main
from stageguard.compiler.analysis import Decision, StageModel, decide
from stageguard.compiler.diff import TIGHTENED, behaviour, webhooks
from stageguard.runtime.evaluate import ruleset_outcome
from tests.conftest import POLICIES
from tests.profiles import examples
from tests.strategies import payloads, stage_models, stage_pairs

REVIEW = Path(__file__).parent / "review"


@examples(2,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stage_pairs(), st.data())
def test_diff_regions_are_exactly_where_decisions_differ(
        pair: tuple[StageModel, StageModel], data: st.DataObject) -> None:
    old, new = pair
    space, regions = behaviour(old, new)
    # Every reported witness really is decided differently ...
    for r in regions:
        w = r.witness.values
        assert decide(old, w) == r.before and decide(new, w) == r.after
        assert r.before != r.after
    # ... and a payload is decided differently exactly when it lies in a reported region.
    catalog = {**old.catalog, **new.catalog}
    for p in data.draw(st.lists(payloads(catalog, failures=True), min_size=20, max_size=20)):
        differs = decide(old, p) != decide(new, p)
        inside = any(space.contains(b, p) for r in regions for b in r.boxes)
        assert differs == inside, p


@examples(1,  # the same edits as the property above, renamed: fewer draws suffice
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stage_pairs(), st.data())
def test_diff_regions_are_exact_across_renames(
        pair: tuple[StageModel, StageModel], data: st.DataObject) -> None:
    # Rulesets renamed on the new side (as `diff` detects them) are the same rulesets: a
    # decision differs only if it differs once names are mapped back.
    old, new = pair
    renamed = set(data.draw(st.lists(st.sampled_from([rs.name for rs in new.rulesets]))
                            if new.rulesets else st.just([])))
    new = StageModel(new.name, tuple(rs.model_copy(update={"name": f"{rs.name}_2"})
                                     if rs.name in renamed else rs for rs in new.rulesets),
                     new.catalog, new.fail_closed)
    rename = {f"{name}_2": name for name in renamed}

    def named(d: Decision) -> Decision:
        return replace(d, ruleset=rename.get(d.ruleset, d.ruleset)) if d.ruleset else d

    space, regions = behaviour(old, new, rename)
    for r in regions:
        w = r.witness.values
        assert decide(old, w) == r.before and decide(new, w) == r.after
        assert r.before != named(r.after)
    catalog = {**old.catalog, **new.catalog}
    for p in data.draw(st.lists(payloads(catalog, failures=True), min_size=20, max_size=20)):
        differs = decide(old, p) != named(decide(new, p))
        inside = any(space.contains(b, p) for r in regions for b in r.boxes)
        assert differs == inside, p


def _posts(stage: StageModel, values: dict[str, object]) -> set[tuple[str, str]]:
    """(url, ruleset) pairs the runtime's reference evaluation would post to."""
    out = set()
    for rs in stage.rulesets:
        status, _ = ruleset_outcome(rs.rules, lambda m: values.get(m), stage.fail_closed)
        out |= {(s.url, rs.name) for s in rs.action.subscriptions if status in s.statuses}
    return out


@examples(2,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stage_pairs(), st.data())
def test_webhook_regions_are_exactly_where_posts_change(
        pair: tuple[StageModel, StageModel], data: st.DataObject) -> None:
    old, new = pair
    space, _ = behaviour(old, new)
    hooks = webhooks(space, old, new)
    for h in hooks:
        w = dict(h.witness.values)
        assert ((h.url, h.ruleset) in _posts(old, w)) == h.fires_before
        assert ((h.url, h.ruleset) in _posts(new, w)) != h.fires_before
    catalog = {**old.catalog, **new.catalog}
    for p in data.draw(st.lists(payloads(catalog, failures=True), min_size=20, max_size=20)):
        changed = _posts(old, p) ^ _posts(new, p)
        reported = {(h.url, h.ruleset) for h in hooks
                    if any(space.contains(b, p) for b in h.boxes)}
        assert changed == reported, p


@examples(1, suppress_health_check=[HealthCheck.too_slow])
@given(stage_models())
def test_a_stage_never_differs_from_itself(stage: StageModel) -> None:
    space, regions = behaviour(stage, stage)
    assert regions == [] and webhooks(space, stage, stage) == []


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


def _case(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out = _run(["diff", "--format", "json", str(REVIEW / name / "before"),
                      str(REVIEW / name / "after")], capsys)
    (stage,) = [s for s in json.loads(out)["stages"] if s["status"] != "unchanged"]
    return code, stage


def test_fixture_threshold_lowered(capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("threshold_tightened", capsys)
    assert code == 1
    (change,) = stage["changes"]
    assert change["kind"] == "rule-changed" and change["direction"] == TIGHTENED
    plain = [r for r in stage["regions"] if not r["metric_failures"]]
    # Only payloads with 0.5 <= output_toxicity < 0.7 change fate, and all now get toxic_answer.
    assert plain and all(r["after"]["ruleset"] == "toxic_answer" for r in plain)
    assert all(0.5 <= r["witness"]["metrics"]["output_toxicity"] < 0.7 for r in plain)
    assert {r["before"]["ruleset"] for r in plain} == {None, "ungrounded_answer",
                                                        "competitor_plug", "gloomy_tone"}


def test_fixture_pure_reorder_of_disjoint_rulesets_is_proved_harmless(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("reorder_disjoint", capsys)
    assert code == 0 and stage["regions"] == []
    assert {c["kind"] for c in stage["changes"]} == {"ruleset-moved"}


def test_fixture_reorder_of_overlapping_rulesets_changes_the_winner(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("reorder_overlapping", capsys)
    assert code == 1
    plain = [r for r in stage["regions"] if not r["metric_failures"]]
    assert [(r["before"]["ruleset"], r["after"]["ruleset"]) for r in plain] == [
        ("pii_leak", "toxic_answer")]
    witness = plain[0]["witness"]["metrics"]
    assert witness["output_toxicity"] >= 0.7 and witness["output_pii"]


def test_fixture_rename_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("rename_only", capsys)
    assert code == 0 and stage["regions"] == []
    assert [c["kind"] for c in stage["changes"]] == ["ruleset-renamed"]


def test_fixture_fail_open_changes_fate_only_under_failures(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("fail_open", capsys)
    assert code == 1
    assert stage["regions"] and all(r["metric_failures"] for r in stage["regions"])
    assert any(r["before"]["status"] == "triggered" and r["after"]["status"] == "failed"
               for r in stage["regions"])


def test_fixture_rule_order_matters_when_a_metric_fails(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("rule_order_matters_on_failure", capsys)
    assert code == 1
    assert all(r["metric_failures"] for r in stage["regions"])
    assert {c["kind"] for c in stage["changes"]} == {"ruleset-moved", "rules-reordered"}


def test_text_and_markdown_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    case = REVIEW / "threshold_tightened"
    before, after = case / "before", case / "after"
    code, out = _run(["diff", str(before), str(after)], capsys)
    assert code == 1 and "witness: " in out and out.rstrip().endswith("behaviour changes")
    code, out = _run(["diff", "--format", "markdown", str(before), str(after)], capsys)
    assert code == 1 and "| where | witness payload | before | after |" in out
    assert "*tightened: more payloads trigger*" in out
    code, out = _run(["diff", "--format", "markdown", str(POLICIES), str(POLICIES)], capsys)
    assert code == 0 and "**No behavioural change**" in out


def test_registry_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "reg"
    assert main(["build", str(REVIEW / "threshold_tightened" / "before"), "--registry",
                 str(reg)]) == 0
    assert main(["build", str(REVIEW / "threshold_tightened" / "after"), "--registry",
                 str(reg)]) == 0
    capsys.readouterr()
    code, out = _run(["diff", "--registry", str(reg), "registry:output_guard@1",
                      "registry:support_bot/output_guard"], capsys)
    assert code == 1 and "(v1 → v2)" in out
    code, out = _run(["diff", "--registry", str(reg), "registry:output_guard@1",
                      str(REVIEW / "threshold_tightened" / "before")], capsys)
    assert code == 0  # the registry's v1 is what the before files compile to
    assert main(["diff", "--registry", str(reg), "registry:output_guard@9",
                 "registry:output_guard"]) == 2
    assert "no version 9" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_revisions(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REVIEW / "threshold_tightened" / "before", repo / "policies")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                       cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    shutil.copy(REVIEW / "threshold_tightened" / "after" / "output_guard.sg",
                repo / "policies" / "output_guard.sg")
    monkeypatch.chdir(repo)
    code, out = _run(["diff", "--git", "HEAD..", "policies"], capsys)  # against the work tree
    assert code == 1 and "output_toxicity >= 0.5" in out
    git("commit", "-q", "-am", "two")
    code, out = _run(["diff", "--git", "HEAD~1..HEAD", "policies"], capsys)
    assert code == 1 and "HEAD~1 → HEAD" in out
    code, out = _run(["diff", "--git", "HEAD..HEAD", "policies"], capsys)
    assert code == 0
    assert main(["diff", "--git", "nope..HEAD", "policies"]) == 2
    assert "`nope` is not a commit" in capsys.readouterr().err
    code, out = _run(["diff", "--git", "HEAD..", "policies/metrics.sg",
                      "policies/output_guard.sg"], capsys)
    assert code == 0 and "no behavioural change" in out  # several paths, work tree side


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.sg"
    bad.write_text("project p\nstage s {\n", encoding="utf-8")
    assert main(["diff", str(bad), str(POLICIES)]) == 2
    assert "does not compile" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "missing"), str(POLICIES)]) == 2
    assert main(["diff", str(POLICIES)]) == 2



def test_a_renamed_stage_is_reported_as_one(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"
    shutil.copytree(REVIEW / "reorder_disjoint" / "before", new)
    path = new / "guard.sg"
    path.write_text(path.read_text(encoding="utf-8").replace("stage guard", "stage gate"),
                    encoding="utf-8")
    code, out = _run(["diff", "--format", "json", str(REVIEW / "reorder_disjoint" / "before"),
                      str(new)], capsys)
    (stage,) = json.loads(out)["stages"]
    assert code == 1 and [c["kind"] for c in stage["changes"]] == ["stage-renamed"]


def test_fixture_notification_added_posts_exactly_where_the_ruleset_triggers(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stage = _case("notify_added", capsys)
    assert code == 1 and stage["regions"] == []  # no decision changes ...
    (hook,) = stage["webhooks"]                    # ... but a webhook now fires
    assert hook["url"] == "https://hooks.example.com/toxic" and hook["fires_after"]
    # output_guard fails closed: a failing toxicity scorer triggers the ruleset too.
    assert hook["where"] == ["(output_toxicity >= 0.7 or output_toxicity fails)"]
    assert hook["witness"] == {"metrics": {"output_toxicity": 0.71}}


def test_proved_for_every_payload_the_runtime_accepts(tmp_path: Path) -> None:
    """Issue 20's reproduction: a change that shows only for a value outside the declared
    range (which `invoke` accepts) is a behavioural change, with that value as witness."""
    from tests.test_cli import run

    base = ("project p\nstage s {{\n  ruleset r {{\n    when output_toxicity > 1\n{extra}"
            "    override {{\n      choice \"no\"\n    }}\n  }}\n}}\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "old" / "p.sg").write_text(base.format(extra=""))
    (tmp_path / "new" / "p.sg").write_text(
        base.format(extra="    when output_toxicity <= 1\n"))
    p = run("diff", "old", "new", "--format", "json", cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    [stage] = json.loads(p.stdout)["stages"]
    [region] = stage["regions"]
    value = region["witness"]["metrics"]["output_toxicity"]
    assert value > 1 and region["where"] == ["output_toxicity > 1"]
    assert (region["before"]["status"], region["after"]["status"]) == (
        "triggered", "not_triggered")
    # The runtime agrees, for that value and for NaN and infinity too.
    for side, want in (("old", "TRIGGERED"), ("new", "NOT_TRIGGERED")):
        assert run("build", side, "--registry", f"reg-{side}", cwd=tmp_path).returncode == 0
        for v in (str(value), "Infinity"):  # JSON-ish, as --metric reads values
            out = run("invoke", "s", "--registry", f"reg-{side}", "--input", "x", "--metric",
                      f"output_toxicity={v}", "--format", "json", cwd=tmp_path)
            assert json.loads(out.stdout)["status"] == want, (side, v, out.stderr)


def test_the_json_report_holds_the_data_with_each_box_on_one_line() -> None:
    from stageguard.compiler.diff import diff
    from stageguard.compiler.pipeline import compile_paths
    from stageguard.compiler.report import as_json

    case = REVIEW / "threshold_tightened"
    before, after = ({(a.project, a.stage.name): a
                      for a in (d.to_artifact()
                                for d in compile_paths([str(case / side)]).artifacts)}
                     for side in ("before", "after"))
    report = diff(before, after, "old", "new")
    text = as_json(report)
    assert json.loads(text) == json.loads(json.dumps(report.to_data()))
    [stage] = [s for s in report.stages if s.regions]
    boxes = [line for line in text.splitlines() if line.lstrip().startswith('{"')]
    assert len(boxes) == sum(len(r.boxes) for r in (*stage.regions, *stage.hooks)) > 0
    assert text.startswith('{\n  "old": "old",\n')  # indented around the boxes
    # A string of the report's own that reads like a box's place in the text: the plain
    # indented form, the same data.
    odd = replace(report, old_label="\x000")
    assert json.loads(as_json(odd)) == json.loads(json.dumps(odd.to_data()))
    assert as_json(odd) == json.dumps(odd.to_data(), indent=2, ensure_ascii=False)
