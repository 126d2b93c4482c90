"""The remote twin of `stageguard.api`: the same function names and arguments, served
by `stageguard serve` (the `client` extra: httpx).

    from stageguard import client as sg
    sg.configure(os.environ["STAGEGUARD_TARGET"], token=os.environ.get("STAGEGUARD_TOKEN"))
    sg.invoke({"output": answer, "metrics": {...}}, stage_name="output_guard")

`configure` (and `connect`) take a url, which talks to a server, or a registry directory,
which embeds the runtime in-process; the application's code is the same either way.
Responses carry the runtime's own types (`Status`, `TraceMetadata`, `ActionResult`, …).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from stageguard.api.sdk import GalileoAPI
from stageguard.runtime.engine import InvalidRequest, Payload, StageInfo, StageNotFound
from stageguard.runtime.identity import StageKeys, find_stage
from stageguard.runtime.model import (
    ActionType,
    Artifact,
    FailMode,
    MetricSpec,
    RulesetSpec,
    StageType,
    Status,
)
from stageguard.runtime.response import (
    ActionResult,
    MetricResult,
    RuleResult,
    RulesetResult,
    StageMetadata,
    TraceMetadata,
)

__all__ = [
    "AuthError", "Client", "Http", "Payload", "RemoteError", "RemoteResponse",
    "ServiceUnavailable", "Status", "ainvoke", "ainvoke_protect", "configure", "connect",
    "create_protect_stage", "create_stage", "get_protect_stage", "get_stage", "invoke",
    "invoke_protect", "pause_protect_stage", "pause_stage", "resume_protect_stage",
    "resume_stage", "update_protect_stage", "update_stage"]

if TYPE_CHECKING:
    from stageguard.api import Protect


class RemoteError(InvalidRequest):
    """The server refused the request (4xx). `code`, `status_code`, `trace_id` and, for
    policy source, `diagnostics` (JSON data with spans) come from its error body."""

    def __init__(self, status_code: int, body: Mapping[str, Any]) -> None:
        self.status_code = status_code
        self.code = str(body.get("code", "error"))
        self.trace_id = str(body.get("trace_id", ""))
        self.diagnostics = list(body.get("diagnostics") or [])
        self.detail = body.get("detail")
        text = body.get("rendered") or (
            self.detail if isinstance(self.detail, str) else
            "; ".join(f"{d.get('path')}: {d.get('msg')}" for d in self.detail or []))
        super().__init__(f"{text} (HTTP {status_code}, {self.code}, trace {self.trace_id})")


class AuthError(RemoteError, PermissionError):
    """401 (no or unknown token) or 403 (an invoke-only token on a management call)."""


class RemoteStageNotFound(RemoteError, StageNotFound):
    pass


class ServiceUnavailable(ConnectionError):
    """The server could not be reached, or answered 5xx."""


class RemoteResponse:
    """A decision read back from the wire, with the attributes of the runtime's Response."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.text: str = data["text"]
        self.status = Status(str(data["status"]).lower())
        tm = data["trace_metadata"]
        self.trace_metadata = TraceMetadata(tm["id"], tm["received_at"], tm["response_at"],
                                            tm["execution_time"])
        ar = data.get("action_result")
        self.action_result = (ActionResult(ActionType(ar["type"]), ar["value"])
                              if ar is not None else None)
        sm = data["stage_metadata"]
        self.stage_metadata = StageMetadata(sm["project"], sm["stage_name"], sm["stage_id"],
                                            sm["stage_version"], sm["stage_type"])
        self.metadata: dict[str, str] | None = data.get("metadata")
        self.headers: dict[str, str] | None = data.get("headers")
        self.error: str | None = data.get("error")
        self._ruleset_results: tuple[RulesetResult, ...] | None = None

    def __repr__(self) -> str:
        return (f"RemoteResponse(status={self.status.value!r}, text={self.text!r}, "
                f"stage={self.stage_metadata.stage_name!r}@v{self.stage_metadata.stage_version})")

    @property
    def ruleset_statuses(self) -> tuple[Status, ...]:
        return tuple(r.status for r in self.ruleset_results)

    @property
    def ruleset_results(self) -> tuple[RulesetResult, ...]:
        if self._ruleset_results is None:
            self._ruleset_results = tuple(
                RulesetResult(r["name"], Status(r["status"].lower()),
                              RulesetSpec.model_validate(r["ruleset"]),
                              tuple(RuleResult(x["metric"], x["operator"],
                                               _rule_target(x["target_value"]), x["status"].lower(),
                                               _value(x["value"]), x.get("error"))
                                    for x in r["rule_results"]))
                for r in self._data.get("ruleset_results") or [])
        return self._ruleset_results

    @property
    def metric_results(self) -> dict[str, MetricResult]:
        return {n: MetricResult(n, _value(m["value"]), m["status"], m["source"],
                                m["execution_time"], m.get("error"))
                for n, m in (self._data.get("metric_results") or {}).items()}

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    model_dump = to_dict


def _rule_target(raw: object) -> float | str | tuple[str, ...] | None:
    """A rule's target as the runtime holds it (label lists as tuples)."""
    value = _value(raw)
    if value is None or isinstance(value, float | str | tuple):
        return value
    if isinstance(value, int):
        return float(value)
    raise ValueError(f"not a rule target: {raw!r}")


def _value(value: object) -> object:
    # The runtime keeps label lists as tuples; JSON brings lists.
    return tuple(value) if isinstance(value, list) else value


def _stage_info(data: Mapping[str, Any]) -> StageInfo:
    return StageInfo(id=data["id"], name=data["name"], project=data["project"],
                     type=StageType(data["type"]), description=data.get("description"),
                     paused=data["paused"], version=data["version"],
                     versions=tuple(data["versions"]), fail_mode=FailMode(data["fail_mode"]))


def _payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: payload.get(k) for k in ("input", "output", "metrics") if payload.get(k)
           is not None}
    metrics = out.get("metrics")
    if isinstance(metrics, Mapping):
        out["metrics"] = {k: list(v) if isinstance(v, tuple | frozenset | set) else v
                          for k, v in metrics.items()}
    return out


def stage_url(project: str, stage: str) -> str:
    """A stage's path on the service (names are free text: each is quoted)."""
    return f"/projects/{quote(project, safe='')}/stages/{quote(stage, safe='')}"


class Http:
    """The `Backend` over HTTP: one server; thread-safe, with pooled keep-alive connections
    (and an async pool for `ainvoke`, made on first use in each event loop)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 **httpx_kwargs: Any) -> None:
        try:  # the `client` extra; imported here so the runtime never needs it
            import httpx
        except ImportError as exc:
            raise ImportError("stageguard.client.Client needs httpx: pip install "
                              "'stageguard[client]'") from exc

        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._kwargs = httpx_kwargs
        self._httpx = httpx
        self._http = httpx.Client(base_url=self._url, headers=self._headers, timeout=timeout,
                                  **httpx_kwargs)
        self._async: tuple[Any, Any] | None = None  # (event loop, httpx.AsyncClient)

    def close(self) -> None:
        self._http.close()
        if self._async is not None:
            loop, client = self._async
            self._async = None
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(client.aclose())

    def _answer(self, method: str, path: str, resp: Any) -> Any:
        if resp.status_code >= 500:
            raise ServiceUnavailable(f"{method} {path}: HTTP {resp.status_code} "
                                     f"{resp.text[:200]}")
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text[:200]}
            cls = (AuthError if resp.status_code in (401, 403) else
                   RemoteStageNotFound if resp.status_code == 404 else RemoteError)
            raise cls(resp.status_code, body)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.content

    def call(self, method: str, path: str, *, json: object = None,
             params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        try:
            kwargs: dict[str, Any] = {"json": json, "params": params}
            if timeout is not None:
                kwargs["timeout"] = timeout
            resp = self._http.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{method} {path}: {exc}") from exc
        return self._answer(method, path, resp)

    async def acall(self, method: str, path: str, *, json: object = None,
                    timeout: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, self._httpx.AsyncClient(
                base_url=self._url, headers=self._headers, timeout=self._timeout,
                **self._kwargs))
        try:
            resp = await self._async[1].request(method, path, json=json, timeout=timeout)
        except self._httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{method} {path}: {exc}") from exc
        return self._answer(method, path, resp)

    @staticmethod
    def _invoke_body(payload: Mapping[str, Any], stage_name: str | None, project: str | None,
                     stage_id: str | None, version: int | None,
                     rulesets: str | list[Any] | None, timeout: float,
                     metadata: Mapping[str, str] | None,
                     headers: Mapping[str, str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"payload": _payload(payload), "timeout": timeout}
        # The service reads a project given by name or by id from either field.
        for key, value in (("stage_name", stage_name), ("project_name", project),
                           ("stage_id", stage_id), ("stage_version", version),
                           ("prioritized_rulesets", rulesets),
                           ("metadata", dict(metadata) if metadata is not None else None),
                           ("headers", dict(headers) if headers is not None else None)):
            if value is not None:
                body[key] = value
        return body

    def invoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
               project: str | None, stage_id: str | None, version: int | None,
               rulesets: str | list[Any] | None, timeout: float,
               metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
               allow_subscriptions: bool = True) -> RemoteResponse:
        body = self._invoke_body(payload, stage_name, project, stage_id, version, rulesets,
                                 timeout, metadata, headers)
        # The HTTP call may outlast the guardrail timeout by the network's share.
        return RemoteResponse(self.call("POST", "/protect/invoke", json=body,
                                        timeout=timeout + 30.0))

    async def ainvoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
                      project: str | None, stage_id: str | None, version: int | None,
                      rulesets: str | list[Any] | None, timeout: float,
                      metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                      allow_subscriptions: bool = True) -> RemoteResponse:
        body = self._invoke_body(payload, stage_name, project, stage_id, version, rulesets,
                                 timeout, metadata, headers)
        return RemoteResponse(await self.acall("POST", "/protect/invoke", json=body,
                                               timeout=timeout + 30.0))

    def create_stage(self, name: str, *, project: str, type: StageType | None,
                     description: str | None, paused: bool, rulesets: str | list[Any] | None,
                     fail_mode: FailMode, metrics: Sequence[MetricSpec]) -> StageInfo:
        body: dict[str, Any] = {
            "name": name, "paused": paused, "fail_mode": FailMode(fail_mode).value,
            "description": description,
            "metrics": [m.model_dump(mode="json") for m in metrics]}
        if type is not None:
            body["type"] = StageType(type).value
        if rulesets is not None:
            body["prioritized_rulesets"] = rulesets
        return _stage_info(self.call("POST", f"/projects/{quote(project, safe='')}/stages",
                                     json=body))

    def _locate(self, project: str | None, stage_name: str | None,
                stage_id: str | None) -> tuple[str, str]:
        if project is not None and (stage_name or stage_id):
            return project, str(stage_name or stage_id)  # the service resolves ids in urls
        if stage_name is None and stage_id is None:
            raise InvalidRequest("name a stage (stage_name or stage_id)")
        listed = StageKeys((s.project, s.name) for s in self.stages())
        return find_stage(listed, None, stage_name, stage_id)

    def _stage_path(self, project: str | None, stage_name: str | None,
                    stage_id: str | None) -> str:
        return stage_url(*self._locate(project, stage_name, stage_id))

    def get_stage(self, *, project: str | None, stage_name: str | None,
                  stage_id: str | None) -> StageInfo | None:
        try:
            return _stage_info(self.call("GET", self._stage_path(project, stage_name,
                                                                 stage_id)))
        except StageNotFound:
            return None

    def update_stage(self, *, project: str | None, stage_name: str | None,
                     stage_id: str | None, rulesets: str | list[Any]) -> StageInfo:
        return _stage_info(self.call("POST", self._stage_path(project, stage_name, stage_id),
                                     json={"prioritized_rulesets": rulesets}))

    def set_paused(self, paused: bool, *, project: str | None, stage_name: str | None,
                   stage_id: str | None) -> StageInfo:
        return _stage_info(self.call("PUT", self._stage_path(project, stage_name, stage_id),
                                     params={"pause": "true" if paused else "false"}))

    def stages(self) -> list[StageInfo]:
        return [_stage_info(s) for s in self.call("GET", "/stages")]


class Client(GalileoAPI):
    """Galileo's API (`stageguard.api.sdk`) served by `stageguard serve`, plus what only the
    service offers (versions, artifacts, publishing source)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 **httpx_kwargs: Any) -> None:
        self.backend = Http(url, token, timeout=timeout, **httpx_kwargs)
        super().__init__(lambda: self.backend)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stages(self) -> list[StageInfo]:
        return self.backend.stages()

    def versions(self, *, project: str, stage_name: str) -> list[dict[str, Any]]:
        return list(self.backend.call("GET", stage_url(project, stage_name) + "/versions"))

    def artifact(self, *, project: str, stage_name: str, version: int) -> Artifact:
        raw = self.backend.call("GET", stage_url(project, stage_name)
                                + f"/versions/{version}/artifact")
        return Artifact.model_validate(raw) if not isinstance(raw, bytes) \
            else Artifact.model_validate_json(raw)

    def publish_source(self, name: str, files: Mapping[str, str] | None = None, *,
                       source: str | None = None,
                       project: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"files": dict(files)} if files is not None else {
            "source": source}
        if project is not None:
            body["project"] = project
        return dict(self.backend.call("POST", f"/stages/{quote(name, safe='')}/source",
                                      json=body))


def connect(target: str | os.PathLike[str], token: str | None = None,
            **kwargs: Any) -> Client | Protect:
    """A url gives a `Client`; a registry directory gives the embedded runtime."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return Client(text, token, **kwargs)
    from stageguard.api import Protect  # embedded: the compiler reads source rulesets

    return Protect(text, **kwargs)


_default: Client | Protect | None = None


def configure(target: str | os.PathLike[str], token: str | None = None,
              **kwargs: Any) -> Client | Protect:
    """Point the module-level functions at a server (url) or a registry (directory).
    Without a call, the first function used reads STAGEGUARD_TARGET (and STAGEGUARD_TOKEN),
    or else Galileo's own settings: GALILEO_API_URL or GALILEO_CONSOLE_URL, with
    GALILEO_API_KEY as the token."""
    global _default
    old, _default = _default, connect(target, token, **kwargs)
    if old is not None:
        old.close()
    return _default


def default_target() -> Client | Protect:
    """The configured target (configuring it from the environment on first use)."""
    if _default is None:
        env = os.environ
        target = (env.get("STAGEGUARD_TARGET") or env.get("GALILEO_API_URL")
                  or env.get("GALILEO_CONSOLE_URL"))
        if not target:
            raise InvalidRequest("call stageguard.client.configure(url_or_registry) first, or "
                                 "set STAGEGUARD_TARGET")
        configure(target, env.get("STAGEGUARD_TOKEN") or env.get("GALILEO_API_KEY"))
    assert _default is not None
    return _default


_module = GalileoAPI(lambda: default_target().backend)

invoke = _module.invoke
ainvoke = _module.ainvoke
invoke_protect = _module.invoke_protect
ainvoke_protect = _module.ainvoke_protect
create_stage = _module.create_stage
create_protect_stage = _module.create_protect_stage
get_stage = _module.get_stage
get_protect_stage = _module.get_protect_stage
update_stage = _module.update_stage
update_protect_stage = _module.update_protect_stage
pause_stage = _module.pause_stage
pause_protect_stage = _module.pause_protect_stage
resume_stage = _module.resume_stage
resume_protect_stage = _module.resume_protect_stage
