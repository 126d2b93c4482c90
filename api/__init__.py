"""Galileo Protect's Python API over a registry, in-process, with stageguard source accepted
for rulesets.

Every function of `galileo_protect` and of the galileo 2.x SDK is here under both its names,
with Galileo's arguments, objects and defaults (`stageguard.api.sdk`); rulesets may also be
stageguard source text, one or more `ruleset NAME { … }` blocks::

    import stageguard.api as gp          # was: import galileo_protect as gp
    gp.configure(registry="registry")    # or set STAGEGUARD_REGISTRY
    gp.create_stage(name="tools", project_name="shop")          # local, as in Galileo
    gp.invoke({"input": "…"}, stage_name="tools", project_name="shop",
              prioritized_rulesets='''ruleset r { … }''')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from stageguard.api.sdk import TIMEOUT, GalileoAPI, Rulesets, in_thread
from stageguard.compiler.rulesets import PolicyError, rulesets_from_source
from stageguard.runtime.engine import Runtime, StageInfo
from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.model import FailMode, MetricSpec, StageType
from stageguard.runtime.response import Response

__all__ = [
    "TIMEOUT", "Embedded", "PolicyError", "Protect", "Rulesets", "ainvoke", "ainvoke_protect",
    "configure", "create_protect_stage", "create_stage", "get_protect_stage", "get_stage", "invoke",
    "invoke_protect", "pause_protect_stage", "pause_stage", "resume_protect_stage",
    "resume_stage", "rulesets_from_source", "update_protect_stage", "update_stage"]


class Embedded:
    """The `Backend` over a Runtime: source rulesets are compiled here, against the stage's
    metric catalog, with diagnostics pointing into the text (PolicyError)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _project(self, ref: str | None) -> str | None:
        return None if ref is None else self.runtime.resolve_project(ref)

    def _rulesets(self, rulesets: str | list[Any] | None, metrics: Sequence[MetricSpec]
                  ) -> Sequence[Any] | None:
        if isinstance(rulesets, str):
            return rulesets_from_source(rulesets, metrics)
        return rulesets

    def _stage_metrics(self, project: str | None, stage_name: str | None,
                       stage_id: str | None) -> Sequence[MetricSpec]:
        try:
            return self.runtime.artifact(project=project, stage_name=stage_name,
                                         stage_id=stage_id).metrics
        except LookupError:
            return ()  # the runtime's own call reports the missing stage

    def invoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
               project: str | None, stage_id: str | None, version: int | None,
               rulesets: str | list[Any] | None, timeout: float,
               metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None,
               allow_subscriptions: bool, scorers: bool = True) -> Response:
        project = self._project(project)
        metrics = (self._stage_metrics(project, stage_name, stage_id)
                   if isinstance(rulesets, str) else ())
        return self.runtime.invoke(payload, stage_name, project=project, stage_id=stage_id,
                                   version=version, rulesets=self._rulesets(rulesets, metrics),
                                   timeout=timeout, metadata=metadata, headers=headers,
                                   allow_subscriptions=allow_subscriptions, scorers=scorers)

    async def ainvoke(self, payload: Mapping[str, Any], *, stage_name: str | None,
                      project: str | None = None, stage_id: str | None = None,
                      version: int | None = None, rulesets: str | list[Any] | None = None,
                      timeout: float = TIMEOUT, metadata: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None,
                      allow_subscriptions: bool = True) -> Response:
        if isinstance(rulesets, str):  # compiling source would hold the loop
            return await in_thread(lambda: self.invoke(  # type: ignore[no-any-return]
                payload, stage_name=stage_name, project=project, stage_id=stage_id,
                version=version, rulesets=rulesets, timeout=timeout, metadata=metadata,
                headers=headers, allow_subscriptions=allow_subscriptions))
        return await self.runtime.ainvoke(
            payload, stage_name, project=self._project(project), stage_id=stage_id,
            version=version, rulesets=rulesets, timeout=timeout, metadata=metadata,
            headers=headers, allow_subscriptions=allow_subscriptions)

    def create_stage(self, name: str, *, project: str, type: StageType | None,
                     description: str | None, paused: bool, rulesets: str | list[Any] | None,
                     fail_mode: FailMode, metrics: Sequence[MetricSpec]) -> StageInfo:
        return self.runtime.create_stage(
            name, project=self.runtime.resolve_project(project), type=type,
            description=description, paused=paused, fail_mode=fail_mode, metrics=metrics,
            prioritized_rulesets=self._rulesets(rulesets, metrics))

    def get_stage(self, *, project: str | None, stage_name: str | None,
                  stage_id: str | None) -> StageInfo | None:
        return self.runtime.get_stage(project=self._project(project), stage_name=stage_name,
                                      stage_id=stage_id)

    def update_stage(self, *, project: str | None, stage_name: str | None,
                     stage_id: str | None, rulesets: str | list[Any],
                     expected_revision: int | None = None) -> StageInfo:
        project = self._project(project)
        metrics = self._stage_metrics(project, stage_name, stage_id)
        return self.runtime.update_stage(
            project=project, stage_name=stage_name, stage_id=stage_id,
            prioritized_rulesets=self._rulesets(rulesets, metrics) or [],
            expected_revision=expected_revision)

    def set_paused(self, paused: bool, *, project: str | None, stage_name: str | None,
                   stage_id: str | None, expected_revision: int | None = None) -> StageInfo:
        return self.runtime.set_paused(paused, project=self._project(project),
                                       stage_name=stage_name, stage_id=stage_id,
                                       expected_revision=expected_revision)


class Protect(GalileoAPI):
    """Galileo's API over a Runtime whose ruleset arguments may also be stageguard source."""

    def __init__(self, registry: str | os.PathLike[str] | None = None,
                 runtime: Runtime | None = None, **runtime_kwargs: Any) -> None:
        """Over `runtime`, or a new `Runtime(registry, **runtime_kwargs)`."""
        self.runtime = runtime or Runtime(registry, **runtime_kwargs)
        self.backend = Embedded(self.runtime)
        super().__init__(lambda: self.backend)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> Protect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Protect | None = None


def configure(registry: str | os.PathLike[str], **runtime_kwargs: Any) -> Protect:
    """Point the module-level functions at a registry (`runtime_kwargs` go to `Runtime`).
    Without a call, the first function used reads the registry path from
    STAGEGUARD_REGISTRY."""
    global _default
    if _default is not None:
        _default.runtime.close()
    _default = Protect(registry, **runtime_kwargs)
    return _default


def _protect() -> Protect:
    if _default is None:
        registry = os.environ.get("STAGEGUARD_REGISTRY")
        if not registry:
            raise InvalidRequest("call stageguard.api.configure(registry=...) first, or set "
                                 "STAGEGUARD_REGISTRY")
        configure(registry)
    assert _default is not None
    return _default


_module = GalileoAPI(lambda: _protect().backend)

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
