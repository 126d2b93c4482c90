"""Schemathesis against the checked-in OpenAPI document and a real server: whatever the
document allows a client to send, the server answers without a 5xx, with a documented status
and a body of the documented shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from stageguard.compiler.pipeline import compile_paths
from stageguard.runtime.registry import Registry
from stageguard.server.app import ServerConfig, create_app
from tests.server_helpers import ADMIN, ROOT, serving, tokens

DOCUMENT = ROOT / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(DOCUMENT)


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
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_keeps_its_word(case: schemathesis.Case, live) -> None:
    response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {ADMIN}"})
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             response_schema_conformance])
