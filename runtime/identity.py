"""Stage and project identity: stable ids, and finding a served stage by name or by id.

Ids are uuid5 values of the names, so every runtime and server over the same registry gives
the same ones. One lookup serves the runtime's API and the service's paths alike.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterable, Mapping
from functools import cache

from stageguard.runtime.errors import InvalidRequest, StageNotFound

_STAGE_NAMESPACE = uuid.UUID("6f1d2c8e-5b1a-4c3e-9a57-2f0c1e7d9b44")
Key = tuple[str, str]


def _named_id(name: str) -> uuid.UUID:
    # A uuid5 of the name with the version bits set to 4: galileo-core types stage and
    # project ids as UUID4, and Galileo users keep ids in configuration, so an id must pass
    # that type and stay the same for a name on every runtime, replica and restart.
    return uuid.UUID(bytes=uuid.uuid5(_STAGE_NAMESPACE, name).bytes, version=4)


# Trace ids are random UUID4s. One per decision: `uuid.uuid4()` reads the kernel's random
# source each time, a quarter of a decision's cost; ids need to be unique, not secret, so a
# generator seeded once from it (and again in every forked child, or workers would repeat
# each other's ids) gives 122 random bits for a fraction of that.
_trace_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _trace_random.seed(os.urandom(32)))
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)


def trace_id() -> str:
    """A new random UUID4, as text."""
    h = ((_trace_random.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stage_id(project: str, name: str) -> str:
    """Stable id of a stage: the same project and name give the same id everywhere."""
    return str(_named_id(f"{project}/{name}"))


@cache  # asked per request by the service; one entry per project served
def project_id(project: str) -> str:
    """Stable id of a project (Galileo addresses projects by id); never equal to a stage id,
    since project names hold no `/`."""
    return str(_named_id(project))


def legacy_id(project: str, name: str | None = None) -> str:
    """The id stageguard gave before ids were UUID4-shaped (a plain uuid5), still accepted
    wherever an id is, so ids kept from earlier releases keep working."""
    return str(uuid.uuid5(_STAGE_NAMESPACE, project if name is None else f"{project}/{name}"))


UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def uuid4_text(text: str) -> str | None:
    """`text` as a canonical UUID4 (lowercase, hyphenated), or None when it is not one."""
    try:
        value = uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return None
    return str(value) if value.version == 4 and value.variant == uuid.RFC_4122 else None


class StageKeys:
    """Stages (project, name) indexed by id and by name: what every lookup below reads. The
    runtime's snapshot, the client's listing and the registry's index each build one."""

    __slots__ = ("ids", "kept", "keys", "names")

    def __init__(self, keys: Iterable[Key], kept: Mapping[Key, str] | None = None) -> None:
        """`kept`: the stages whose id is not derived from their name (an id kept from
        Galileo, `id "…"` in source); such a stage answers to it, and to nothing else."""
        self.keys = frozenset(keys)
        self.kept = dict(kept or {})
        names: dict[str, list[Key]] = {}
        for key in sorted(self.keys):
            names.setdefault(key[1], []).append(key)
        self.names = {n: tuple(v) for n, v in names.items()}
        self.ids: dict[str, Key] = {}
        for k in sorted(self.keys):
            if k in self.kept:
                self.ids.setdefault(self.kept[k], k)  # two claims: the first key keeps it
            else:
                self.ids.setdefault(stage_id(*k), k)
                self.ids.setdefault(legacy_id(*k), k)

    def id_of(self, key: Key) -> str:
        return self.kept.get(key) or stage_id(*key)

    def projects(self) -> set[str]:
        return {project for project, _ in self.keys}


def find_stage(stages: StageKeys, project: str | None, stage: str | None,
               stage_ref: str | None) -> Key:
    """The stage an API call names: by id, or by name (with its project when the name is in
    more than one). A project with a name is taken as given: whether the stage exists there
    is for the caller to find out."""
    if stage_ref is not None:
        key = stages.ids.get(str(stage_ref))
        if key is None:
            raise StageNotFound(f"no stage with id {stage_ref}")
        return key
    if stage is None:
        raise InvalidRequest("name a stage (stage_name or stage_id)")
    if project is not None:
        return (project, stage)
    keys = stages.names.get(stage, ())
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise StageNotFound(f"no stage named {stage!r}")
    raise InvalidRequest(f"stage name {stage!r} exists in projects "
                         f"{', '.join(k[0] for k in keys)}; say which project")


def resolve_project(stages: StageKeys, ref: str) -> str:
    """A project by name or by id (a name nothing serves yet is returned as it is; an id
    must be one served)."""
    for project in stages.projects():
        if ref in (project, project_id(project), legacy_id(project)):
            return project
    try:
        uuid.UUID(ref)
    except ValueError:
        return ref
    raise StageNotFound(f"no project with id {ref}")


def resolve_stage(stages: StageKeys, project_ref: str, stage_ref: str) -> Key:
    """A stage by project (name or id) and stage (name or id), as a url names it."""
    project = resolve_project(stages, project_ref)
    key = (project, stage_ref)
    if key not in stages.keys:
        by_id = stages.ids.get(stage_ref)
        if by_id is None or by_id[0] != project:
            raise StageNotFound(f"no stage {stage_ref!r} in project {project!r}")
        key = by_id
    return key
