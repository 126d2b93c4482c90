"""LangChain drop-ins for Galileo's `ProtectTool` and `ProtectParser` (the `langchain` extra).

Same arguments as Galileo's (`galileo.handlers.langchain`): the tool takes `input` and/or
`output` and answers the Protect response as JSON; the parser returns the response text
when a ruleset triggered and otherwise hands the text on to the rest of the chain. They run
embedded or remote, whichever `stageguard.client` is configured for (or the `protect`
target given), sync and async.

Where Galileo's raise (a refused request, a 422, no response at all), these answer a clear
result instead: the tool's JSON says `"status": "ERROR"` with the payload text and an
`error` message naming the cause, and the parser treats it as not triggered (the text goes
on) unless `block_on_error` makes it answer `error_text`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from stageguard.api.sdk import TIMEOUT, GalileoAPI
from stageguard.runtime.errors import InvalidRequest, StageNotFound

__all__ = ["ProtectParser", "ProtectTool", "ProtectToolInputSchema"]


class ProtectToolInputSchema(BaseModel):
    input: str | None = None
    output: str | None = None


def _error(input: str | None, output: str | None, why: str) -> str:
    return json.dumps({"text": output or input or "", "status": "ERROR", "error": why,
                       "action_result": None, "ruleset_results": []}, ensure_ascii=False)


class ProtectTool(BaseTool):
    """Galileo Protect's LangChain tool, answered by stageguard."""

    name: str = "GalileoProtect"
    description: str = (
        "Protect your LLM applications from harmful content: scans the input or output text "
        "with a guardrail stage and answers its decision as JSON.")
    args_schema: type[BaseModel] = ProtectToolInputSchema

    prioritized_rulesets: Sequence[Any] | None = None
    project_id: Any = None
    project_name: str | None = None
    stage_name: str | None = None
    stage_id: Any = None
    stage_version: int | None = None
    timeout: float = TIMEOUT
    protect: Any = Field(default=None, exclude=True, description="A stageguard.api.Protect "
                         "or stageguard.client.Client; None: the configured stageguard.client")

    def _target(self) -> GalileoAPI:
        if self.protect is not None:
            return self.protect  # type: ignore[no-any-return]
        from stageguard import client

        return client.default_target()

    def _arguments(self) -> dict[str, Any]:
        return {"prioritized_rulesets": self.prioritized_rulesets,
                "project_id": self.project_id, "project_name": self.project_name,
                "stage_name": self.stage_name, "stage_id": self.stage_id,
                "stage_version": self.stage_version, "timeout": self.timeout}

    def _run(self, input: str | None = None, output: str | None = None) -> str:
        if not input and not output:
            return _error(input, output, "nothing to check: give input or output text")
        try:
            response = self._target().invoke({"input": input or "", "output": output or ""},
                                             **self._arguments())
        except (InvalidRequest, StageNotFound, ConnectionError) as exc:
            return _error(input, output, f"{type(exc).__name__}: {exc}")
        if response is None:
            return _error(input, output, "no response")
        return json.dumps(response.to_dict(), ensure_ascii=False, allow_nan=False)

    async def _arun(self, input: str | None = None, output: str | None = None) -> str:
        if not input and not output:
            return _error(input, output, "nothing to check: give input or output text")
        try:
            response = await self._target().ainvoke(
                {"input": input or "", "output": output or ""}, **self._arguments())
        except (InvalidRequest, StageNotFound, ConnectionError) as exc:
            return _error(input, output, f"{type(exc).__name__}: {exc}")
        if response is None:
            return _error(input, output, "no response")
        return json.dumps(response.to_dict(), ensure_ascii=False, allow_nan=False)


class ProtectParser(BaseModel):
    """Galileo's parser of `ProtectTool` answers: the response text when a ruleset
    triggered, else the rest of the chain run on the text. Use `.parser` (or `.aparser`)
    as the chain's last step, as with Galileo's."""

    chain: Runnable[str, Any] = Field(description="What runs when nothing triggered")
    ignore_trigger: bool = Field(default=False, description="Always run the chain")
    echo_output: bool = Field(default=False, description="Print each raw response")
    block_on_error: bool = Field(default=False, description="An ERROR answer (the check "
                                 "could not be made) returns error_text instead of going on")
    error_text: str = "Sorry, this could not be checked."

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _route(self, raw: str) -> tuple[bool, str]:
        """(answer now, text): the text to answer, or to hand to the chain."""
        try:
            response = json.loads(raw)
        except (TypeError, ValueError):
            return False, raw  # not a ProtectTool answer: the chain gets it as it is
        if not isinstance(response, dict) or not isinstance(response.get("text"), str):
            return False, raw
        if self.echo_output:
            print(f"> Raw response: {raw}")
        status = str(response.get("status", "")).upper()
        if status == "ERROR" and self.block_on_error:
            return True, self.error_text
        if status == "TRIGGERED" and not self.ignore_trigger:
            return True, response["text"]
        return False, response["text"]

    def parser(self, response_raw_json: str) -> Any:
        done, text = self._route(response_raw_json)
        return text if done else self.chain.invoke(text)

    async def aparser(self, response_raw_json: str) -> Any:
        done, text = self._route(response_raw_json)
        return text if done else await self.chain.ainvoke(text)
