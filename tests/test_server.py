"""`stageguard serve` over real HTTP on 127.0.0.1: protection, management, security, errors."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stageguard.runtime.engine import Runtime, project_id, stage_id
from stageguard.runtime.registry import Registry
from stageguard.server.models import InvokeResponse, PlainInvokeResponse
from tests.profiles import examples
from tests.runtime_helpers import Sink, build
from tests.server_helpers import ADMIN, INVOKER, ROOT, serving

POLICIES = ROOT / "policies"
CLEAN = {"output_toxicity": 0.1, "output_pii": [], "context_adherence": 0.9,
         "answer_words": 3, "competitor_mention": 0.0, "output_tone": "joy"}


def rulesets(choice: str, threshold: float = 0.5, url: str | None = None) -> list[dict]:
    action: dict[str, Any] = {"type": "OVERRIDE", "choices": [choice]}
    if url:
        action["subscriptions"] = [{"url": url, "statuses": ["triggered"]}]
    return [{"name": "toxic", "rules": [{"metric": "output_toxicity", "operator": "gt",
                                        "target_value": threshold}], "action": action}]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    from stageguard.compiler.pipeline import compile_paths

    result = compile_paths([str(POLICIES)])
    assert result.ok
    Registry(root).publish(result.artifacts)
    return root


@pytest.fixture(scope="module")
def served(registry: Path):
    with serving(registry, deliver_webhooks=False) as s:  # hooks.example.com is not reachable
        yield s


@pytest.fixture(scope="module")
def admin(served):
    with served.client(ADMIN) as c:
        yield c


@pytest.fixture(scope="module")
def invoker(served):
    with served.client(INVOKER) as c:
        yield c


def invoke_body(metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"payload": {"output": "the answer", "metrics": metrics},
            "stage_name": "output_guard", **extra}


# ---- protection ---------------------------------------------------------------------------

def test_invoke_is_galileos_response_and_matches_the_embedded_runtime(
        registry: Path, invoker: httpx.Client) -> None:
    local = Runtime(registry, deliver_webhooks=False)
    cases = [CLEAN, {**CLEAN, "output_toxicity": 0.9}, {**CLEAN, "output_pii": ["ssn"]},
             {**CLEAN, "output_tone": "fear"}, {**CLEAN, "context_adherence": 0.1,
                                                 "answer_words": 41}]
    for metrics in cases:
        resp = invoker.post("/protect/invoke", json=invoke_body(
            metrics, metadata={"user": "u1"}, headers={"x-guard": "on"}))
        assert resp.status_code == 200, resp.text
        data = resp.json()
        InvokeResponse.model_validate(data)
        expected = local.invoke({"output": "the answer", "metrics": metrics},
                                "output_guard").to_dict()
        for key in ("text", "status", "action_result", "stage_metadata", "ruleset_results"):
            if key == "text" and data["status"] == "TRIGGERED":
                continue  # an override's choice is random; the ruleset results pin it
            assert data[key] == expected[key], key
        assert data["status"] == data["status"].upper()
        assert data["metadata"] == {"user": "u1"}
        assert resp.headers["x-guard"] == "on"  # Galileo: headers come back as HTTP headers
        assert resp.headers["x-trace-id"] == data["trace_metadata"]["id"]
    local.close()


def test_invoke_answers_galileos_plain_response_when_asked(invoker: httpx.Client) -> None:
    toxic = {**CLEAN, "output_toxicity": 0.9}
    rich = invoker.post("/protect/invoke", json=invoke_body(toxic)).json()
    resp = invoker.post("/protect/invoke", params={"form": "plain"}, json=invoke_body(toxic))
    assert resp.status_code == 200, resp.text
    plain = resp.json()
    PlainInvokeResponse.model_validate(plain)
    assert set(plain) == {"text", "status", "trace_metadata"}
    assert (plain["status"], plain["text"] in rich["ruleset_results"][1]["ruleset"]["action"][
        "choices"]) == ("TRIGGERED", True)
    assert resp.headers["x-trace-id"] == plain["trace_metadata"]["id"]
    assert invoker.post("/protect/invoke", params={"form": "lean"},
                        json=invoke_body(toxic)).status_code == 422


def test_stage_addressed_by_project_name_or_ids(invoker: httpx.Client) -> None:
    pid, sid = project_id("support_bot"), stage_id("support_bot", "output_guard")
    for extra in ({"project_name": "support_bot"}, {"project_id": pid},
                  {"stage_id": sid, "stage_name": None}):
        body = {k: v for k, v in invoke_body(CLEAN, **extra).items() if v is not None}
        resp = invoker.post("/protect/invoke", json=body)
        assert resp.status_code == 200, (extra, resp.text)
        assert resp.json()["stage_metadata"]["stage_id"] == sid


def test_invoke_errors_are_4xx_with_a_reason(invoker: httpx.Client) -> None:
    resp = invoker.post("/protect/invoke", json=invoke_body(CLEAN, stage_name="nope"))
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"
    assert resp.json()["detail"] == "no stage named 'nope'"  # both quotes (issue 19)
    resp = invoker.post("/protect/invoke", json={"payload": {"output": ""},
                                                 "stage_name": "output_guard"})
    assert resp.status_code == 422 and "non-empty" in resp.json()["detail"]
    resp = invoker.post("/protect/invoke", json=invoke_body({"output_toxicity": {"a": 1}}))
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["path"].startswith("body.payload.metrics.output_toxicity")
    resp = invoker.post("/protect/invoke", json=invoke_body(CLEAN, headers={"a b": "x"}))
    assert resp.status_code == 422 and "headers.a b" in resp.json()["detail"]
    resp = invoker.post("/protect/invoke", json=invoke_body(CLEAN, stage_version=99))
    assert resp.status_code == 404


def test_validation_errors_name_field_paths(admin: httpx.Client) -> None:
    resp = admin.post("/projects/p/stages", json={
        "name": "s", "prioritized_rulesets": [
            {"rules": [{"metric": "output_toxicity", "operator": "greater", "target_value": 1}],
             "action": {"type": "OVERRIDE", "choices": ["x"], "colour": "red"}}]})
    assert resp.status_code == 422
    body = resp.json()
    assert body["code"] == "validation_error" and body["trace_id"]
    paths = {d["path"] for d in body["detail"]}
    assert "body.prioritized_rulesets.list[RulesetIn][0].rules[0].operator" in paths
    assert "body.prioritized_rulesets.list[RulesetIn][0].action.colour" in paths
    assert all("input" not in d for d in body["detail"])  # the input is not echoed back
    resp = admin.post("/protect/invoke", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["type"] == "json_invalid"


def test_local_stage_takes_rulesets_as_galileo_json_or_source(admin: httpx.Client) -> None:
    resp = admin.post("/projects/apps/stages", json={"name": "tools", "type": "local"})
    assert resp.status_code == 200, resp.text
    galileo = rulesets("blocked", 0.5)
    source = 'ruleset toxic {\n  when output_toxicity > 0.5\n  override { choice "blocked" }\n}'
    versions = set()
    for given in (galileo, source):
        resp = admin.post("/protect/invoke", json={
            "payload": {"input": "q", "metrics": {"output_toxicity": 0.8}},
            "project_name": "apps", "stage_name": "tools", "prioritized_rulesets": given})
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"] == "blocked"
        versions.add(resp.json()["stage_metadata"]["stage_version"])
    assert len(versions) == 1  # the same rulesets, however written, are one version
    bad = 'ruleset toxic {\n  when output_toxicty > 0.5\n}'
    resp = admin.post("/protect/invoke", json={
        "payload": {"input": "q"}, "project_name": "apps", "stage_name": "tools",
        "prioritized_rulesets": bad})
    assert resp.status_code == 422 and resp.json()["code"] == "policy_errors"
    (diagnostic,) = resp.json()["diagnostics"]
    assert diagnostic["code"] == "SG0201" and diagnostic["span"]["line"] == 2


# ---- stage management ---------------------------------------------------------------------

def test_stage_lifecycle(admin: httpx.Client, invoker: httpx.Client, registry: Path) -> None:
    resp = admin.post("/projects/shop/stages", json={
        "name": "answers", "description": "d", "fail_mode": "closed",
        "prioritized_rulesets": rulesets("v1")})
    assert resp.status_code == 200, resp.text
    created = resp.json()
    assert created["version"] == 1 and created["fail_mode"] == "closed"
    assert created["id"] == stage_id("shop", "answers")
    assert created["project_id"] == project_id("shop")
    assert admin.post("/projects/shop/stages", json={"name": "answers"}).status_code == 409

    for ref in ("answers", created["id"]):
        for project in ("shop", project_id("shop")):
            assert admin.get(f"/projects/{project}/stages/{ref}").json() == created
    # Galileo's SDK looks one stage up by name or id and reads one stage back.
    for query in ({"stage_name": "answers"}, {"stage_id": created["id"]}):
        assert admin.get("/projects/shop/stages", params=query).json() == created
    assert admin.get("/projects/shop/stages").json() == [created]
    assert admin.get("/projects/shop/stages", params={"stage_name": "nope"}).status_code == 404

    updated = admin.post("/projects/shop/stages/answers",
                         json={"prioritized_rulesets": rulesets("v2", 0.6)}).json()
    assert updated["version"] == 2 and updated["versions"] == [1, 2]
    same = admin.post("/projects/shop/stages/answers",
                      json={"prioritized_rulesets": rulesets("v2", 0.6)}).json()
    assert same["version"] == 2  # identical rulesets: no new version

    def decide(**extra: Any) -> dict[str, Any]:
        body = {"payload": {"output": "x", "metrics": {"output_toxicity": 0.9}},
                "project_name": "shop", "stage_name": "answers", **extra}
        return invoker.post("/protect/invoke", json=body).json()

    assert decide()["text"] == "v2"
    assert decide(stage_version=1)["text"] == "v1"  # a pinned version still decides

    versions = admin.get("/projects/shop/stages/answers/versions").json()
    assert [v["version"] for v in versions] == [1, 2] and versions[-1]["latest"]
    art = admin.get("/projects/shop/stages/answers/versions/1/artifact")
    on_disk = (registry / "shop" / "answers").glob("*1*.json")
    assert art.content in {p.read_bytes() for p in on_disk}
    assert json.loads(art.content)["digest"] == versions[0]["digest"]
    assert art.headers["etag"] == f'"{versions[0]["digest"]}"'
    assert admin.get("/projects/shop/stages/answers/versions/9/artifact").status_code == 404

    paused = admin.put("/projects/shop/stages/answers", params={"pause": "true"}).json()
    assert paused["paused"] is True
    assert decide()["status"] == "PAUSED"
    resumed = admin.put("/projects/shop/stages/answers", params={"pause": "false"}).json()
    assert resumed["paused"] is False and decide()["status"] == "TRIGGERED"


def test_management_errors(admin: httpx.Client) -> None:
    assert admin.get("/projects/shop/stages/missing").status_code == 404
    assert admin.get(f"/projects/{'0' * 8}-0000-4000-8000-{'0' * 12}/stages/x").status_code \
        == 404
    resp = admin.post("/projects/..%2F..%2Fetc/stages", json={"name": "x"})
    assert resp.status_code in (404, 422)
    resp = admin.post("/projects/bad%5Cname/stages", json={"name": "x"})  # a backslash
    # The document says what a project reference looks like; the 422 names the path part.
    assert resp.status_code == 422 and resp.json()["code"] == "validation_error"
    assert resp.json()["detail"][0]["loc"] == ["path", "project"]
    resp = admin.post("/projects/support_bot/stages/input_guard",
                      json={"prioritized_rulesets": [{"rules": [
                          {"metric": "nope", "operator": "gt", "target_value": 1}]}]})
    assert resp.status_code == 422 and "unknown metric `nope`" in resp.json()["detail"]
    resp = admin.post("/projects/support_bot/stages/input_guard", json={})
    assert resp.status_code == 422


# ---- source publishing --------------------------------------------------------------------

SOURCE = """project published
stage reviewed {
  ruleset toxic {
    when output_toxicity > 0.8
    override { choice "no" }
    notify "URL"
  }
}
"""


def test_publish_source_compiles_checks_and_versions(tmp_path: Path) -> None:
    sink = Sink()
    try:
        with serving(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as s, s.client() as c:
            good = SOURCE.replace("URL", sink.url)
            resp = c.post("/stages/reviewed/source", json={"source": good})
            assert resp.status_code == 201, resp.text
            body = resp.json()
            assert body["created"] and body["stage"]["version"] == 1
            again = c.post("/stages/reviewed/source", json={"files": {"a.sg": good}})
            assert again.status_code == 200 and not again.json()["created"]

            # Errors: diagnostics with spans into the request's files; nothing published.
            index = (tmp_path / "index.json").read_bytes()
            broken = good.replace("output_toxicity > 0.8", "output_toxicty > 0.8")
            resp = c.post("/stages/reviewed/source", json={"files": {"guard.sg": broken}})
            assert resp.status_code == 422 and resp.json()["code"] == "policy_errors"
            (d,) = resp.json()["diagnostics"]
            assert (d["code"], d["span"]["file"], d["span"]["line"], d["span"]["column"]) == \
                ("SG0201", "guard.sg", 4, 10)
            assert "did you mean" in (d["help"] or "")
            assert "guard.sg:4:10" in resp.json()["rendered"]

            outside = SOURCE.replace("URL", "https://hooks.example.com/x")
            resp = c.post("/stages/reviewed/source", json={"files": {"g.sg": outside}})
            assert resp.status_code == 422
            (d,) = resp.json()["diagnostics"]
            assert d["code"] == "SG1003" and (d["span"]["line"], d["span"]["column"]) == (6, 12)
            assert "127.0.0.1" in d["help"]

            resp = c.post("/stages/other/source", json={"source": good})
            assert resp.status_code == 422
            assert resp.json()["diagnostics"][0]["code"] == "SG1001"
            assert (tmp_path / "index.json").read_bytes() == index

            # Metric declarations may sit in a file of their own.
            custom = {"metrics.sg": "project published\nmetric brand_risk {\n  type score\n}\n",
                      "guard.sg": "project published\nstage branded {\n  ruleset r {\n"
                                  "    when brand_risk > 0.5\n    passthrough\n  }\n}\n"}
            resp = c.post("/stages/branded/source", json={"files": custom})
            assert resp.status_code == 201, resp.text
            decided = c.post("/protect/invoke", json={
                "payload": {"output": "x", "metrics": {"brand_risk": 0.7}},
                "stage_name": "branded"}).json()
            assert decided["status"] == "TRIGGERED"
            assert c.post("/stages/x/source", json={"source": "a", "files": {}}) \
                .status_code == 422

            # One stage name in two projects: the request says which.
            dup = "stage dup {\n  ruleset r {\n    when output_toxicity > 0.5\n  }\n}\n"
            files = {"one.sg": "project one\n" + dup, "two.sg": "project two\n" + dup}
            resp = c.post("/stages/dup/source", json={"files": files})
            assert resp.status_code == 422
            assert resp.json()["diagnostics"][0]["code"] == "SG1002"
            resp = c.post("/stages/dup/source", json={"files": files, "project": "two"})
            assert resp.status_code == 201 and resp.json()["stage"]["project"] == "two"
    finally:
        sink.close()


def test_webhook_allowlist_is_checked_before_a_stage_is_accepted(tmp_path: Path) -> None:
    with serving(tmp_path, webhook_allow_hosts=("hooks.internal",)) as s, s.client() as c:
        resp = c.post("/projects/p/stages", json={
            "name": "s", "prioritized_rulesets": rulesets("x", url="https://evil.example/x")})
        assert resp.status_code == 422 and "evil.example" in resp.json()["detail"]
        assert c.get("/projects/p/stages/s").status_code == 404  # nothing was created
        resp = c.post("/projects/p/stages", json={
            "name": "s", "prioritized_rulesets": rulesets("x", url="https://hooks.internal/a")})
        assert resp.status_code == 200
        resp = c.post("/projects/p/stages/s", json={
            "prioritized_rulesets": rulesets("y", url="ftp://hooks.internal/a")})
        assert resp.status_code == 422
        assert c.get("/projects/p/stages/s").json()["version"] == 1


# ---- security -----------------------------------------------------------------------------

MANAGEMENT = [("GET", "/stages", None), ("GET", "/projects/support_bot/stages", None),
              ("POST", "/projects/support_bot/stages", {"name": "z"}),
              ("GET", "/projects/support_bot/stages/output_guard", None),
              ("POST", "/projects/support_bot/stages/output_guard",
               {"prioritized_rulesets": []}),
              ("PUT", "/projects/support_bot/stages/output_guard?pause=true", None),
              ("GET", "/projects/support_bot/stages/output_guard/versions", None),
              ("GET", "/projects/support_bot/stages/output_guard/versions/1/artifact", None),
              ("POST", "/stages/output_guard/source", {"source": "x"})]


@pytest.mark.parametrize(("method", "path", "body"), MANAGEMENT)
def test_management_refuses_invoke_tokens_and_strangers(
        served, method: str, path: str, body: Any) -> None:
    for token, code in ((INVOKER, 403), (None, 401), ("not-a-known-token-xxxxx", 401)):
        with served.client(token) as c:
            resp = c.request(method, path, json=body)
            assert resp.status_code == code, (token, resp.text)
            assert resp.json()["code"] in ("forbidden", "unauthorized")
            if code == 401:
                assert resp.headers["www-authenticate"].startswith("Bearer")
    with served.client(ADMIN) as c:
        assert c.get("/projects/support_bot/stages/output_guard").json()["paused"] is False


def test_invoke_needs_a_token_of_either_role(served) -> None:
    for token, code in ((None, 401), ("x" * 20, 401), (INVOKER, 200), (ADMIN, 200)):
        with served.client(token) as c:
            assert c.post("/protect/invoke", json=invoke_body(CLEAN)).status_code == code
    with served.client(None) as c:  # probes and the document need no token
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json()["ready"] is True
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/metrics").status_code == 401


def test_body_limit(tmp_path: Path) -> None:
    with serving(tmp_path, max_body=2048) as s, s.client() as c:
        big = {"payload": {"output": "x" * 4000}, "stage_name": "s"}
        resp = c.post("/protect/invoke", json=big)
        assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit is counted as the body streams in
            for _ in range(10):
                yield b"x" * 500

        resp = c.post("/protect/invoke", content=chunks(),
                      headers={"content-type": "application/json"})
        assert resp.status_code == 413
        assert c.get("/healthz").status_code == 200


def test_internal_errors_carry_no_trace(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with serving(tmp_path) as s:
        def boom() -> None:
            raise RuntimeError("secret internals /etc/passwd")

        s.app.add_api_route("/boom", boom)
        with s.client() as c, caplog.at_level(logging.ERROR, logger="stageguard.server"):
            resp = c.get("/boom")
        assert resp.status_code == 500
        assert resp.json()["code"] == "internal"
        assert "secret" not in resp.text and "Traceback" not in resp.text
        assert resp.json()["trace_id"] == resp.headers["x-trace-id"]
    # Logged once, with its traceback, under the id the caller was given.
    logged = [r for r in caplog.records if r.getMessage() == "internal error"]
    assert [getattr(r, "trace_id", None) for r in logged] == [resp.json()["trace_id"]]
    assert logged[0].exc_info is not None


# ---- operations ---------------------------------------------------------------------------

def test_metrics_count_decisions_and_webhook_drops(tmp_path: Path) -> None:
    # Stages built outside the server: their webhook host is not on this server's list,
    # so notifications are dropped at send time and counted.
    build(tmp_path, "project m\nstage s {\n  ruleset r {\n    when output_toxicity > 0.5\n"
                    "    passthrough\n    notify \"https://hooks.example.com/x\"\n  }\n}\n")
    with serving(tmp_path, webhook_allow_hosts=("127.0.0.1",), public_metrics=True) as s, \
            s.client() as c:
        for value in (0.9, 0.9, 0.1):
            c.post("/protect/invoke", json={"payload": {"output": "x", "metrics": {
                "output_toxicity": value}}, "stage_name": "s"})
        with s.client(None) as anonymous:
            text = anonymous.get("/metrics").text
    assert 'stageguard_decisions_total{project="m",stage="s",status="triggered"} 2.0' in text
    assert 'stageguard_decisions_total{project="m",stage="s",status="not_triggered"} 1.0' \
        in text
    assert 'stageguard_decision_seconds_count{project="m",stage="s"} 3.0' in text
    assert "stageguard_webhooks_dropped_total 2.0" in text
    assert 'route="/protect/invoke"' in text and "stageguard_stages_loaded 1.0" in text


def test_hot_reload_picks_up_what_others_publish(tmp_path: Path) -> None:
    text = "project h\nstage s {\n  ruleset r {\n    when output_toxicity > THR\n" \
           "    override { choice \"CHOICE\" }\n  }\n}\n"
    build(tmp_path, text.replace("THR", "0.5").replace("CHOICE", "one"))
    with serving(tmp_path, poll_interval=0.05) as s, s.client() as c:
        body = {"payload": {"output": "x", "metrics": {"output_toxicity": 0.9}},
                "stage_name": "s"}
        assert c.post("/protect/invoke", json=body).json()["text"] == "one"
        build(tmp_path, text.replace("THR", "0.5").replace("CHOICE", "two"))
        deadline = time.monotonic() + 5
        while c.post("/protect/invoke", json=body).json()["text"] != "two":
            assert time.monotonic() < deadline, "the server never reloaded"
            time.sleep(0.05)
        assert c.get("/projects/h/stages/s").json()["versions"] == [1, 2]


def test_readyz_reports_an_unreadable_registry(tmp_path: Path) -> None:
    build(tmp_path, "project r\nstage s {\n  ruleset r {\n    when output_toxicity > 0.5\n"
                    "  }\n}\n")
    with serving(tmp_path, poll_interval=0.05) as s, s.client(None) as c:
        assert c.get("/readyz").status_code == 200
        (tmp_path / "index.json").write_text("{broken")
        deadline = time.monotonic() + 5
        while c.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = c.get("/readyz").json()
        assert body["load_errors"] == ["index"]
        assert str(tmp_path) not in json.dumps(body)  # what failed, never where it lives
        # The status says degraded and how stale; the last good snapshot keeps deciding.
        status = c.get("/status").json()
        assert status["state"] == "degraded" and status["revision"] == 1
        assert status["sync_failures"] >= 1 and status["staleness_seconds"] >= 0
        assert str(tmp_path) not in json.dumps(status)
        metrics = s.client().get("/metrics").text
        assert "stageguard_registry_sync_failures" in metrics
        assert "stageguard_registry_revision 1.0" in metrics


# ---- concurrency --------------------------------------------------------------------------

def test_concurrent_invokes_while_updating_and_pausing(tmp_path: Path) -> None:
    """Every response comes from exactly one version (its text is that version's choice, or
    it is PAUSED), and every request gets its answer."""
    with serving(tmp_path) as s, s.client() as c:
        assert c.post("/projects/c/stages", json={
            "name": "s", "prioritized_rulesets": rulesets("v1", 0.0)}).status_code == 200
        stop = threading.Event()
        seen: list[tuple[int, str, str]] = []
        failures: list[str] = []
        sent = [0] * 4

        def hammer(i: int) -> None:
            with s.client(INVOKER) as mine:
                while not stop.is_set():
                    sent[i] += 1
                    resp = mine.post("/protect/invoke", json={
                        "payload": {"output": "x", "metrics": {"output_toxicity": 0.5}},
                        "project_name": "c", "stage_name": "s"})
                    if resp.status_code != 200:
                        failures.append(resp.text)
                        continue
                    d = resp.json()
                    seen.append((d["stage_metadata"]["stage_version"], d["status"], d["text"]))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(seen) < 20:  # updates start once invokes flow (version 1 is then seen)
            assert time.monotonic() < deadline, failures[:3]
            time.sleep(0.01)
        for n in range(2, 12):
            c.post("/projects/c/stages/s", json={"prioritized_rulesets": rulesets(f"v{n}", 0.0)})
            if n % 3 == 0:
                c.put("/projects/c/stages/s", params={"pause": "true"})
                c.put("/projects/c/stages/s", params={"pause": "false"})
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert len(seen) == sum(sent) > 100
    for version, status, text in seen:
        assert status in ("TRIGGERED", "PAUSED")
        if status == "TRIGGERED":
            assert text == f"v{version}"
        else:
            assert text == "x"
    assert 1 in {v for v, _, _ in seen} and len({v for v, _, _ in seen}) >= 3


def test_payloads_that_need_scorers_are_decided_off_the_event_loop(
        invoker: httpx.Client) -> None:
    # No precomputed metrics: the built-in PII scorer runs (in a thread), and metrics without
    # a scorer end in `error`; the stage fails closed, so it reports the failure.
    resp = invoker.post("/protect/invoke", json={
        "payload": {"output": "my ssn is 123-45-6789"}, "stage_name": "output_guard"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["metric_results"]["output_pii"]["source"] == "scorer"
    assert data["status"] == "TRIGGERED" and data["ruleset_results"][0]["status"] == "TRIGGERED"


def _artifact(registry: Path, stage: str):
    from stageguard.runtime.registry import Registry as _Registry

    return _Registry(registry).load("support_bot", stage)


@pytest.fixture(scope="module")
def embedded(registry: Path):
    rt = Runtime(registry, deliver_webhooks=False)
    yield rt
    rt.close()


@pytest.mark.parametrize("name", ["output_guard", "input_guard"])
def test_served_decisions_equal_embedded_ones(registry: Path, invoker: httpx.Client,
                                              embedded: Runtime, name: str) -> None:
    """Property: over HTTP, every payload the analysis can tell apart (each threshold as a
    point, each side of it, named and unnamed labels, missing values) is decided exactly
    as the embedded runtime decides it."""
    from hypothesis import given

    from stageguard.testing import payloads

    @examples(1.5)
    @given(payloads(_artifact(registry, name)))
    def check(values: dict[str, object]) -> None:
        # JSON has no number for NaN or the infinities: those payloads cannot be sent.
        metrics = {k: v for k, v in values.items() if v is not None
                   and not (isinstance(v, float) and not math.isfinite(v))}
        body = {"payload": {"input": "q", "output": "a", "metrics": metrics},
                "stage_name": name}
        wire = invoker.post("/protect/invoke", json=body).json()
        InvokeResponse.model_validate(wire)  # the documented shape, failures included
        local = embedded.invoke({"input": "q", "output": "a", "metrics": metrics},
                                name).to_dict()
        assert wire["status"] == local["status"]
        assert [r["status"] for r in wire["ruleset_results"]] == \
            [r["status"] for r in local["ruleset_results"]]
        assert wire["metric_results"].keys() == local["metric_results"].keys()
        if local["action_result"] is not None and local["action_result"]["type"] == \
                "PASSTHROUGH":
            assert wire["action_result"] == local["action_result"]

    check()


# ---- hardening: what a hostile caller may not do ------------------------------------------

LOCAL_SOURCE = {"name": "tools", "type": "local"}


def _local_rules(url: str | None) -> list[dict[str, Any]]:
    action: dict[str, Any] = {"type": "PASSTHROUGH"}
    if url:
        action["subscriptions"] = [{"url": url, "statuses": ["not_triggered"]}]
    return [{"rules": [{"metric": "output_toxicity", "operator": "gt", "target_value": 0.5}],
             "action": action}]


@pytest.mark.parametrize("allowed", [False, True])
def test_invoke_tokens_add_subscriptions_only_when_the_operator_allows(
        tmp_path: Path, allowed: bool) -> None:
    sink = Sink()
    try:
        with serving(tmp_path, webhook_allow_hosts=("127.0.0.1",),
                     invoke_subscriptions=allowed) as s, s.client(ADMIN) as admin, \
                s.client(INVOKER) as invoker:
            assert admin.post("/projects/loc/stages", json=LOCAL_SOURCE).status_code == 200
            body = {"payload": {"output": "x", "metrics": {"output_toxicity": 0.1}},
                    "stage_name": "tools", "prioritized_rulesets": _local_rules(sink.url)}
            plain = {**body, "prioritized_rulesets": _local_rules(None)}
            assert invoker.post("/protect/invoke", json=plain).status_code == 200
            resp = invoker.post("/protect/invoke", json=body)
            assert resp.status_code == (200 if allowed else 403), resp.text
            if not allowed:
                assert "admin token" in resp.json()["detail"]
            assert admin.post("/protect/invoke", json=body).status_code == 200
            s.app.state.runtime.flush(5)
        assert len(sink.bodies) == (2 if allowed else 1)
    finally:
        sink.close()


def test_echoed_headers_cannot_touch_framing(invoker: httpx.Client) -> None:
    headers = {"Content-Length": "0", "Transfer-Encoding": "chunked", "Connection": "close",
               "x-guard": "on"}
    resp = invoker.post("/protect/invoke", json=invoke_body(CLEAN, headers=headers))
    assert resp.status_code == 200 and resp.json()["headers"] == headers  # echoed in full
    assert resp.headers["x-guard"] == "on"
    assert int(resp.headers["content-length"]) == len(resp.content) > 0
    assert "transfer-encoding" not in resp.headers
    again = invoker.post("/protect/invoke", json=invoke_body(CLEAN, headers={
        "Content-Length": "999999"}))
    assert again.status_code == 200 and again.json()["status"] == "NOT_TRIGGERED"


def test_rulesets_source_cannot_break_out_of_its_block(tmp_path: Path) -> None:
    with serving(tmp_path) as s, s.client(ADMIN) as c:
        assert c.post("/projects/loc/stages", json=LOCAL_SOURCE).status_code == 200
        source = 'ruleset a {\n  when output_toxicity > 0.5\n}\n}\nstage z {\n'
        resp = c.post("/protect/invoke", json={
            "payload": {"output": "x"}, "stage_name": "tools", "prioritized_rulesets": source})
        assert resp.status_code == 422 and resp.json()["code"] == "policy_errors"
        assert resp.json()["diagnostics"][0]["span"]["line"] == 4


def test_non_finite_and_surrogate_values_answer_strict_json_or_422(
        invoker: httpx.Client) -> None:
    resp = invoker.post("/protect/invoke", content=b'{"payload": {"output": "a", "metrics": '
                        b'{"output_toxicity": NaN, "answer_words": Infinity}}, '
                        b'"stage_name": "output_guard"}',
                        headers={"Content-Type": "application/json"})
    if resp.status_code == 200:  # read leniently, written strictly
        data = json.loads(resp.content, parse_constant=lambda c: pytest.fail(c))
        assert data["metric_results"]["output_toxicity"]["value"] == "NaN"
    else:
        assert resp.status_code == 422
    bad = invoker.post("/protect/invoke", content=b'{"payload": {"output": "a\\ud800"}, '
                       b'"stage_name": "output_guard"}',
                       headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and "surrogate" in bad.text


def test_405_lists_every_method_of_the_path(admin: httpx.Client) -> None:
    resp = admin.request("DELETE", "/projects/support_bot/stages/input_guard")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST, PUT"


def test_unknown_query_parameters_are_refused(admin: httpx.Client) -> None:
    resp = admin.put("/projects/support_bot/stages/input_guard", params={"paused": "true"})
    assert resp.status_code == 422
    assert ["query", "paused"] in [d["loc"] for d in resp.json()["detail"]]
    # Found by schemathesis: a repeated parameter used to count with its last value.
    twice = admin.get("/projects/support_bot/stages",
                      params=[("stage_name", "{bad}"), ("stage_name", "input_guard")])
    assert twice.status_code == 422
    assert twice.json()["detail"][0]["loc"] == ["query", "stage_name"]


def test_lone_surrogates_in_metadata_or_published_source_are_422(admin: httpx.Client) -> None:
    json_headers = {"Content-Type": "application/json"}
    meta = admin.post("/protect/invoke", headers=json_headers, content=(
        b'{"payload": {"output": "a", "metrics": {}}, "stage_name": "output_guard", '
        b'"metadata": {"k": "\\udfff"}}'))
    assert meta.status_code == 422 and "unicode" in meta.text
    source = admin.post("/stages/s/source", headers=json_headers, content=(
        b'{"source": "project p\\nstage s {\\n  description \\"\\ud800\\"\\n}\\n"}'))
    assert source.status_code == 422 and source.json()["code"] == "policy_errors"


def test_conditional_writes_lose_with_409(admin: httpx.Client) -> None:
    assert admin.post("/projects/shop/stages", json={
        "name": "cond", "prioritized_rulesets": rulesets("v1")}).status_code == 200
    got = admin.get("/projects/shop/stages/cond")
    etag = got.headers["ETag"]
    assert etag.strip('"').isdigit()
    first = admin.post("/projects/shop/stages/cond", headers={"If-Match": etag},
                       json={"prioritized_rulesets": rulesets("v2", 0.6)})
    assert first.status_code == 200 and first.json()["version"] == 2
    # A second writer that read the same revision loses, and nothing is written.
    second = admin.post("/projects/shop/stages/cond", headers={"If-Match": etag},
                        json={"prioritized_rulesets": rulesets("v3", 0.7)})
    assert second.status_code == 409 and second.json()["code"] == "conflict"
    assert admin.get("/projects/shop/stages/cond").json()["version"] == 2
    stale = admin.put("/projects/shop/stages/cond", headers={"If-Match": etag},
                      params={"pause": "true"})
    assert stale.status_code == 409
    fresh = admin.get("/projects/shop/stages/cond").headers["ETag"]
    assert admin.put("/projects/shop/stages/cond", headers={"If-Match": fresh},
                     params={"pause": "true"}).json()["paused"] is True
    bad = admin.put("/projects/shop/stages/cond", headers={"If-Match": "yesterday"},
                    params={"pause": "false"})
    assert bad.status_code == 422
