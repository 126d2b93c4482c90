"""Checked stages to artifacts: canonical, content-hashed JSON in the runtime's schema.

The build path writes canonical JSON straight from checked data rather than validating
~50k nested pydantic models per 10k rulesets; the runtime validates every artifact against
those models (and its digest) when it loads one, and the test suite validates every compiled
artifact against both the models and the published JSON Schema.
"""

from __future__ import annotations

from typing import Any

from stageguard.compiler.checker import CheckedStage
from stageguard.runtime import package_version
from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.model import FORMAT, FORMAT_VERSION, ActionType

compiler_version = package_version


def document(stage: CheckedStage) -> dict[str, Any]:
    """The artifact as JSON-ready data, without version and digest. Enum members are str
    subclasses, so they serialise as their values."""
    rulesets = []
    locations = []
    override = ActionType.OVERRIDE
    for rs in stage.rulesets:
        rulesets.append({
            "name": rs.name,
            "description": rs.description,
            "rules": [
                {"metric": r.metric, "operator": r.operator,
                 "target_value": list(r.target) if type(r.target) is tuple else r.target}
                for r in rs.rules
            ],
            "action": {
                "type": rs.action,
                "choices": list(rs.choices) if rs.action is override else None,  # type: ignore[arg-type]
                "subscriptions": [{"url": s.url, "statuses": list(s.statuses)}
                                  for s in rs.subscriptions],
            },
        })
        locations.append({"ruleset": [rs.span.line, rs.span.column],
                          "rules": [[r.span.line, r.span.column] for r in rs.rules]})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "project": stage.project,
        "stage": {"name": stage.name, "type": stage.type, "description": stage.description,
                  "fail_mode": stage.fail_mode,
                  **({"id": stage.id} if stage.id is not None else {})},
        "compiler": {"name": "stageguard", "version": compiler_version()},
        "metrics": [m.model_dump(mode="json") for m in stage.metrics],
        "rulesets": rulesets,
        "source_map": {"file": stage.span.file, "stage": [stage.span.line, stage.span.column],
                       "rulesets": locations},
    }


def compile_stage(stage: CheckedStage) -> ArtifactDocument:
    return ArtifactDocument.from_document(document(stage))
