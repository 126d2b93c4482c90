"""Stage identity: one lookup by name or id, whatever holds the stage list."""

from __future__ import annotations

import pytest

from stageguard.runtime.errors import InvalidRequest, StageNotFound
from stageguard.runtime.identity import (
    StageKeys,
    find_stage,
    project_id,
    resolve_project,
    resolve_stage,
    stage_id,
)

KEYS = StageKeys([("shop", "guard"), ("bank", "guard"), ("bank", "chat")])


def test_ids_are_stable_and_distinct() -> None:
    assert stage_id("bank", "chat") == stage_id("bank", "chat")
    assert stage_id("bank", "chat") != stage_id("shop", "chat")
    assert project_id("bank") not in {stage_id(*k) for k in KEYS.keys}


def test_find_by_id_by_unique_name_and_with_project() -> None:
    assert find_stage(KEYS, None, None, stage_id("shop", "guard")) == ("shop", "guard")
    assert find_stage(KEYS, None, "chat", None) == ("bank", "chat")
    assert find_stage(KEYS, "shop", "guard", None) == ("shop", "guard")


def test_ambiguous_missing_and_unnamed_stages_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="projects bank, shop; say which project"):
        find_stage(KEYS, None, "guard", None)
    with pytest.raises(StageNotFound, match="no stage named 'nope'"):
        find_stage(KEYS, None, "nope", None)
    with pytest.raises(StageNotFound, match="no stage with id"):
        find_stage(KEYS, None, None, stage_id("shop", "nope"))
    with pytest.raises(InvalidRequest, match="name a stage"):
        find_stage(KEYS, None, None, None)


def test_urls_name_projects_and_stages_by_name_or_id() -> None:
    assert resolve_project(KEYS, project_id("bank")) == "bank"
    assert resolve_project(KEYS, "new_project") == "new_project"  # not served yet: as given
    with pytest.raises(StageNotFound):
        resolve_project(KEYS, project_id("elsewhere"))
    assert resolve_stage(KEYS, "bank", stage_id("bank", "chat")) == ("bank", "chat")
    assert resolve_stage(KEYS, project_id("shop"), "guard") == ("shop", "guard")
    with pytest.raises(StageNotFound):  # an id of another project's stage
        resolve_stage(KEYS, "shop", stage_id("bank", "chat"))


def test_ids_pass_galileo_cores_uuid4_type_and_old_ids_still_work() -> None:
    import uuid

    from pydantic import UUID4, TypeAdapter

    from stageguard.runtime.identity import legacy_id

    for value in (stage_id("bank", "chat"), project_id("bank")):
        assert uuid.UUID(value).version == 4
        TypeAdapter(UUID4).validate_python(value)  # what galileo-core's models declare
    old = legacy_id("bank", "chat")
    assert uuid.UUID(old).version == 5
    assert find_stage(KEYS, None, None, old) == ("bank", "chat")
    assert resolve_project(KEYS, legacy_id("bank")) == "bank"
