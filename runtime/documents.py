"""The artifact document of a stage built through the API (created, updated, or a local
stage with an invocation's rulesets), in one place."""

from __future__ import annotations

from collections.abc import Sequence

from stageguard.runtime import package_version
from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.model import (
    FORMAT,
    FORMAT_VERSION,
    Artifact,
    MetricSpec,
    RulesetSpec,
    StageSpec,
    StageType,
)


def stage_metrics(rulesets: Sequence[RulesetSpec], kind: StageType,
                   declared: Sequence[MetricSpec]) -> list[MetricSpec]:
    """The catalog entries an artifact carries: the metrics its rules use, and for a local
    stage every declared one (its invocations may use any)."""
    catalog = {**BUILTIN_METRICS, **{m.name: m for m in declared}}
    names = {r.metric for rs in rulesets for r in rs.rules}
    if kind is StageType.LOCAL:
        names |= {m.name for m in declared if not m.builtin}
    return [catalog[n] for n in sorted(names)]


def new_document(project: str, stage: StageSpec, rulesets: Sequence[RulesetSpec],
                  metrics: Sequence[MetricSpec]) -> ArtifactDocument:
    return ArtifactDocument.from_document({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "project": project,
        "stage": stage.model_dump(mode="json"),
        "compiler": {"name": "stageguard", "version": package_version()},
        "metrics": [m.model_dump(mode="json") for m in sorted(metrics, key=lambda m: m.name)],
        "rulesets": [r.model_dump(mode="json") for r in rulesets],
        "source_map": None,
    })


def document(base: Artifact, rulesets: Sequence[RulesetSpec]) -> ArtifactDocument:
    """`base`'s stage with other rulesets (a central update, or a local invocation's); such
    rulesets come from the API, so there is no source map to carry over."""
    return new_document(base.project, base.stage, rulesets,
                         stage_metrics(rulesets, base.stage.type, base.metrics))
