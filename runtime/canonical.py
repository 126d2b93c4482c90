"""Canonical JSON and content digests for artifacts.

Canonical form: keys sorted, no insignificant white space, UTF-8 (no ASCII escaping), floats
in Python's shortest round-trip notation (identical on every IEEE-754 platform), NaN and
infinities refused. Two semantically equal stages therefore hash equally on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stageguard.runtime.model import DIGEST_EXCLUDED, Artifact, StageType


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def join_object(parts: Mapping[str, str]) -> str:
    """A canonical JSON object from values that are already canonical JSON text; equal to
    `dumps` of the decoded object, without serialising any value twice."""
    return "{" + ",".join(f"{dumps(k)}:{parts[k]}" for k in sorted(parts)) + "}"


def artifact_bytes(artifact: Artifact) -> bytes:
    """The exact bytes written for an artifact file (canonical JSON plus a final newline)."""
    return (dumps(artifact.model_dump(mode="json")) + "\n").encode("utf-8")


def content_digest(document: Mapping[str, Any]) -> str:
    """sha256 of what the artifact decides: everything but version and build metadata."""
    content = {k: v for k, v in document.items() if k not in DIGEST_EXCLUDED}
    return "sha256:" + hashlib.sha256(dumps(content).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ArtifactDocument:
    """An artifact as canonical JSON, before the registry gives it a version.

    Holds each top-level field already serialised, so the digest and the file bytes share one
    serialisation of the (large) rulesets.
    """

    project: str
    stage: str
    stage_type: StageType
    digest: str
    parts: Mapping[str, str]  # every top-level field but "version", as canonical JSON

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ArtifactDocument:
        """`doc`: an artifact's JSON data without `version` and `digest`."""
        parts = {k: dumps(v) for k, v in doc.items() if k not in ("version", "digest")}
        content = {k: v for k, v in parts.items() if k not in DIGEST_EXCLUDED}
        digest = "sha256:" + hashlib.sha256(join_object(content).encode("utf-8")).hexdigest()
        parts["digest"] = dumps(digest)
        stage = doc["stage"]
        return cls(doc["project"], stage["name"], StageType(stage["type"]), digest, parts)

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> ArtifactDocument:
        return cls.from_document(artifact.model_dump(mode="json"))

    def to_bytes(self, version: int) -> bytes:
        return (join_object({**self.parts, "version": str(int(version))}) + "\n").encode("utf-8")

    def to_artifact(self, version: int = 1) -> Artifact:
        """The validated pydantic model (costly for big stages; the build path needs none)."""
        return Artifact.model_validate_json(self.to_bytes(version))
