"""Checked stages to artifacts: the runtime's pydantic models, canonical and content-hashed."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from stageguard.compiler.checker import CheckedStage
from stageguard.runtime.canonical import content_digest
from stageguard.runtime.model import FORMAT, FORMAT_VERSION, ActionType, Artifact


@cache
def compiler_version() -> str:
    try:
        return version("stageguard")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def _loc(span: Any) -> dict[str, Any]:
    return {"file": span.file, "line": span.line, "column": span.column}


def document(stage: CheckedStage) -> dict[str, Any]:
    """The artifact as JSON-ready data, without version and digest."""
    rulesets = []
    locations = []
    for rs in stage.rulesets:
        rulesets.append({
            "name": rs.name,
            "description": rs.description,
            "rules": [
                {"metric": r.metric, "operator": r.operator.value,
                 "target_value": list(r.target) if isinstance(r.target, tuple) else r.target}
                for r in rs.rules
            ],
            "action": {
                "type": rs.action.value,
                "choices": list(rs.choices) if rs.action is ActionType.OVERRIDE else None,
                "subscriptions": [
                    {"url": s.url, "statuses": [x.value for x in s.statuses]}
                    for s in rs.subscriptions
                ],
            },
        })
        locations.append({"ruleset": _loc(rs.span), "rules": [_loc(r.span) for r in rs.rules]})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "project": stage.project,
        "stage": {"name": stage.name, "type": stage.type.value,
                  "description": stage.description, "fail_mode": stage.fail_mode.value},
        "compiler": {"name": "stageguard", "version": compiler_version()},
        "metrics": [m.model_dump(mode="json") for m in stage.metrics],
        "rulesets": rulesets,
        "source_map": {"stage": _loc(stage.span), "rulesets": locations},
    }


def compile_stage(stage: CheckedStage, version: int = 1) -> Artifact:
    """The artifact of a checked stage at `version` (the registry decides the real number)."""
    doc = document(stage)
    doc["digest"] = content_digest(doc)
    doc["version"] = version
    return Artifact.model_validate(doc)
