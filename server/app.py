"""The ASGI application: Galileo-shaped protection and stage management over a registry.

One `Runtime` serves every request (its stage table is swapped, never mutated, so a decision
sees exactly one version while an update lands); management calls go through the same
runtime, and its watcher picks up what other processes publish.
"""

import hashlib
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from stageguard.api import Embedded, PolicyError
from stageguard.api.publish import SourceRejected, publish_source
from stageguard.compiler.diagnostics import as_data
from stageguard.runtime import limits, package_version
from stageguard.runtime.decision_log import LogSettings
from stageguard.runtime.engine import (
    InvalidRequest,
    Runtime,
    StageConflict,
    StageInfo,
    StageNotFound,
    SubscriptionsNotAllowed,
    project_id,
)
from stageguard.runtime.identity import trace_id
from stageguard.runtime.management import serving_change
from stageguard.runtime.model import IDENTIFIER, NAME, FailMode, MetricSpec, StageType
from stageguard.runtime.registry import RegistryError, RevisionConflict
from stageguard.server import logs
from stageguard.server.auth import (
    SESSION_SECONDS,
    Principal,
    Role,
    TokenFile,
    Tokens,
    digest,
)
from stageguard.server.logs import ACCESS, DECISION
from stageguard.server.metrics import ServerMetrics
from stageguard.server.models import (
    REF,
    ApiKeyLogin,
    CandidateOut,
    ErrorOut,
    EventOut,
    InvokeRequest,
    InvokeResponse,
    LoginOut,
    MetricIn,
    PlainInvokeResponse,
    ProjectOut,
    PublishOut,
    RulesetIn,
    ServingIn,
    SourcePublish,
    StageCreate,
    StageOut,
    StageUpdate,
    VersionOut,
)

log = logging.getLogger("stageguard.server")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
# Galileo's `headers` are echoed as HTTP headers too, except these: they frame or route the
# response (a caller's Content-Length could empty a 200 or hang the connection), or are the
# server's own.
_NOT_ECHOED = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection", "content-encoding", "content-type", "host", "date",
    "server", "x-trace-id", "set-cookie", "www-authenticate", "location",
})


@dataclass(frozen=True)
class ServerConfig:
    registry: Path | str  # a directory, or a postgresql:// url
    tokens: Tokens | TokenFile | None  # None only when authentication was turned off
    max_body: int = 1 << 20
    webhook_allow_hosts: tuple[str, ...] | None = None
    webhook_allow_networks: tuple[str, ...] = ()
    invoke_subscriptions: bool = False  # invoke-only tokens may send subscribing rulesets
    record_local_versions: int = 0
    poll_interval: float = 1.0
    max_staleness: float | None = None  # with on_stale "fail_closed": decisions stop past it
    on_stale: str = "serve"
    cache_dir: Path | None = None  # the last good snapshot on disk, served at start if need be
    public_metrics: bool = False
    flush_timeout: float = 10.0
    deliver_webhooks: bool = True
    scorer_threads: int = 8
    decision_log: LogSettings | None = None  # where decisions are logged (docs/operations.md)


# ---- errors -----------------------------------------------------------------------------

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid_request", 500: "internal",
          503: "unavailable"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 422)}


def _trace(request: Request) -> str:
    return request_id(request.scope["state"])


def _error(request: Request, status: int, detail: object, code: str | None = None,
           headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    body = {"code": code or _CODES.get(status, "error"), "detail": detail,
            "trace_id": _trace(request), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending input is not echoed: it may be large, or a secret.
        detail = [{"loc": list(e["loc"]), "path": _field_path(e["loc"]), "msg": e["msg"],
                   "type": e["type"]} for e in exc.errors()]
        return _error(request, 422, detail, "validation_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(request, exc.status_code, exc.detail,
                      headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(PolicyError)
    async def policy(request: Request, exc: PolicyError) -> JSONResponse:
        return _error(request, 422, "the rulesets' source has errors", "policy_errors",
                      diagnostics=as_data(exc.diagnostics), rendered=str(exc))

    @app.exception_handler(SourceRejected)
    async def rejected(request: Request, exc: SourceRejected) -> JSONResponse:
        return _error(request, 422, "the source has errors; nothing was published",
                      "policy_errors", diagnostics=as_data(exc.diagnostics), rendered=str(exc))

    @app.exception_handler(StageNotFound)
    async def not_found(request: Request, exc: StageNotFound) -> JSONResponse:
        return _error(request, 404, exc.args[0] if exc.args else "not found")

    @app.exception_handler(SubscriptionsNotAllowed)
    async def not_allowed(request: Request, exc: SubscriptionsNotAllowed) -> JSONResponse:
        return _error(request, 403, str(exc))

    @app.exception_handler(StageConflict)  # Starlette picks the most specific class
    async def conflict(request: Request, exc: StageConflict) -> JSONResponse:
        return _error(request, 409, str(exc))

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(request, 422, str(exc))

    @app.exception_handler(RevisionConflict)
    async def stale_write(request: Request, exc: RevisionConflict) -> JSONResponse:
        # A conditional write (If-Match) that lost: someone changed the registry first.
        return _error(request, 409, "the registry changed since the revision in If-Match: "
                      "nothing was written; read the stage again", "conflict")

    @app.exception_handler(RegistryError)
    async def registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.error("registry error", extra={"trace_id": _trace(request), "error": str(exc)})
        return _error(request, 503, "the registry could not be read or written; see the "
                      "server log", "registry_error")


# ---- the edge: trace id, body limit, access log, request metrics --------------------------

class Edge:
    """Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, max_body: int, metrics: ServerMetrics,
                 methods: Callable[[str], list[str]],
                 fast_invoke: Callable[[Scope, bytes], Awaitable[
                     tuple[bytes, dict[str, str]] | None]] | None = None) -> None:
        self.app = app
        self.fast_invoke = fast_invoke
        self.max_body = max_body
        self.metrics = metrics
        self.methods = methods  # every method some route serves at a path (for 405's Allow)
        self.too_large = f"the request body is larger than {max_body} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500
        started_response = False

        async def send_wrapped(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = [*message.get("headers", ()),
                           (b"x-trace-id", request_id(state).encode())]
                if status == 405:  # Starlette lists the first matching route's methods only
                    allow = ", ".join(self.methods(scope["path"])).encode()
                    headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                    headers.append((b"allow", allow))
                message["headers"] = headers
            await send(message)

        length = _content_length(scope)
        try:
            if length is not None and length > self.max_body:
                await self._reply(send_wrapped, state, 413, "payload_too_large",
                                  self.too_large)
                return
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                # A streamed body: read it here, within the limit, then replay it. (With a
                # Content-Length the server itself holds the body to the declared size.)
                buffered, size = [], 0
                while True:
                    message = await receive()
                    buffered.append(message)
                    size += len(message.get("body", b""))
                    if size > self.max_body:
                        await self._reply(send_wrapped, state, 413, "payload_too_large",
                                          self.too_large)
                        return
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break

                async def replay() -> Message:
                    return buffered.pop(0) if buffered else await receive()

                await self.app(scope, replay, send_wrapped)
            elif (self.fast_invoke is not None and scope["method"] == "POST"
                  and scope["path"] == "/protect/invoke"):
                await self._invoke(scope, receive, send_wrapped)
            else:
                await self.app(scope, receive, send_wrapped)
        except Exception:
            # Whatever escaped the app's handlers: logged with the trace id, answered with
            # that id only, never with the exception's text or a traceback.
            log.exception("internal error", extra={"trace_id": request_id(state)})
            if not started_response:
                await self._reply(send_wrapped, state, 500, "internal", _INTERNAL)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request(scope["method"], template, status, elapsed)
            if not ACCESS.disabled and ACCESS.isEnabledFor(logging.INFO):
                client = scope.get("client")
                logs.info(ACCESS, "request", {
                    "trace_id": request_id(state), "method": scope["method"],
                    "path": scope["path"], "route": template, "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": client[0] if client else None,
                    "principal": state.get("principal")})

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /protect/invoke: the fast path when it answers, else the app (given the body
        read here again)."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        answered = None
        if messages[-1]["type"] == "http.request":
            assert self.fast_invoke is not None
            answered = await self.fast_invoke(scope, b"".join(chunks))
        if answered is None:
            async def replay() -> Message:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send)
            return
        body, echoed = answered
        scope["route"] = _INVOKE_ROUTE
        headers = [(b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/json")]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in echoed.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _reply(self, send: Send, state: dict[str, Any], status: int, code: str,
                     detail: str) -> None:
        body = _error_body(code, detail, request_id(state))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def request_id(state: dict[str, Any]) -> str:
    """The request's trace id: drawn when first needed. A successful invoke sets it to its
    decision's id before anything reads it, so it draws no id of its own."""
    found = state.get("trace_id")
    if found is None:
        found = state["trace_id"] = trace_id()
    return str(found)


def _error_body(code: str, detail: str, trace: str) -> bytes:
    return json.dumps({"code": code, "detail": detail, "trace_id": trace}).encode()


_INTERNAL = "internal error; the server log has it under this trace id"


class EdgeFirst(FastAPI):
    """FastAPI with `Edge` outside FastAPI's own middleware (its error, telemetry and
    body-limit layers): an invoke the edge answers skips those three layers and their
    wrapping of every send, none of which it needs (the edge bounds the body and answers
    its own errors). Every other request passes through all of them as before; an error
    that escapes a route is answered by `internal_error`, in the edge's own words."""

    edge: Callable[[ASGIApp], Edge] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack if self.edge is None else self.edge(stack)


async def internal_error(request: Request, exc: Exception) -> Response:
    """What an exception that escaped every handler is answered with (FastAPI's error
    layer sends it, then the edge logs the exception under the same trace id)."""
    return Response(_error_body("internal", _INTERNAL, request_id(request.scope["state"])),
                    status_code=500, media_type="application/json")


class _Route:
    """What the access log and the request metrics read of a route (`path`)."""

    path = "/protect/invoke"


_INVOKE_ROUTE = _Route()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ---- the app ----------------------------------------------------------------------------

# FastAPI's own OpenTelemetry instrumentation (in its newer releases) looks up the OTel
# providers, environment variables included, on every request: about a quarter of an
# invoke's CPU in `serve`, which reports through /metrics and its JSON logs. Off where
# FastAPI has it.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})

STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
# Galileo's StageDB has a creator id (UUID4); stageguard records no creators.
CREATED_BY = str(uuid.UUID(bytes=hashlib.sha256(b"stageguard").digest()[:16], version=4))


def _stage_out(info: StageInfo) -> StageOut:
    return StageOut(id=info.id, name=info.name, project=info.project,
                    project_id=project_id(info.project), created_by=CREATED_BY,
                    type=info.type.value,
                    description=info.description, paused=info.paused, version=info.version,
                    versions=list(info.versions), fail_mode=info.fail_mode.value,
                    candidate=None if info.candidate is None
                    else CandidateOut(**info.candidate.model_dump()))


def _rulesets_arg(primary: list[RulesetIn] | str | None,
                  legacy: list[RulesetIn] | str | None) -> list[dict[str, Any]] | str | None:
    chosen = primary if primary is not None else legacy
    if chosen is None or isinstance(chosen, str):
        return chosen
    return [r.model_dump(exclude_unset=True) for r in chosen]


def metric_specs(metrics: list[MetricIn]) -> list[MetricSpec]:
    try:
        return [m.spec() for m in metrics]
    except ValidationError as exc:  # e.g. minimum above maximum: the artifact model judges
        raise InvalidRequest(f"metrics: {exc.errors()[0]['msg']}") from None
    except ValueError as exc:
        raise InvalidRequest(f"metrics: {exc}") from None


async def _known_query(request: Request) -> None:
    """Unknown or repeated query parameters are refused like unknown body fields: a
    misspelt `?pause=` must not be a silently ignored setting."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = {p.alias for p in dependant.query_params}
    for dep in dependant.dependencies:
        known |= {p.alias for p in dep.query_params}
    unknown = sorted(set(request.query_params) - known)
    # Every parameter here takes one value; given twice, which one counts is a guess.
    repeated = sorted(n for n in known if len(request.query_params.getlist(n)) > 1)
    if unknown or repeated:
        raise RequestValidationError([
            *({"loc": ("query", name), "msg": "unknown query parameter",
               "type": "extra_forbidden"} for name in unknown),
            *({"loc": ("query", name), "msg": "given more than once; it takes one value",
               "type": "repeated"} for name in repeated)])


def create_app(config: ServerConfig, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(config.registry, poll_interval=config.poll_interval,
                                 webhook_allow_hosts=config.webhook_allow_hosts,
                                 webhook_allow_networks=config.webhook_allow_networks,
                                 deliver_webhooks=config.deliver_webhooks,
                                 scorer_threads=config.scorer_threads,
                                 record_local_versions=config.record_local_versions,
                                 max_staleness=config.max_staleness,
                                 on_stale=config.on_stale, cache_dir=config.cache_dir,
                                 decision_log=config.decision_log.open()
                                 if config.decision_log is not None else None)
    backend = Embedded(runtime)
    metrics = ServerMetrics(runtime)
    bearer = HTTPBearer(auto_error=False, description="A token with role `invoke` or `admin`")

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        # Graceful shutdown: uvicorn has stopped taking requests and finished the running
        # ones; deliver queued webhooks before the process goes.
        log.info("shutting down",
                 extra={"webhooks_pending": runtime.notifier_stats().pending})
        runtime.close(config.flush_timeout)

    app = EdgeFirst(
        title="stageguard", version=package_version(), lifespan=lifespan,
        description="Runtime protection for LLM applications: Galileo Protect's invoke and "
        "stage management, served from a stageguard registry.",
        responses=_ERRORS, dependencies=[Depends(_known_query)], **_NO_TELEMETRY)
    app.state.runtime = runtime
    app.state.metrics = metrics
    _install_error_handlers(app)
    def methods(path: str) -> list[str]:
        found: set[str] = set()
        for route in app.routes:
            regex, served = getattr(route, "path_regex", None), getattr(route, "methods", None)
            if regex is not None and served and regex.match(path):
                found |= served
        return sorted(found)

    app.edge = lambda stack: Edge(stack, max_body=config.max_body, metrics=metrics,
                                  methods=methods,
                                  fast_invoke=lambda scope, raw: fast_invoke(scope, raw))
    app.add_exception_handler(Exception, internal_error)

    def principal(request: Request,
                  credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if config.tokens is None:
            return Principal("anonymous", Role.ADMIN)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        found = config.tokens.find(credentials.credentials)
        if found is None:
            raise HTTPException(401, "the token is not valid",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        request.scope["state"]["principal"] = found.name
        return found

    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    async def invoker(request: Request, credentials: Credentials) -> Principal:
        return principal(request, credentials)

    async def admin(request: Request, credentials: Credentials) -> Principal:
        found = principal(request, credentials)
        if found.role is not Role.ADMIN:
            raise HTTPException(403, "this token may only invoke; managing stages needs an "
                                "admin token")
        return found

    # Galileo's SDK looks a project up by name and then names it by id; a project that holds
    # no stage yet has no id the runtime could resolve, so the names looked up are kept
    # (bounded) for the calls that follow.
    looked_up: dict[str, str] = {}

    def project_name(ref: str) -> str:
        try:
            return runtime.resolve_project(ref)
        except StageNotFound:
            if ref in looked_up:
                return looked_up[ref]
            raise

    def stage_key(project_ref: str, stage_ref: str) -> tuple[str, str]:
        return runtime.resolve_stage(project_name(project_ref), stage_ref)

    def project_out(name: str) -> ProjectOut:
        if len(looked_up) >= 10_000:
            looked_up.clear()
        looked_up[project_id(name)] = name
        return ProjectOut(id=project_id(name), name=name, created_by=CREATED_BY,
                          created_by_user={"id": CREATED_BY, "email": "stageguard@localhost"},
                          created_at=STARTED, updated_at=STARTED)
    registry_entry = runtime.registry_entry

    Admin = Annotated[Principal, Depends(admin)]
    Invoker = Annotated[Principal, Depends(invoker)]
    project_param = PathParam(description="Project name or id", pattern=REF,
                              max_length=limits.NAME)
    stage_param = PathParam(description="Stage name or id", pattern=REF,
                            max_length=limits.NAME)

    # ---- protection -------------------------------------------------------------------

    @app.post("/protect/invoke", tags=["protect"], response_model=None,
              responses={200: {"model": InvokeResponse | PlainInvokeResponse}},
              summary="Decide one payload with a stage")
    async def invoke(body: InvokeRequest, request: Request, who: Invoker,
                     form: Literal["rich", "plain"] = Query(
                         default="rich", description="`plain`: Galileo's plain Response "
                         "(`text`, `status`, `trace_metadata`) instead of the rich one "
                         "with per-ruleset and per-metric results")) -> Response:
        answer, echoed = await decide(body, who, form == "plain", request.scope["state"])
        return Response(answer, media_type="application/json", headers=echoed)

    async def decide(body: InvokeRequest, who: Principal, plain: bool,
                     state: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """An invoke request's answer and the headers it echoes; raises what the error
        handlers answer. The route and the edge's fast path (`fast_invoke`) share it."""
        for name, value in (body.headers or {}).items():
            if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
                raise InvalidRequest(f"headers.{name}: not a valid HTTP header")
        # Galileo: an explicit project id wins over an explicit name.
        ref = body.project_id if body.project_id is not None else body.project_name
        project = None if ref is None else project_name(ref)
        if body.stage_id is None and body.stage_name is None:
            raise InvalidRequest("name the stage: stage_id, or stage_name (with project_name "
                                 "or project_id when the name is not unique)")
        p = body.payload
        payload = {"input": p.input or "", "output": p.output or "", "metrics": p.metrics}
        rulesets = _rulesets_arg(body.prioritized_rulesets, body.rulesets)
        # The backend, not the Galileo-style facade: a request is never completed from the
        # server's environment (GALILEO_PROJECT and the like). Precomputed metrics decide in
        # place; scorers run on the loop (async ones) or their pools: the loop never blocks.
        # Only rulesets sent as source go to a thread, to be compiled.
        result = await backend.ainvoke(
            payload, stage_name=body.stage_name, rulesets=rulesets, project=project,
            stage_id=body.stage_id, version=body.stage_version, timeout=body.timeout,
            metadata=body.metadata, headers=body.headers,
            allow_subscriptions=who.role is Role.ADMIN or config.invoke_subscriptions)
        tm, sm = result.trace_metadata, result.stage_metadata
        state["trace_id"] = tm.id
        metrics.decision(sm.project, sm.stage_name, result.status.value, tm.execution_time)
        if DECISION.isEnabledFor(logging.INFO):
            winner = result.winner
            logs.info(DECISION, "decision", {
                "trace_id": tm.id, "project": sm.project, "stage": sm.stage_name,
                "stage_version": sm.stage_version, "status": result.status.value,
                "ruleset": winner.name if winner is not None else None,
                "action": result.action_result.type.value if result.action_result else None,
                "execution_time": tm.execution_time, "principal": who.name})
        echoed = {k: v for k, v in (body.headers or {}).items()
                  if k.lower() not in _NOT_ECHOED}
        answer = (result.to_plain_json().encode("utf-8") if plain
                  else result.to_json_bytes())
        return answer, echoed

    async def fast_invoke(scope: Scope, raw: bytes) -> tuple[bytes, dict[str, str]] | None:
        """The invoke route without FastAPI's per-request machinery (dependency solving,
        parameter checks), for the requests that succeed: the same token check, body model,
        decision and answer. Anything else (no or a bad token, a body the model refuses, an
        unknown query parameter, any error while deciding, which is raised before anything is
        done) returns None, and the request goes through FastAPI, which answers it exactly
        as without this path."""
        query = scope.get("query_string", b"")
        plain = False
        if query:
            if query == b"form=plain":
                plain = True
            elif query != b"form=rich":
                return None
        if config.tokens is None:
            who = Principal("anonymous", Role.ADMIN)
        else:
            token = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    scheme, _, rest = value.partition(b" ")
                    if scheme.lower() == b"bearer":
                        token = rest.strip().decode("latin-1")
                    break
            found = config.tokens.find(token) if token else None
            if found is None:
                return None
            who = found
        try:
            body = InvokeRequest.model_validate_json(raw)
        except ValidationError:
            return None
        state = scope.setdefault("state", {})
        try:
            answer = await decide(body, who, plain, state)
        except (InvalidRequest, StageNotFound, SubscriptionsNotAllowed, PolicyError,
                RegistryError):
            return None
        state["principal"] = who.name
        return answer

    # ---- stage management -------------------------------------------------------------

    @app.get("/stages", tags=["stages"], response_model=list[StageOut],
             summary="Every stage served, in every project")
    def list_all(_: Admin) -> list[StageOut]:
        return [_stage_out(i) for i in runtime.stages()]

    @app.post("/projects/{project}/stages", tags=["stages"], status_code=200,
              response_model=StageOut, summary="Create a stage (version 1; 200, as in Galileo)",
              responses={409: {"model": ErrorOut}})
    def create(_: Admin, body: StageCreate, project: str = project_param) -> StageOut:
        target = project_name(project)
        if body.project_id is not None and project_name(body.project_id) != target:
            raise InvalidRequest(f"project_id {body.project_id} is not project {target!r} of "
                                 "the url")
        info = backend.create_stage(
            body.name, project=target, type=None if body.type is None else StageType(body.type),
            description=body.description, paused=body.paused,
            fail_mode=FailMode(body.fail_mode), metrics=metric_specs(body.metrics),
            rulesets=_rulesets_arg(body.prioritized_rulesets, body.rulesets))
        return _stage_out(info)

    @app.get("/projects/{project}/stages", tags=["stages"],
             response_model=list[StageOut] | StageOut,
             summary="A project's stages; with `stage_name` or `stage_id`, that one stage "
             "(as Galileo's SDK looks a stage up)")
    def list_project(_: Admin, project: str = project_param,
                     stage_name: str | None = Query(default=None, pattern=NAME,
                                                    max_length=limits.NAME),
                     stage_id: str | None = Query(default=None, pattern=NAME,
                                                  max_length=limits.NAME),
                     ) -> list[StageOut] | StageOut:
        name = project_name(project)
        if stage_name is None and stage_id is None:
            return [_stage_out(i) for i in runtime.stages() if i.project == name]
        info = runtime.get_stage(project=None if stage_id else name, stage_name=stage_name,
                                 stage_id=stage_id)
        if info is None or info.project != name:
            raise StageNotFound(f"no stage {stage_id or stage_name!r} in project {name!r}")
        return _stage_out(info)

    @app.get("/projects/{project}/stages/{stage}", tags=["stages"], response_model=StageOut,
             summary="A stage by name or id")
    def get(_: Admin, response: Response, project: str = project_param,
            stage: str = stage_param) -> StageOut:
        key = stage_key(project, stage)
        revision = runtime.require_registry().revision()  # read first: never newer than info
        info = runtime.get_stage(project=key[0], stage_name=key[1])
        if info is None:
            raise StageNotFound(f"no stage {stage!r} in project {key[0]!r}")
        # The registry revision: send it back in If-Match to write only if nothing changed.
        response.headers["ETag"] = f'"{revision}"'
        return _stage_out(info)

    def expected(if_match: str | None) -> int | None:
        if if_match is None:
            return None
        text = if_match.strip().removeprefix("W/").strip('"')
        if not text.isdigit():
            raise InvalidRequest(f"If-Match: {if_match!r} is not a revision this server gave "
                                 "(the ETag of GET /projects/{project}/stages/{stage})")
        return int(text)

    @app.post("/projects/{project}/stages/{stage}", tags=["stages"], response_model=StageOut,
              summary="Update a central stage's rulesets (a new version unless identical)",
              responses={409: {"model": ErrorOut, "description": "If-Match is stale"}})
    def update(_: Admin, body: StageUpdate, project: str = project_param,
               stage: str = stage_param, if_match: str | None = Header(
                   default=None, max_length=64, description="Write only if the registry is "
                   "still at this revision (a stage's ETag); 409 otherwise")) -> StageOut:
        key = stage_key(project, stage)
        rulesets = _rulesets_arg(body.prioritized_rulesets, body.rulesets)
        if rulesets is None:
            raise InvalidRequest("prioritized_rulesets is required")
        return _stage_out(backend.update_stage(project=key[0], stage_name=key[1],
                                               stage_id=None, rulesets=rulesets,
                                               expected_revision=expected(if_match)))

    @app.put("/projects/{project}/stages/{stage}", tags=["stages"], response_model=StageOut,
             summary="Pause (`pause=true`) or resume (`pause=false`) a stage",
             responses={409: {"model": ErrorOut, "description": "If-Match is stale"}})
    def pause(_: Admin, project: str = project_param, stage: str = stage_param,
              pause: bool = Query(description="true pauses, false resumes"),
              if_match: str | None = Header(default=None, max_length=64, description=(
                  "Change it only if the registry is still at this revision; 409 "
                  "otherwise"))) -> StageOut:
        key = stage_key(project, stage)
        return _stage_out(backend.set_paused(pause, project=key[0], stage_name=key[1],
                                             stage_id=None,
                                             expected_revision=expected(if_match)))

    @app.put("/projects/{project}/stages/{stage}/serving", tags=["stages"],
             response_model=StageOut, summary="Shadow or roll out a version, promote it, "
             "roll back, or clear the candidate (one registry event)",
             responses={409: {"model": ErrorOut, "description": "If-Match is stale"}})
    def serving(_: Admin, body: ServingIn, project: str = project_param,
                stage: str = stage_param, if_match: str | None = Header(
                    default=None, max_length=64, description="Change it only if the registry "
                    "is still at this revision; 409 otherwise")) -> StageOut:
        key = stage_key(project, stage)
        where = {"project": key[0], "stage_name": key[1]}
        change = serving_change(body.action, body.version, body.percent, body.key)
        revision = expected(if_match)
        return _stage_out(runtime.set_serving(change, expected_revision=revision, **where))

    @app.get("/projects/{project}/stages/{stage}/history", tags=["stages"],
             response_model=list[EventOut], summary="The stage's registry events, oldest first")
    def history(_: Admin, project: str = project_param,
                stage: str = stage_param) -> list[EventOut]:
        key = stage_key(project, stage)
        return [EventOut(revision=e.revision, kind=e.kind, version=e.version, at=e.at,
                         note=e.note)
                for e in runtime.stage_history(project=key[0], stage_name=key[1])]

    @app.get("/projects/{project}/stages/{stage}/versions", tags=["stages"],
             response_model=list[VersionOut], summary="Every published version")
    def versions(_: Admin, project: str = project_param,
                 stage: str = stage_param) -> list[VersionOut]:
        entry = registry_entry(stage_key(project, stage))
        last = entry.latest.version if entry.latest else None
        return [VersionOut(version=v.version, digest=v.digest, created_at=v.created_at,
                           latest=v.version == last) for v in entry.versions]

    @app.get("/projects/{project}/stages/{stage}/versions/{version}/artifact",
             tags=["stages"], response_class=Response,
             responses={200: {"content": {"application/json": {}},
                              "description": "The artifact file, byte for byte"}},
             summary="A version's artifact (the registry's canonical JSON)")
    def artifact(_: Admin, project: str = project_param, stage: str = stage_param,
                 version: int = PathParam(ge=1)) -> Response:
        data, digest = runtime.artifact_bytes(stage_key(project, stage), version)
        return Response(data, media_type="application/json", headers={"ETag": f'"{digest}"'})

    @app.post("/stages/{name}/source", tags=["stages"], response_model=PublishOut,
              summary="Publish a stage from stageguard source (compiled and checked here)",
              responses={201: {"model": PublishOut}})
    def source(_: Admin, body: SourcePublish, response: Response,
               name: str = PathParam(pattern=IDENTIFIER, max_length=200)) -> PublishOut:
        if (body.files is None) == (body.source is None):
            raise InvalidRequest("send exactly one of `files` and `source`")
        files = body.files if body.files is not None else {"<request>.sg": body.source or ""}
        if not files:
            raise InvalidRequest("files: at least one file is required")
        done = publish_source(runtime, name, files, body.project)
        response.status_code = 201 if done.created else 200
        return PublishOut(stage=_stage_out(done.stage), created=done.created,
                          diagnostics=as_data(done.diagnostics))

    # ---- what Galileo's SDK asks before its protect calls ------------------------------

    @app.get("/healthcheck", tags=["galileo"], summary="Galileo's SDK checks this first")
    async def healthcheck() -> dict[str, str]:
        return {"message": "ok"}

    @app.post("/login/api_key", tags=["galileo"], response_model=LoginOut,
              summary="Exchange a token for a session token (Galileo's SDK logs in so)",
              responses={401: {"model": ErrorOut}})
    async def login(body: ApiKeyLogin) -> LoginOut:
        if config.tokens is None:  # authentication off: any well-formed session will do
            anyone = Tokens({digest(body.api_key): Principal("anonymous", Role.ADMIN)})
            session = anyone.session(body.api_key) or ""
        else:
            found = config.tokens.session(body.api_key)
            if found is None:
                raise HTTPException(401, "the api key is not valid")
            session = found
        return LoginOut(access_token=session, expires_in=SESSION_SECONDS)

    @app.get("/current_user", tags=["galileo"], summary="Who the token is (Galileo's SDK "
             "checks its login so)")
    async def current_user(who: Invoker) -> dict[str, str]:
        return {"id": str(uuid.UUID(bytes=hashlib.sha256(who.name.encode()).digest()[:16],
                                    version=4)),
                "email": f"{who.name}@stageguard", "role": "admin" if who.role is Role.ADMIN
                else "user"}

    @app.get("/projects", tags=["galileo"], response_model=list[ProjectOut],
             summary="Projects by name (stageguard's projects exist once named)")
    async def projects(_: Invoker, project_name: str | None = Query(
            default=None, pattern=NAME, max_length=limits.NAME),
            type: str | None = Query(default=None, max_length=limits.NAME)) -> list[ProjectOut]:
        if project_name is not None:
            return [project_out(project_name)]
        return [project_out(p) for p in sorted({i.project for i in runtime.stages()})]

    @app.get("/projects/{project}", tags=["galileo"], response_model=ProjectOut,
             summary="A project by id or name")
    async def project(_: Invoker, project: str = project_param) -> ProjectOut:
        return project_out(project_name(project))

    # ---- operations -------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The registry is loaded",
             responses={503: {"description": "The registry index could not be read"}})
    async def readyz() -> JSONResponse:
        # What failed, not why: the reasons name files and paths (they are in the log).
        index_error = runtime.load_errors.get("index")
        body = {"ready": index_error is None, "stages": runtime.stage_count,
                "load_errors": sorted(runtime.load_errors)}
        return JSONResponse(body, status_code=200 if index_error is None else 503)

    @app.get("/status", tags=["operations"], summary="How current the served registry is",
             responses={200: {"description": "in sync, or degraded (still serving the last "
                              "good snapshot)"}})
    async def status() -> dict[str, Any]:
        sync = runtime.sync_status()
        return {"state": "ok" if sync.error is None else "degraded",
                "revision": sync.revision,
                "synced_at": (None if sync.synced_at is None else time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(sync.synced_at))),
                "staleness_seconds": sync.staleness, "sync_failures": sync.failures,
                "stages": runtime.stage_count, "load_errors": sorted(runtime.load_errors)}

    async def metrics_guard(request: Request, credentials: Credentials) -> None:
        if not config.public_metrics:
            principal(request, credentials)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}},
             summary="Prometheus metrics")
    def prometheus(_: Annotated[None, Depends(metrics_guard)]) -> Response:
        return Response(metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

