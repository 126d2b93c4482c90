"""What a registry store is, to the runtime and the tools above it.

Two stores: the directory registry (`runtime/registry.py`, the embedded default) and the
PostgreSQL store (`runtime/postgres.py`, `postgresql://…`). Both pass
`tests/test_store_conformance.py`, one suite over every backend. Writes can be conditional
on the revision the writer read, so two writers that read the same state cannot both
publish over it; readers follow the revision and the events since the one they last saw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.model import Artifact
from stageguard.runtime.registry import (
    Event,
    Index,
    Published,
    Registry,
    ServingChange,
    StageEntry,
    VersionEntry,
)


class RegistryStore(Protocol):
    def read_index(self) -> Index:
        """Every project, stage and version, and the store's revision."""
        ...

    def stage_entry(self, project: str, stage: str) -> StageEntry | None: ...

    def load(self, project: str, stage: str, version: int | None = None) -> Artifact:
        """A version (the latest when None), checked against its index entry;
        VersionNotFound when there is none, RegistryError when it is damaged."""
        ...

    def load_entry(self, project: str, stage: str, entry: VersionEntry) -> Artifact: ...

    def read_bytes(self, entry: VersionEntry) -> bytes:
        """A version's artifact exactly as stored."""
        ...

    def publish(self, artifacts: Sequence[ArtifactDocument | Artifact], *,
                reuse_any_version: bool = False, create_only: bool = False,
                paused: bool | None = None, activate: bool = True,
                expected_revision: int | None = None) -> list[Published]:
        """All or nothing; RevisionConflict when `expected_revision` is stale."""
        ...

    def set_paused(self, project: str, stage: str, paused: bool, *,
                   expected_revision: int | None = None) -> StageEntry: ...

    def set_serving(self, project: str, stage: str, change: ServingChange, *,
                    expected_revision: int | None = None) -> StageEntry:
        """Shadow or roll out a candidate, clear or promote it, roll back: one event."""
        ...

    def signature(self) -> object:
        """A cheap token that changes whenever the store may have (a poll compares it)."""
        ...

    def describe(self, entry: VersionEntry) -> str:
        """Where a version lives, for messages and logs."""
        ...

    def revision(self) -> int: ...

    def events_since(self, revision: int) -> list[Event] | None:
        """The changes after `revision`, oldest first; None when no longer all kept."""
        ...

    def verify(self) -> list[str]:
        """Every version that is not what its entry says (empty when all are)."""
        ...

    def migrate(self) -> int:
        """Bring the store's layout or schema to what this stageguard writes; its version."""
        ...


def open_store(target: str | os.PathLike[str]) -> RegistryStore:
    """The store a registry argument names: a `postgresql://` url, else a directory."""
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        from stageguard.runtime.postgres import PostgresRegistry  # psycopg: the fleet extra

        return PostgresRegistry(text)
    return Registry(text)
