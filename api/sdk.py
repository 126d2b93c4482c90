"""Galileo's Python API, spelled as Galileo users write it, over any stageguard backend.

Galileo Protect has had two Python APIs, and users' code calls both: `galileo_protect`
(`invoke`, `ainvoke`, `create_stage`, …) and the `galileo` 2.x SDK (`invoke_protect`,
`ainvoke_protect`, `create_protect_stage`, `get_protect_stage`, …). `GalileoAPI` has every one
of those functions with Galileo's argument names and defaults, and stageguard's own names
beside them; it reads galileo-core's objects (anything with a `model_dump()` of their shape:
`Payload`, `Ruleset`, `Rule`; galileo-core itself is never imported) and normalises all of
it once, here, for the embedded runtime (`stageguard.api.Protect`) and the HTTP client
(`stageguard.client.Client`) alike. A `Backend` does the work with plain, resolved arguments.

Galileo's rules kept: an explicit project id beats an explicit name, then the environment's
`GALILEO_PROJECT_ID`, then `GALILEO_PROJECT` (or `GALILEO_PROJECT_NAME`); invocations also
read `GALILEO_STAGE_ID`, `GALILEO_STAGE_NAME` and `GALILEO_STAGE_VERSION`, as galileo-core's
`Request` does. New stages are local unless said otherwise (central when they come with
rulesets: Galileo refuses a local stage with rulesets). The Python timeout is the SDK's 10 s.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol

from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.galileo import ruleset_to_galileo
from stageguard.runtime.management import StageInfo
from stageguard.runtime.model import FailMode, MetricSpec, RulesetSpec, StageType

TIMEOUT = 10.0  # seconds: the galileo SDK's TIMEOUT_SECS (the HTTP API's default is 300)

# Rulesets: stageguard source text (embedded and remote alike: the server compiles it), or a
# sequence of Galileo-shaped dicts, galileo-core `Ruleset` objects or stageguard RulesetSpecs.
Rulesets = str | Sequence[Any]


class Backend(Protocol):
    """What the embedded runtime and the HTTP client each do, with resolved arguments."""

    def invoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
               project: str | None, stage_id: str | None, version: int | None,
               rulesets: str | list[Any] | None, timeout: float,
               metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
               allow_subscriptions: bool) -> Any: ...

    def ainvoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
                project: str | None, stage_id: str | None, version: int | None,
                rulesets: str | list[Any] | None, timeout: float,
                metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                allow_subscriptions: bool) -> Awaitable[Any]: ...

    def create_stage(self, name: str, *, project: str, type: StageType | None,
                     description: str | None, paused: bool, rulesets: str | list[Any] | None,
                     fail_mode: FailMode, metrics: Sequence[MetricSpec]) -> StageInfo: ...

    def get_stage(self, *, project: str | None, stage_name: str | None,
                  stage_id: str | None) -> StageInfo | None: ...

    def update_stage(self, *, project: str | None, stage_name: str | None,
                     stage_id: str | None, rulesets: str | list[Any]) -> StageInfo: ...

    def set_paused(self, paused: bool, *, project: str | None, stage_name: str | None,
                   stage_id: str | None) -> StageInfo: ...


# ---- normalising what Galileo users pass ------------------------------------------------------


def _text(value: object) -> str | None:
    return None if value is None else str(value)  # UUID objects are ids too


def project_ref(project: str | None = None, project_name: str | None = None,
                project_id: object = None) -> str | None:
    """The project named by a call: id, then name (either spelling), then the environment."""
    if project is not None and project_name is not None and project != project_name:
        raise InvalidRequest(f"project {project!r} and project_name {project_name!r} differ")
    return (_text(project_id) or project_name or project
            or os.environ.get("GALILEO_PROJECT_ID") or os.environ.get("GALILEO_PROJECT")
            or os.environ.get("GALILEO_PROJECT_NAME") or None)


def one_of(what: str, ours: Any, theirs: Any) -> Any:
    """Our spelling or Galileo's of one argument; both only when they agree."""
    if ours is not None and theirs is not None and ours != theirs:
        raise InvalidRequest(f"{what} given twice, as {ours!r} and {theirs!r}")
    return ours if ours is not None else theirs


def payload_of(payload: object) -> Mapping[str, Any]:
    """A payload as a mapping: a dict, stageguard's `Payload`, or galileo-core's."""
    if isinstance(payload, Mapping):
        return payload
    dump = getattr(payload, "model_dump", None)
    if callable(dump):  # galileo-core's Payload (pydantic)
        data = dump()
        if isinstance(data, Mapping):
            return data
    fields = {k: getattr(payload, k) for k in ("input", "output", "metrics")
              if hasattr(payload, k)}
    if fields:  # stageguard's Payload dataclass
        return fields
    raise InvalidRequest(f"a payload is a mapping with input/output, or a Payload object, not "
                         f"a {type(payload).__name__}")


def rulesets_of(rulesets: object) -> str | list[Any] | None:
    """Rulesets as source text or Galileo-shaped dicts."""
    if rulesets is None or isinstance(rulesets, str):
        return rulesets
    if isinstance(rulesets, Mapping) or not isinstance(rulesets, Sequence):
        raise InvalidRequest(f"rulesets are a list of rulesets (or stageguard source), not a "
                             f"{type(rulesets).__name__}")
    out: list[Any] = []
    for item in rulesets:
        if isinstance(item, RulesetSpec):
            out.append(ruleset_to_galileo(item))
        elif not isinstance(item, Mapping) and callable(getattr(item, "model_dump", None)):
            out.append(item.model_dump(mode="json"))  # galileo-core's Ruleset
        else:
            out.append(item)
    return out


def stage_type_of(type_: object) -> StageType | None:
    if type_ is None:
        return None
    try:
        value = type_.value if isinstance(type_, Enum) else type_  # galileo-core's StageType
        return StageType(str(value))
    except ValueError:
        raise InvalidRequest(f"stage type {type_!r}: central or local") from None


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}={raw!r} is not a version number") from None


def _stage_project(project: str | None, project_name: str | None, project_id: object,
                   stage_id: object) -> str | None:
    """The project a stage call names; none when it names the stage by id (ids are unique)."""
    return None if stage_id else project_ref(project, project_name, project_id)


class GalileoAPI:
    """Galileo's functions, both generations of their names, over a `Backend`."""

    def __init__(self, backend: Callable[[], Backend]) -> None:
        self._backend = backend

    def _invoke_args(self, payload: object, prioritized_rulesets: object, project_id: object,
                     project_name: str | None, stage_id: object, stage_name: str | None,
                     stage_version: int | None, timeout: float,
                     metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                     project: str | None, version: int | None,
                     allow_subscriptions: bool) -> tuple[Mapping[str, Any], dict[str, Any]]:
        stage = _text(stage_id) or os.environ.get("GALILEO_STAGE_ID") or None
        name = stage_name or (None if stage else os.environ.get("GALILEO_STAGE_NAME") or None)
        return payload_of(payload), {
            "stage_name": name, "project": project_ref(project, project_name, project_id),
            "stage_id": stage,
            "version": one_of("the stage version", version, stage_version)
            if (version, stage_version) != (None, None) else _env_int("GALILEO_STAGE_VERSION"),
            "rulesets": rulesets_of(prioritized_rulesets), "timeout": timeout,
            "metadata": metadata, "headers": headers,
            "allow_subscriptions": allow_subscriptions}

    def invoke(self, payload: Any, prioritized_rulesets: Rulesets | None = None,
               project_id: Any = None, project_name: str | None = None, stage_id: Any = None,
               stage_name: str | None = None, stage_version: int | None = None,
               timeout: float = TIMEOUT, metadata: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None, *, project: str | None = None,
               version: int | None = None, allow_subscriptions: bool = True) -> Any:
        """Decide one payload with a stage, named by `stage_id`, or by `stage_name` with its
        project (`project_id`, `project_name` or `project`; the name alone when it is unique).
        A local stage takes `prioritized_rulesets` (Galileo-shaped dicts, galileo-core
        `Ruleset`s, or stageguard source); a central stage decides with its own, and an empty
        list means the same. `stage_version` (or `version`) pins a version. Returns the
        Response: `.text`, `.status`, `.trace_metadata`, `.model_dump()`."""
        body, args = self._invoke_args(payload, prioritized_rulesets, project_id, project_name,
                                       stage_id, stage_name, stage_version, timeout, metadata,
                                       headers, project, version, allow_subscriptions)
        return self._backend().invoke(body, **args)

    async def ainvoke(self, payload: Any, prioritized_rulesets: Rulesets | None = None,
                      project_id: Any = None, project_name: str | None = None,
                      stage_id: Any = None, stage_name: str | None = None,
                      stage_version: int | None = None, timeout: float = TIMEOUT,
                      metadata: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, *, project: str | None = None,
                      version: int | None = None, allow_subscriptions: bool = True) -> Any:
        """`invoke`, awaitable: it never blocks the event loop."""
        body, args = self._invoke_args(payload, prioritized_rulesets, project_id, project_name,
                                       stage_id, stage_name, stage_version, timeout, metadata,
                                       headers, project, version, allow_subscriptions)
        return await self._backend().ainvoke(body, **args)

    invoke_protect = invoke
    ainvoke_protect = ainvoke

    def create_stage(self, name: str | None = None, project_id: Any = None,
                     description: str | None = None, type: Any = None,
                     prioritized_rulesets: Rulesets | None = None, *,
                     project: str | None = None, project_name: str | None = None,
                     stage_type: Any = None, paused: bool = False, pause: bool = False,
                     fail_mode: FailMode | str = FailMode.OPEN,
                     metrics: Sequence[MetricSpec] = ()) -> StageInfo:
        """Create a stage as version 1 (galileo_protect's argument order). Local unless
        `type`/`stage_type` says central; central by default when rulesets are given. The
        name defaults to a generated one, as in the SDK."""
        target = project_ref(project, project_name, project_id)
        if target is None:
            raise InvalidRequest("name the project: project_id, project_name, or the "
                                 "GALILEO_PROJECT_ID / GALILEO_PROJECT environment variable")
        try:
            mode = FailMode(fail_mode)
        except ValueError:
            raise InvalidRequest(f"fail mode {fail_mode!r}: open or closed") from None
        return self._backend().create_stage(
            name or time.strftime("stage-%Y%m%d-%H%M%S"), project=target,
            type=one_of("the stage type", stage_type_of(type), stage_type_of(stage_type)),
            description=description, paused=paused or pause,
            rulesets=rulesets_of(prioritized_rulesets), fail_mode=mode, metrics=metrics)

    def create_protect_stage(self, project_id: Any = None, project_name: str | None = None,
                             name: str | None = None, stage_type: Any = None,
                             pause: bool = False,
                             prioritized_rulesets: Rulesets | None = None,
                             description: str | None = None) -> StageInfo:
        """The galileo SDK's `create_protect_stage` (its argument order)."""
        return self.create_stage(name, project_id, description, None, prioritized_rulesets,
                                 project_name=project_name, stage_type=stage_type, pause=pause)

    def get_stage(self, project_id: Any = None, project_name: str | None = None,
                  stage_id: Any = None, stage_name: str | None = None, *,
                  project: str | None = None) -> StageInfo | None:
        """The stage by id, or by name (with its project when the name is not unique);
        None when there is none."""
        return self._backend().get_stage(
            project=_stage_project(project, project_name, project_id, stage_id),
            stage_name=stage_name, stage_id=_text(stage_id))

    get_protect_stage = get_stage

    def update_stage(self, project_id: Any = None, project_name: str | None = None,
                     stage_id: Any = None, stage_name: str | None = None,
                     prioritized_rulesets: Rulesets | None = None, *,
                     project: str | None = None) -> StageInfo:
        """A central stage's new rulesets become its next version (none when identical; an
        empty list clears them)."""
        return self._backend().update_stage(
            project=_stage_project(project, project_name, project_id, stage_id),
            stage_name=stage_name, stage_id=_text(stage_id),
            rulesets=rulesets_of(prioritized_rulesets) or [])

    update_protect_stage = update_stage

    def pause_stage(self, project_id: Any = None, project_name: str | None = None,
                    stage_id: Any = None, stage_name: str | None = None, *,
                    project: str | None = None) -> StageInfo:
        """Pause a stage: its invocations answer `paused` until it is resumed."""
        return self._backend().set_paused(
            True, project=_stage_project(project, project_name, project_id, stage_id),
            stage_name=stage_name, stage_id=_text(stage_id))

    def resume_stage(self, project_id: Any = None, project_name: str | None = None,
                     stage_id: Any = None, stage_name: str | None = None, *,
                     project: str | None = None) -> StageInfo:
        """Resume a paused stage."""
        return self._backend().set_paused(
            False, project=_stage_project(project, project_name, project_id, stage_id),
            stage_name=stage_name, stage_id=_text(stage_id))

    pause_protect_stage = pause_stage
    resume_protect_stage = resume_stage


async def in_thread(call: Callable[[], Any]) -> Any:
    """Run a blocking call off the event loop."""
    return await asyncio.to_thread(call)
