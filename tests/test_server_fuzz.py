"""Schemathesis against the checked-in OpenAPI document and a real server: whatever the
document allows a client to send, the server answers without a 5xx, with a documented status
and a body of the documented shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck

from stageguard.compiler.pipeline import compile_paths
from stageguard.runtime.registry import Registry
from stageguard.server.app import ServerConfig, create_app
from tests.profiles import examples
from tests.server_helpers import ADMIN, ROOT, serving, tokens

DOCUMENT = ROOT / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOCUMENT)
# Documented choices where the server and schemathesis' defaults part (docs/server.md):
# a body over --max-body is answered 413 before it is read, whatever it holds.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")
# What a rule means (a known metric, a label of its vocabulary, a target its operator takes)
# is judged against the metric catalog, which a JSON Schema cannot state: such a refusal is a
# 422 `invalid_request`. A refusal of the shape itself (`validation_error`) is what the
# schema promises never to give valid data, and `schema_valid_data_is_not_refused` holds the
# server to that.
schema.config.checks.positive_data_acceptance.expected_statuses.append("422")


@schema.auth()
class AdminToken:
    """Schemathesis sets the token itself, so it knows which cases lack it on purpose (a
    token added over every case would turn "no credentials" cases into authorised ones)."""

    def get(self, case: schemathesis.Case, ctx: object) -> str:
        return ADMIN

    def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.check
def schema_valid_data_is_not_refused(ctx: object, response: schemathesis.Response,
                                     case: schemathesis.Case) -> None:
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and response.status_code == 422:
        code = response.json().get("code")
        assert code != "validation_error", f"schema-valid data refused: {response.text}"


def test_checked_in_document_is_the_servers(tmp_path: Path) -> None:
    app = create_app(ServerConfig(registry=tmp_path, tokens=tokens()))
    try:
        served = app.openapi()
    finally:
        app.state.runtime.close()
    assert json.loads(DOCUMENT.read_text()) == served, (
        "docs/openapi.json is stale: regenerate it with `stageguard serve --registry DIR "
        "--no-auth --openapi > docs/openapi.json`")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzzed")
    result = compile_paths([str(ROOT / "policies")])
    Registry(root).publish(result.artifacts)
    with serving(root, deliver_webhooks=False) as s:
        yield s


@schema.parametrize()
# 50 generated cases per operation in CI, after schemathesis' own coverage cases (every
# boundary and every documented example); nightly runs 500.
@examples(0.5, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_keeps_its_word(case: schemathesis.Case, live) -> None:
    response = case.call(base_url=live.url)
    case.validate_response(response)  # every check schemathesis has
