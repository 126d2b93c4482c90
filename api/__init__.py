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
from stageguard.runtime.engine import Runtime, StageInfo
from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.model import MetricSpec
from stageguard.runtime.response import Response

__all__ = ["PolicyError", "Protect", "configure", "create_stage", "get_stage", "invoke",
           "pause_stage", "resume_stage", "rulesets_from_source", "update_stage"]


class Protect:
    """A Runtime whose ruleset arguments may also be stageguard source text."""

    def __init__(self, registry: str | os.PathLike[str] | None = None,
                 runtime: Runtime | None = None, **runtime_kwargs: Any) -> None:
        self.runtime = runtime or Runtime(registry, **runtime_kwargs)

    def _rulesets(self, rulesets: str | Sequence[Any] | None,
                  metrics: Sequence[MetricSpec]) -> Sequence[Any] | None:
        if isinstance(rulesets, str):
            return rulesets_from_source(rulesets, metrics)
        return rulesets

    def create_stage(self, name: str, *, project: str,
                     prioritized_rulesets: str | Sequence[Any] | None = None,
                     metrics: Sequence[MetricSpec] = (), **kwargs: Any) -> StageInfo:
        return self.runtime.create_stage(
            name, project=project, metrics=metrics,
            prioritized_rulesets=self._rulesets(prioritized_rulesets, metrics), **kwargs)

    def update_stage(self, *, prioritized_rulesets: str | Sequence[Any],
                     **kwargs: Any) -> StageInfo:
        metrics = self._stage_metrics(kwargs)
        return self.runtime.update_stage(
            prioritized_rulesets=self._rulesets(prioritized_rulesets, metrics) or [], **kwargs)

    def invoke(self, payload: Mapping[str, Any], *, stage_name: str | None = None,
               prioritized_rulesets: str | Sequence[Any] | None = None,
               **kwargs: Any) -> Response:
        lookup = {"project": kwargs.get("project"), "stage_name": stage_name,
                  "stage_id": kwargs.get("stage_id")}
        metrics = self._stage_metrics(lookup) if isinstance(prioritized_rulesets, str) else ()
        return self.runtime.invoke(payload, stage_name,
                                   rulesets=self._rulesets(prioritized_rulesets, metrics),
                                   **kwargs)

    def _stage_metrics(self, lookup: Mapping[str, Any]) -> Sequence[MetricSpec]:
        try:
            return self.runtime.artifact(project=lookup.get("project"),
                                         stage_name=lookup.get("stage_name"),
                                         stage_id=lookup.get("stage_id")).metrics
        except LookupError:
            return ()  # the runtime's own call reports the missing stage

    def get_stage(self, **kwargs: Any) -> StageInfo | None:
        return self.runtime.get_stage(**kwargs)

    def pause_stage(self, **kwargs: Any) -> StageInfo:
        return self.runtime.pause_stage(**kwargs)

    def resume_stage(self, **kwargs: Any) -> StageInfo:
        return self.runtime.resume_stage(**kwargs)


_default: Protect | None = None


def configure(registry: str | os.PathLike[str], **runtime_kwargs: Any) -> Protect:
    """Point the module-level functions at a registry."""
    global _default
    if _default is not None:
        _default.runtime.close()
    _default = Protect(registry, **runtime_kwargs)
    return _default


def _protect() -> Protect:
    if _default is None:
        raise InvalidRequest("call stageguard.api.configure(registry=...) first")
    return _default


def create_stage(name: str, **kwargs: Any) -> StageInfo:
    return _protect().create_stage(name, **kwargs)


def get_stage(**kwargs: Any) -> StageInfo | None:
    return _protect().get_stage(**kwargs)


def update_stage(**kwargs: Any) -> StageInfo:
    return _protect().update_stage(**kwargs)


def pause_stage(**kwargs: Any) -> StageInfo:
    return _protect().pause_stage(**kwargs)


def resume_stage(**kwargs: Any) -> StageInfo:
    return _protect().resume_stage(**kwargs)


def invoke(payload: Mapping[str, Any], **kwargs: Any) -> Response:
    return _protect().invoke(payload, **kwargs)
