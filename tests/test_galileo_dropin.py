"""Galileo users' own code against stageguard: their argument names, galileo-core's objects,
their defaults and environment variables, both generations of function names, sync and
async, embedded (stageguard.api) and remote (stageguard.client) alike; and the HTTP bodies
galileo-core's models serialise, generated from those models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("galileo_core.schemas.protect",
                    reason="galileo-core is not installed (pip install -e '.[conformance]')")
from galileo_core.schemas.protect.action import OverrideAction
from galileo_core.schemas.protect.payload import Payload
from galileo_core.schemas.protect.request import Request
from galileo_core.schemas.protect.response import Response as GalileoResponse
from galileo_core.schemas.protect.rule import Rule, RuleOperator
from galileo_core.schemas.protect.ruleset import Ruleset, RulesetsMixin
from galileo_core.schemas.protect.stage import StageDB, StageType, StageWithRulesets

from stageguard import api, client
from stageguard.api.sdk import GalileoAPI
from stageguard.runtime.identity import project_id
from stageguard.runtime.model import Status
from tests.server_helpers import ADMIN, serving

TOXIC = Ruleset(rules=[Rule(metric="input_toxicity", operator=RuleOperator.gt,
                            target_value=0.5)],
                action=OverrideAction(choices=["no"]))


@pytest.fixture(params=["embedded", "remote"])
def gp(request: pytest.FixtureRequest, tmp_path: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[GalileoAPI]:
    for name in ("GALILEO_PROJECT", "GALILEO_PROJECT_ID", "GALILEO_PROJECT_NAME",
                 "GALILEO_STAGE_NAME", "GALILEO_STAGE_ID", "GALILEO_STAGE_VERSION"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "embedded":
        protect = api.Protect(tmp_path / "reg")
        yield protect
        protect.close()
    else:
        with serving(tmp_path / "reg") as served:
            remote = client.Client(served.url, ADMIN)
            yield remote
            remote.close()


def test_galileo_names_objects_and_defaults(gp: GalileoAPI) -> None:
    # A local stage by default, created as the SDK does, then invoked with galileo-core's
    # Payload and Ruleset objects.
    tools = gp.create_protect_stage(project_name="My project", name="My stage")
    assert tools.type.value == "local" and tools.name == "My stage"
    payload = Payload(input="you fool")
    r = gp.invoke_protect(payload, prioritized_rulesets=[TOXIC], project_name="My project",
                          stage_name="My stage")
    assert r.status is Status.ERROR  # no score for input_toxicity, and no scorer
    r = gp.invoke({"input": "you fool", "metrics": {"input_toxicity": 0.9}},
                  prioritized_rulesets=[TOXIC], project_id=project_id("My project"),
                  stage_id=tools.id)
    assert (r.status, r.text) == (Status.TRIGGERED, "no")
    GalileoResponse.model_validate(r.model_dump())  # Galileo's model reads our answer

    # A central stage with rulesets, found by project id, paused and resumed by id.
    central = gp.create_stage(name="guard", project_id=project_id("My project"),
                              type="central", prioritized_rulesets=[TOXIC])
    assert central.type.value == "central"
    got = gp.get_protect_stage(project_id=uuid.UUID(project_id("My project")),
                               stage_name="guard")
    assert got is not None and got.id == central.id
    assert gp.get_stage(project_name="My project", stage_name="missing") is None
    # galileo-core's Request always carries a ruleset list: empty means the stage's own.
    r = gp.invoke({"input": "x", "metrics": {"input_toxicity": 0.9}}, prioritized_rulesets=[],
                  project_name="My project", stage_name="guard", stage_version=1)
    assert r.status is Status.TRIGGERED
    assert gp.pause_protect_stage(stage_id=central.id).paused
    assert gp.invoke({"input": "x"}, stage_id=central.id).status is Status.PAUSED
    assert not gp.resume_stage(project_name="My project", stage_name="guard").paused
    lenient = Ruleset(rules=[Rule(metric="input_toxicity", operator=RuleOperator.gt,
                                  target_value=0.95)])
    updated = gp.update_protect_stage(project_name="My project", stage_name="guard",
                                      prioritized_rulesets=[lenient])
    assert updated.version == 2
    assert gp.invoke({"input": "x", "metrics": {"input_toxicity": 0.9}}, stage_id=central.id
                     ).status is Status.NOT_TRIGGERED


def test_environment_fallbacks_in_galileos_order(gp: GalileoAPI,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    gp.create_stage(name="a", project_name="first", prioritized_rulesets=[TOXIC])
    gp.create_stage(name="a", project_name="second", prioritized_rulesets=[TOXIC])
    monkeypatch.setenv("GALILEO_PROJECT", "first")
    assert gp.get_stage(stage_name="a").project == "first"  # type: ignore[union-attr]
    monkeypatch.setenv("GALILEO_PROJECT_ID", project_id("second"))  # the id beats the name
    assert gp.get_stage(stage_name="a").project == "second"  # type: ignore[union-attr]
    # An explicit name beats both variables.
    assert gp.get_stage(project_name="first", stage_name="a").project == "first"  # type: ignore[union-attr]
    monkeypatch.setenv("GALILEO_STAGE_NAME", "a")
    r = gp.invoke(Payload(output="hello"))  # project and stage from the environment
    assert r.stage_metadata.project == "second" and r.status is Status.ERROR


def test_ainvoke_both_spellings(gp: GalileoAPI) -> None:
    gp.create_stage(name="s", project_name="p", type=StageType.central,
                    prioritized_rulesets=[TOXIC])

    async def both() -> list[Any]:
        return list(await asyncio.gather(
            gp.ainvoke({"input": "x", "metrics": {"input_toxicity": 0.9}},
                       project_name="p", stage_name="s"),
            gp.ainvoke_protect(Payload(input="x"), project_name="p", stage_name="s")))

    first, second = asyncio.run(both())
    assert first.status is Status.TRIGGERED and second.status is Status.ERROR


def test_module_functions_read_their_target_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEGUARD_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.setattr(api, "_default", None)
    info = api.create_stage(name="s", project_name="p")
    assert info.type.value == "local"
    assert api.get_protect_stage(project_name="p", stage_name="s") == info


def test_timeout_default_is_the_sdks() -> None:
    import inspect

    for fn in (api.invoke, client.invoke, api.ainvoke_protect):
        assert inspect.signature(fn).parameters["timeout"].default == 10.0


# ---- HTTP bodies made by galileo-core's own models ------------------------------------------


def test_http_accepts_the_bodies_galileo_core_serialises(tmp_path: Path) -> None:
    with serving(tmp_path / "reg") as served, served.client() as http:
        pid = project_id("shop")
        # Nothing serves "shop" yet, so its id is unknown: create the project by name first.
        assert http.post("/projects/shop/stages", json={"name": "seed"}).status_code == 200
        # The SDK's create body: StageWithRulesets dumped, `rulesets` renamed.
        body = StageWithRulesets(name="My stage", project_id=pid, type=StageType.central,
                                 prioritized_rulesets=[TOXIC]).model_dump(mode="json")
        body["prioritized_rulesets"] = body.pop("rulesets")
        created = http.post(f"/projects/{pid}/stages", json=body)
        assert created.status_code == 200, created.text
        stage = StageDB.model_validate(created.json())  # UUID4 ids and all
        # A local stage as galileo-core dumps it, with its (empty) `rulesets` key as is.
        local = StageWithRulesets(name="tools", project_id=pid).model_dump(mode="json")
        assert http.post(f"/projects/{pid}/stages", json=local).status_code == 200
        # The SDK's lookup by name and by id, its update and its pause.
        for query in ({"stage_name": "My stage"}, {"stage_id": str(stage.id)}):
            found = http.get(f"/projects/{pid}/stages", params=query)
            assert StageDB.model_validate(found.json()).id == stage.id
        update = RulesetsMixin(prioritized_rulesets=[TOXIC]).model_dump()
        update["prioritized_rulesets"] = update.pop("rulesets")
        assert http.post(f"/projects/{pid}/stages/{stage.id}", json=update).status_code == 200
        paused = http.put(f"/projects/{pid}/stages/{stage.id}", params={"pause": "true"})
        assert StageDB.model_validate(paused.json()).paused
        http.put(f"/projects/{pid}/stages/{stage.id}", params={"pause": "false"})
        # Invoke bodies: galileo-core's Request, by project id + name and by stage id.
        for request in (Request(payload=Payload(input="x"), project_id=pid,
                                stage_name="My stage"),
                        Request(payload=Payload(input="x"), stage_id=stage.id, timeout=10),
                        Request(payload=Payload(input="x"), project_name="shop",
                                stage_name="tools", prioritized_rulesets=[TOXIC])):
            resp = http.post("/protect/invoke", json=request.model_dump(mode="json"))
            assert resp.status_code == 200, resp.text
            answer = GalileoResponse.model_validate(resp.json())
            assert answer.status.value.lower() == "error"  # no toxicity score was given
        # A project_id in a create body that is not the url's project is refused.
        other = StageWithRulesets(name="x", project_id=str(uuid.uuid4())).model_dump(
            mode="json")
        assert http.post(f"/projects/{pid}/stages", json=other).status_code in (404, 422)


# ---- bodies generated from galileo-core's models ---------------------------------------------

from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stageguard.runtime.catalog import BUILTIN_METRICS  # noqa: E402
from stageguard.runtime.model import NAME  # noqa: E402
from tests.profiles import examples  # noqa: E402

_WORDS = st.sampled_from(["ssn", "email", "anger", "joy", "social", "0.5", ""])
_RULES = st.builds(
    Rule, metric=st.sampled_from(sorted(BUILTIN_METRICS)),
    operator=st.sampled_from(list(RuleOperator)),
    target_value=st.one_of(st.none(), st.sampled_from([-1, 0, 0.5, 1, 1.5, 1e9]),
                           st.floats(-2, 2, allow_nan=False), _WORDS,
                           st.lists(_WORDS, max_size=3)))
_RULESETS = st.builds(Ruleset, rules=st.lists(_RULES, min_size=1, max_size=3),
                      description=st.one_of(st.none(), st.text(max_size=20)))
_PAYLOADS = st.builds(Payload, input=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
                      output=st.text(min_size=1, max_size=40))


@pytest.fixture(scope="module")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serving(tmp_path_factory.mktemp("reg")) as served, served.client() as http:
        assert http.post("/projects/gen/stages", json={"name": "seed"}).status_code == 200
        yield http


@examples(0.5, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.filter_too_much])
@given(rulesets=st.lists(_RULESETS, min_size=1, max_size=3), payload=_PAYLOADS,
       # Any name that is one registry path part (no `/`, `\`, controls, leading `.`).
       name=st.from_regex(NAME, fullmatch=True).filter(lambda n: len(n) <= 60),
       data=st.data())
def test_http_accepts_generated_galileo_core_bodies(served_registry: Any, rulesets: list[Any],
                                                   payload: Any, name: str,
                                                   data: st.DataObject) -> None:
    http = served_registry
    pid = project_id("gen")
    body = StageWithRulesets(name=name, project_id=pid, type=StageType.central,
                             prioritized_rulesets=rulesets).model_dump(mode="json")
    body["prioritized_rulesets"] = body.pop("rulesets")
    created = http.post(f"/projects/{pid}/stages", json=body)
    assert created.status_code in (200, 409), created.text  # 409: a name drawn twice
    stage = StageDB.model_validate(http.get(f"/projects/{pid}/stages",
                                            params={"stage_name": name}).json())
    request = Request(payload=payload, stage_id=stage.id,
                      timeout=data.draw(st.sampled_from([1, 10.0, 300])))
    resp = http.post("/protect/invoke", json=request.model_dump(mode="json"))
    assert resp.status_code == 200, resp.text
    GalileoResponse.model_validate(resp.json())
    local = Request(payload=payload, project_name="gen", stage_name="seed",
                    prioritized_rulesets=rulesets)
    resp = http.post("/protect/invoke", json=local.model_dump(mode="json"))
    assert resp.status_code == 200, resp.text
    GalileoResponse.model_validate(resp.json())
