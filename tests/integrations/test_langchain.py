"""stageguard.integrations.langchain in a real LangChain chain (langchain-core, a fake LLM
from langchain-core), embedded and remote, sync and async; refused requests answer a clear
result instead of raising."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_core", reason="langchain-core is not installed "
                    "(pip install -e '.[langchain]')")
from langchain_core.language_models import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda

from stageguard import api, client
from stageguard.api.sdk import GalileoAPI
from stageguard.integrations.langchain import ProtectParser, ProtectTool
from tests.server_helpers import ADMIN, serving

PII = [{"rules": [{"metric": "output_pii", "operator": "contains", "target_value": "ssn"}],
        "action": {"type": "OVERRIDE", "choices": ["I can't share that."]}}]


@pytest.fixture(params=["embedded", "remote"])
def protect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalileoAPI]:
    with api.Protect(tmp_path / "reg") as seed:
        seed.create_stage(name="answers", project_name="bot", prioritized_rulesets=PII)
    if request.param == "embedded":
        with api.Protect(tmp_path / "reg") as embedded:
            yield embedded
    else:
        with serving(tmp_path / "reg") as served, client.Client(served.url, ADMIN) as remote:
            yield remote


def _chain(protect: GalileoAPI, answers: list[str], **tool: object) -> object:
    llm = FakeListLLM(responses=answers)
    guard = ProtectTool(stage_name="answers", project_name="bot", protect=protect, **tool)
    after = RunnableLambda(lambda text: f"ok: {text}")
    return (PromptTemplate.from_template("Q: {question}") | llm | StrOutputParser()
            | (lambda text: {"output": text}) | guard | ProtectParser(chain=after).parser)


def test_a_chain_answers_the_override_or_goes_on(protect: GalileoAPI) -> None:
    chain = _chain(protect, ["your SSN is 123-45-6789", "the weather is nice"])
    assert chain.invoke({"question": "mine?"}) == "I can't share that."  # type: ignore[attr-defined]
    assert chain.invoke({"question": "weather?"}) == "ok: the weather is nice"  # type: ignore[attr-defined]


def test_the_tool_async_and_its_json(protect: GalileoAPI) -> None:
    tool = ProtectTool(stage_name="answers", project_name="bot", protect=protect)
    raw = asyncio.run(tool.ainvoke({"output": "ssn 123-45-6789"}))
    body = json.loads(raw)
    assert body["status"] == "TRIGGERED" and body["text"] == "I can't share that."
    parser = ProtectParser(chain=RunnableLambda(lambda text: f"ok: {text}"))
    assert asyncio.run(parser.aparser(tool.invoke({"output": "fine"}))) == "ok: fine"


def test_refused_and_empty_requests_answer_clearly(protect: GalileoAPI) -> None:
    missing = ProtectTool(stage_name="nope", project_name="bot", protect=protect)
    body = json.loads(missing.invoke({"output": "hello"}))
    assert body["status"] == "ERROR" and body["text"] == "hello" and "nope" in body["error"]
    assert json.loads(missing.invoke({}))["error"].startswith("nothing to check")
    # The parser goes on by default, or answers its error text when told to block.
    go_on = ProtectParser(chain=RunnableLambda(lambda text: f"ok: {text}"))
    assert go_on.parser(missing.invoke({"output": "hello"})) == "ok: hello"
    block = ProtectParser(chain=RunnableLambda(lambda text: text), block_on_error=True)
    assert block.parser(missing.invoke({"output": "hello"})) == block.error_text
    # Text that is no ProtectTool answer goes to the chain as it is.
    assert go_on.parser("plain words") == "ok: plain words"
