"""The GitHub Action (action.yml), its steps run as Actions runs them, on a throwaway
repository: a pull request that moves three thresholds of a 1,000-ruleset stage. GitHub's
REST API is a real HTTP server on 127.0.0.1 that keeps comments as GitHub does (pages of
`per_page`), so the sticky comment is created once and then edited in place."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema
import pytest
import yaml

from tests.conftest import POLICIES

ROOT = Path(__file__).parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
SARIF = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
TOKEN = "ghs_test_token"


# ---- a GitHub REST API for issue comments ---------------------------------------------------


class FakeGitHubState:
    def __init__(self) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.next_id = 1000
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()


def _handler(state: FakeGitHubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length", "0"))
            return json.loads(self.rfile.read(n)) if n else {}

        def _serve(self, method: str) -> None:
            with state.lock:
                state.calls.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"message": "Bad credentials"})
                m = re.fullmatch(r"/repos/o/r/issues/(\d+)/comments(?:\?(.*))?", self.path)
                if m and method == "GET":
                    query = dict(p.split("=") for p in (m.group(2) or "").split("&") if p)
                    per, page = int(query.get("per_page", 30)), int(query.get("page", 1))
                    items = state.comments.get(int(m.group(1)), [])
                    return self._reply(200, items[(page - 1) * per: page * per])
                if m and method == "POST":
                    body = self._body()["body"]
                    if len(body) > 65_536:
                        return self._reply(422, {"message": "body is too long"})
                    state.next_id += 1
                    c = {"id": state.next_id, "body": body}
                    state.comments.setdefault(int(m.group(1)), []).append(c)
                    return self._reply(201, c)
                m = re.fullmatch(r"/repos/o/r/issues/comments/(\d+)", self.path)
                if m and method == "PATCH":
                    for items in state.comments.values():
                        for c in items:
                            if c["id"] == int(m.group(1)):
                                c["body"] = self._body()["body"]
                                return self._reply(200, c)
                return self._reply(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

    return Handler


@pytest.fixture
def github() -> Iterator[tuple[str, FakeGitHubState]]:
    state = FakeGitHubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


# ---- running the composite action's steps ---------------------------------------------------

_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def run_action(repo: Path, inputs: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """Each step as the runner would: `uses` steps are GitHub's (setup-python, the uploads)
    and are skipped; `run` steps get their `env` with expressions resolved, GITHUB_ENV and
    GITHUB_OUTPUT files, and stop the job when they fail. The install step is skipped too:
    the stageguard under test is already on PATH."""
    defaults = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
    given = {**defaults, **inputs}
    outputs: dict[str, dict[str, str]] = {}
    github_env: dict[str, str] = {}
    skipped, ran = [], []
    context = {"github.action_path": str(ROOT), "github.base_ref": env.get("GITHUB_BASE_REF", ""),
               "github.token": TOKEN}

    def resolve(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("inputs."):
                return resolve(given[expr.removeprefix("inputs.")])  # a default may be one
            if expr.startswith("steps."):
                _, step, _, key = expr.split(".")
                return outputs.get(step, {}).get(key, "")
            return context[expr]
        return _EXPR.sub(one, text)

    result: dict[str, Any] = {"code": 0}
    for i, step in enumerate(ACTION["runs"]["steps"]):
        if "uses" in step or step.get("id") == "install":
            skipped.append(step.get("uses", step.get("id")))
            continue
        assert "${{" not in step["run"], f"step {step['id']}: expressions belong in env"
        out_file = repo.parent / f"output-{i}"
        env_file = repo.parent / f"env-{i}"
        out_file.write_text("")
        env_file.write_text("")
        step_env = {**env, **github_env, "GITHUB_OUTPUT": str(out_file),
                    "GITHUB_ENV": str(env_file),
                    **{k: resolve(str(v)) for k, v in (step.get("env") or {}).items()}}
        p = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=step_env,
                           capture_output=True, text=True, timeout=300)
        ran.append(step["id"])
        result[step["id"]] = p
        outputs[step["id"]] = dict(line.split("=", 1) for line in
                                   out_file.read_text().splitlines() if "=" in line)
        github_env.update(line.split("=", 1) for line in env_file.read_text().splitlines()
                          if "=" in line)
        if p.returncode != 0:
            result["code"] = p.returncode
            break
    result.update(outputs=outputs, skipped=skipped, ran=ran, env=github_env)
    return result


def _big_stage(edit: bool | int) -> str:
    spec = importlib.util.spec_from_file_location(
        "_bench_analysis", ROOT / "benchmarks" / "bench_analysis.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = bench.policy(1000, 12)
    if not edit:
        return str(text)
    blocks = text.split("\n\n")
    for k in random.Random(5).sample(range(1, 12), 3):
        blocks[k] = bench._move_threshold(blocks[k])
    return "\n\n".join(blocks)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example"})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "big").mkdir(parents=True)
    shutil.copytree(POLICIES, r / "policies")
    (r / "big" / "big.sg").write_text(_big_stage(False))
    git(r, "init", "-q", "-b", "main")
    git(r, "add", ".")
    git(r, "commit", "-qm", "base")
    git(r, "checkout", "-q", "-b", "pr")
    (r / "big" / "big.sg").write_text(_big_stage(True))
    git(r, "commit", "-qam", "move three thresholds")
    return r


def _failure(result: dict[str, Any]) -> str:
    step = result["ran"][-1]
    if step == "verdict":  # say which check failed, and how
        failed = result["outputs"]["verdict"]["failed"].split()
        step = failed[0] if failed and failed[0] in result else step
    return f"step {step}: {result[step].stdout[-2000:]} {result[step].stderr[-2000:]}"


def _env(repo: Path, api: str) -> dict[str, str]:
    event = repo.parent / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    return {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": str(repo.parent), "RUNNER_TEMP": str(repo.parent / "runner"),
            "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": api, "GITHUB_BASE_REF": "main",
            "GITHUB_STEP_SUMMARY": str(repo.parent / "summary.md"), "NO_COLOR": "1"}


def test_the_action_reports_everywhere_a_reviewer_looks(
        repo: Path, github: tuple[str, FakeGitHubState]) -> None:
    api, state = github
    env = _env(repo, api)
    # The example policies: every check runs and passes. Then only the diff of the big
    # stage (its lint, 30 s here, is the analysis issue's to speed up).
    first = run_action(repo, {"paths": "policies", "base": "main"}, env)
    assert first["code"] == 0, _failure(first)
    assert first["skipped"] == ["actions/setup-python@v5", "install",
                                "github/codeql-action/upload-sarif@v3",
                                "actions/upload-artifact@v4"]
    out = Path(first["env"]["STAGEGUARD_OUT"])
    # SARIF that validates, annotations, JUnit.
    sarif = json.loads((out / "stageguard.sarif").read_text())
    jsonschema.Draft4Validator(SARIF).validate(sarif)
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"SG0706"}
    assert first["lint"].stdout.count("::notice file=policies/") == len(
        sarif["runs"][0]["results"])
    junit = ET.parse(out / "stageguard-junit.xml").getroot()
    assert junit.tag == "testsuites" and junit.get("failures") == "0"
    assert int(junit.get("tests", "0")) >= 30
    assert first["outputs"]["diff"]["changed"] == "false"  # policies/ did not change
    assert first["outputs"]["verdict"]["failed"] == ""

    # The 1,000-ruleset stage: the diff is the comment, capped under GitHub's limit.
    [comment] = state.comments[7]  # the first run's diff: no change, said in a comment
    assert "No behavioural change" in comment["body"]
    second = run_action(repo, {"paths": "big", "base": "main", "checks": "diff"}, env)
    assert second["code"] == 0, _failure(second)
    assert second["outputs"]["diff"]["changed"] == "true"
    full = json.loads((out / "stageguard-diff.json").read_text())
    regions = sum(len(s["regions"]) for s in full["stages"])
    assert regions > 20  # the artifact has every region, with every box
    [edited] = state.comments[7]
    assert edited["id"] == comment["id"]
    assert edited["body"].startswith("<!-- stageguard:diff -->\n### stageguard diff")
    assert len(edited["body"]) < 20_000
    assert f"more regions not shown ({regions} in all; at most 20 listed" in edited["body"]
    assert "`stageguard-report` artifact" in edited["body"]
    # With no region cap, GitHub's own limit caps the list: as many regions as fit (the
    # renderer the step runs, in-process: another run of the Action would prove no more).
    assert full["behaviour_changed"]
    from stageguard.compiler.diff import diff
    from stageguard.compiler.pipeline import compile_text
    from stageguard.compiler.report import COMMENT_LIMIT, markdown

    sides = [compile_text(_big_stage(edit)).artifacts[0].to_artifact() for edit in (0, 1)]
    report = diff({("bench", "big"): sides[0]}, {("bench", "big"): sides[1]})
    body = markdown(report, None, COMMENT_LIMIT)
    assert 60_000 < len(body) <= COMMENT_LIMIT and f"({regions} in all; at most" in body
    # The second push edited the comment the first created.
    assert [m for m, _ in state.calls].count("POST") == 1
    assert [m for m, _ in state.calls].count("PATCH") == 1


def test_a_failing_check_still_produces_every_report(
        repo: Path, github: tuple[str, FakeGitHubState]) -> None:
    api, _ = github
    guard = repo / "policies" / "output_guard.sg"
    guard.write_text(guard.read_text().replace("output_toxicity >= 0.7",
                                               "output_toxicty  >= 0.7"))
    git(repo, "commit", "-qam", "break it")
    result = run_action(repo, {"paths": "policies", "base": "main"}, _env(repo, api))
    assert result["code"] == 1
    assert result["outputs"]["verdict"]["failed"] == "fmt check lint test diff"
    assert result["ran"][-1] == "verdict"
    annotations = result["check"].stdout.splitlines()
    assert any(a.startswith("::error file=policies/output_guard.sg,line=19,") and
               "SG0201" in a for a in annotations)
    assert "stageguard: failed: fmt check lint test diff" in result["verdict"].stdout


def test_the_comment_command_says_what_is_missing_or_refused(
        tmp_path: Path, github: tuple[str, FakeGitHubState]) -> None:
    api, state = github
    body = tmp_path / "body.md"
    body.write_text("hello")
    exe = Path(sys.executable).with_name("stageguard")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("GITHUB_") and k != "GH_TOKEN"}
    p = subprocess.run([str(exe), "pr-comment", "--body-file", str(body)], env=base,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "needs a token" in p.stderr
    p = subprocess.run([str(exe), "pr-comment", "--body-file", str(body), "--repo", "o/r",
                        "--pr", "3", "--api-url", api], env={**base, "GITHUB_TOKEN": "wrong"},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "401 Bad credentials" in p.stderr
    body.write_text("x" * 65_600)
    p = subprocess.run([str(exe), "pr-comment", "--body-file", str(body), "--repo", "o/r",
                        "--pr", "3", "--api-url", api], env={**base, "GITHUB_TOKEN": TOKEN},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "GitHub takes at most 65,536" in p.stderr
    assert 3 not in state.comments
    # Many comments: the marked one is found past the first page.
    state.comments[4] = [{"id": i, "body": f"chatter {i}"} for i in range(150)]
    state.comments[4].append({"id": 999, "body": "<!-- stageguard:diff -->\nold"})
    body.write_text("new")
    p = subprocess.run([str(exe), "pr-comment", "--body-file", str(body), "--repo", "o/r",
                        "--pr", "4", "--api-url", api], env={**base, "GITHUB_TOKEN": TOKEN},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "edited comment 999 on o/r#4"
    assert state.comments[4][-1]["body"] == "<!-- stageguard:diff -->\nnew"
    assert len(state.comments[4]) == 151
