"""Which requests a rollout's candidate serves: a deterministic split by a caller's key.

A request's key (the value of the metadata field the rollout names, a user or session id)
maps to a point in [0, 100) by sha256 over the stage and the key; the candidate serves the
points below its percent. So the same key always gets the same version on every replica and
after every restart (sticky), raising the percent only adds keys (no one who had the
candidate loses it), and the share of keys is the percent within sampling error. A request
without the key is served by the active version.
"""

from __future__ import annotations

import hashlib

_SPAN = float(2**64)


def bucket(project: str, stage: str, key: str) -> float:
    """The key's point in [0, 100) for this stage."""
    digest = hashlib.sha256(f"{project}/{stage}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SPAN * 100


def takes_candidate(project: str, stage: str, key: str, percent: float) -> bool:
    return bucket(project, stage, key) < percent
