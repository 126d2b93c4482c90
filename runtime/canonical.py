"""Canonical JSON and content digests for artifacts.

Canonical form: keys sorted, no insignificant white space, UTF-8 (no ASCII escaping), floats
in Python's shortest round-trip notation (identical on every IEEE-754 platform), NaN and
infinities refused. Two semantically equal stages therefore hash equally on any machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stageguard.runtime.model import DIGEST_EXCLUDED, Artifact


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def artifact_bytes(artifact: Artifact) -> bytes:
    """The exact bytes written for an artifact file (canonical JSON plus a final newline)."""
    return (dumps(artifact.model_dump(mode="json")) + "\n").encode("utf-8")


def content_digest(document: dict[str, Any]) -> str:
    """sha256 of what the artifact decides: everything but version and build metadata."""
    content = {k: v for k, v in document.items() if k not in DIGEST_EXCLUDED}
    return "sha256:" + hashlib.sha256(dumps(content).encode("utf-8")).hexdigest()
