"""The Galileo-style management API, with stageguard source accepted for rulesets.

`stageguard.runtime.engine.Runtime` takes rulesets as Galileo-shaped dicts or models; this
layer (which may import the compiler) also takes them as stageguard source text: one or more
`ruleset NAME { … }` blocks. Function names follow Galileo Protect's::

    from stageguard import api as sg
    sg.configure(registry="registry")
    sg.create_stage("tools", project="shop", type="local")
    sg.invoke({"input": "…"}, stage_name="tools", prioritized_rulesets='''ruleset r { … }''')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from stageguard.compiler.rulesets import PolicyError, rulesets_from_source
from stageguard.runtime.engine import DEFAULT_TIMEOUT, Runtime, StageInfo
from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.model import FailMode, MetricSpec, StageType
from stageguard.runtime.response import Response

__all__ = ["PolicyError", "Protect", "configure", "create_stage", "get_stage", "invoke",
           "pause_stage", "resume_stage", "rulesets_from_source", "update_stage"]


Rulesets = str | Sequence[Any]  # stageguard `ruleset` blocks, or Galileo-shaped rulesets


class Protect:
    """A Runtime whose ruleset arguments may also be stageguard source text."""

    def __init__(self, registry: str | os.PathLike[str] | None = None,
                 runtime: Runtime | None = None, **runtime_kwargs: Any) -> None:
        """Over `runtime`, or a new `Runtime(registry, **runtime_kwargs)`."""
        self.runtime = runtime or Runtime(registry, **runtime_kwargs)

    def _rulesets(self, rulesets: Rulesets | None,
                  metrics: Sequence[MetricSpec]) -> Sequence[Any] | None:
        if isinstance(rulesets, str):
            return rulesets_from_source(rulesets, metrics)
        return rulesets

    def create_stage(self, name: str, *, project: str, type: StageType | str = StageType.CENTRAL,
                     description: str | None = None, paused: bool = False,
                     prioritized_rulesets: Rulesets | None = None,
                     fail_mode: FailMode | str = FailMode.OPEN,
                     metrics: Sequence[MetricSpec] = ()) -> StageInfo:
        """Create stage `name` in `project` as version 1 (StageConflict when it exists).
        A local stage is created without rulesets; `metrics` declares the custom metrics the
        rulesets may use."""
        return self.runtime.create_stage(
            name, project=project, type=type, description=description, paused=paused,
            fail_mode=fail_mode, metrics=metrics,
            prioritized_rulesets=self._rulesets(prioritized_rulesets, metrics))

    def update_stage(self, *, prioritized_rulesets: Rulesets, project: str | None = None,
                     stage_name: str | None = None, stage_id: str | None = None) -> StageInfo:
        """A central stage's new rulesets become its next version (none when identical)."""
        metrics = self._stage_metrics(project, stage_name, stage_id)
        return self.runtime.update_stage(
            project=project, stage_name=stage_name, stage_id=stage_id,
            prioritized_rulesets=self._rulesets(prioritized_rulesets, metrics) or [])

    def invoke(self, payload: Mapping[str, Any], *, stage_name: str | None = None,
               project: str | None = None, stage_id: str | None = None,
               version: int | None = None, prioritized_rulesets: Rulesets | None = None,
               timeout: float = DEFAULT_TIMEOUT, metadata: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None,
               allow_subscriptions: bool = True) -> Response:
        """Decide one payload with a stage (see `Runtime.invoke`); a local stage's rulesets
        may be source text, with diagnostics pointing into it (PolicyError)."""
        metrics = (self._stage_metrics(project, stage_name, stage_id)
                   if isinstance(prioritized_rulesets, str) else ())
        return self.runtime.invoke(payload, stage_name, project=project, stage_id=stage_id,
                                   version=version,
                                   rulesets=self._rulesets(prioritized_rulesets, metrics),
                                   timeout=timeout, metadata=metadata, headers=headers,
                                   allow_subscriptions=allow_subscriptions)

    def _stage_metrics(self, project: str | None, stage_name: str | None,
                       stage_id: str | None) -> Sequence[MetricSpec]:
        try:
            return self.runtime.artifact(project=project, stage_name=stage_name,
                                         stage_id=stage_id).metrics
        except LookupError:
            return ()  # the runtime's own call reports the missing stage

    def get_stage(self, *, project: str | None = None, stage_name: str | None = None,
                  stage_id: str | None = None) -> StageInfo | None:
        """The stage by name (and project) or id; None when there is none."""
        return self.runtime.get_stage(project=project, stage_name=stage_name,
                                      stage_id=stage_id)

    def pause_stage(self, *, project: str | None = None, stage_name: str | None = None,
                    stage_id: str | None = None) -> StageInfo:
        """Pause a stage: its invocations answer `paused` until it is resumed."""
        return self.runtime.pause_stage(project=project, stage_name=stage_name,
                                        stage_id=stage_id)

    def resume_stage(self, *, project: str | None = None, stage_name: str | None = None,
                     stage_id: str | None = None) -> StageInfo:
        """Resume a paused stage."""
        return self.runtime.resume_stage(project=project, stage_name=stage_name,
                                         stage_id=stage_id)


_default: Protect | None = None


def configure(registry: str | os.PathLike[str], **runtime_kwargs: Any) -> Protect:
    """Point the module-level functions at a registry (`runtime_kwargs` go to `Runtime`)."""
    global _default
    if _default is not None:
        _default.runtime.close()
    _default = Protect(registry, **runtime_kwargs)
    return _default


def _protect() -> Protect:
    if _default is None:
        raise InvalidRequest("call stageguard.api.configure(registry=...) first")
    return _default


def create_stage(name: str, *, project: str, type: StageType | str = StageType.CENTRAL,
                 description: str | None = None, paused: bool = False,
                 prioritized_rulesets: Rulesets | None = None,
                 fail_mode: FailMode | str = FailMode.OPEN,
                 metrics: Sequence[MetricSpec] = ()) -> StageInfo:
    """`Protect.create_stage` on the configured registry."""
    return _protect().create_stage(name, project=project, type=type, description=description,
                                   paused=paused, prioritized_rulesets=prioritized_rulesets,
                                   fail_mode=fail_mode, metrics=metrics)


def get_stage(*, project: str | None = None, stage_name: str | None = None,
              stage_id: str | None = None) -> StageInfo | None:
    """`Protect.get_stage` on the configured registry."""
    return _protect().get_stage(project=project, stage_name=stage_name, stage_id=stage_id)


def update_stage(*, prioritized_rulesets: Rulesets, project: str | None = None,
                 stage_name: str | None = None, stage_id: str | None = None) -> StageInfo:
    """`Protect.update_stage` on the configured registry."""
    return _protect().update_stage(prioritized_rulesets=prioritized_rulesets, project=project,
                                   stage_name=stage_name, stage_id=stage_id)


def pause_stage(*, project: str | None = None, stage_name: str | None = None,
                stage_id: str | None = None) -> StageInfo:
    """`Protect.pause_stage` on the configured registry."""
    return _protect().pause_stage(project=project, stage_name=stage_name, stage_id=stage_id)


def resume_stage(*, project: str | None = None, stage_name: str | None = None,
                 stage_id: str | None = None) -> StageInfo:
    """`Protect.resume_stage` on the configured registry."""
    return _protect().resume_stage(project=project, stage_name=stage_name, stage_id=stage_id)


def invoke(payload: Mapping[str, Any], *, stage_name: str | None = None,
           project: str | None = None, stage_id: str | None = None, version: int | None = None,
           prioritized_rulesets: Rulesets | None = None, timeout: float = DEFAULT_TIMEOUT,
           metadata: Mapping[str, str] | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    """`Protect.invoke` on the configured registry."""
    return _protect().invoke(payload, stage_name=stage_name, project=project,
                             stage_id=stage_id, version=version,
                             prioritized_rulesets=prioritized_rulesets, timeout=timeout,
                             metadata=metadata, headers=headers)
