"""One conformance suite over every registry store (runtime/store.py): the directory
registry and the PostgreSQL store (against a real server the suite starts)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime import registry as registry_module
from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.registry import (
    Registry,
    RevisionConflict,
    StageExists,
    VersionNotFound,
)
from stageguard.runtime.store import RegistryStore


def _postgres(request: pytest.FixtureRequest, root: Path) -> RegistryStore:
    from stageguard.runtime.postgres import PostgresRegistry

    server = request.getfixturevalue("postgres")
    store = PostgresRegistry(server.new_database())
    store.migrate()
    request.addfinalizer(store.close)
    return store


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], RegistryStore]] = {
    "directory": lambda request, root: Registry(root),
    "postgresql": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryStore:
    return BACKENDS[request.param](request, tmp_path / "store")


def doc(threshold: str, stage: str = "s") -> ArtifactDocument:
    result = compile_text(f"project p\nstage {stage} {{\n  ruleset r {{\n"
                          f"    when output_toxicity > {threshold}\n  }}\n}}\n", "p.sg")
    assert result.ok
    (artifact,) = result.artifacts
    return artifact


def test_an_empty_store_is_at_revision_zero(store: RegistryStore) -> None:
    assert store.revision() == 0 and store.read_index().projects == {}
    assert store.events_since(0) == []


def test_each_commit_is_one_revision_with_its_events(store: RegistryStore) -> None:
    (first,) = store.publish([doc("0.5")])
    assert (first.version, first.created, store.revision()) == (1, True, 1)
    (same,) = store.publish([doc("0.5")])
    assert (same.version, same.created, store.revision()) == (1, False, 1)  # no change
    store.publish([doc("0.6"), doc("0.1", stage="t")])
    assert store.revision() == 2
    events = store.events_since(0)
    assert events is not None
    assert [(e.revision, e.kind, e.stage, e.version) for e in events] == [
        (1, "published", "s", 1), (2, "published", "s", 2), (2, "published", "t", 1)]
    assert [e.revision for e in store.events_since(1) or []] == [2, 2]
    assert store.events_since(2) == []


def test_versions_load_as_published_and_stay(store: RegistryStore) -> None:
    store.publish([doc("0.5")])
    entry = store.stage_entry("p", "s")
    assert entry is not None
    v1 = store.read_bytes(entry.versions[0])
    store.publish([doc("0.9")])
    entry = store.stage_entry("p", "s")
    assert entry is not None and [v.version for v in entry.versions] == [1, 2]
    assert store.read_bytes(entry.versions[0]) == v1  # never rewritten
    assert store.load("p", "s").version == 2
    assert store.load("p", "s", 1).rulesets[0].rules[0].target_value == 0.5
    with pytest.raises(VersionNotFound):
        store.load("p", "s", 3)
    with pytest.raises(VersionNotFound):
        store.load("p", "ghost")
    assert store.verify() == []


def test_a_stale_conditional_write_changes_nothing(store: RegistryStore) -> None:
    store.publish([doc("0.5")])
    read = store.revision()
    store.publish([doc("0.6")])  # someone else, meanwhile
    before = store.read_index()
    with pytest.raises(RevisionConflict, match=f"not {read}"):
        store.publish([doc("0.7")], expected_revision=read)
    with pytest.raises(RevisionConflict):
        store.set_paused("p", "s", True, expected_revision=read)
    assert store.read_index() == before
    (ok,) = store.publish([doc("0.7")], expected_revision=store.revision())
    assert ok.version == 3


def test_racing_conditional_writers_one_wins(store: RegistryStore) -> None:
    store.publish([doc("0.5")])
    read = store.revision()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def writer(threshold: str) -> None:
        barrier.wait()
        try:
            store.publish([doc(threshold)], expected_revision=read)
            outcomes.append("published")
        except RevisionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("0.1", "0.2", "0.3", "0.4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["published"]
    assert store.revision() == read + 1


def test_pause_and_resume_are_revisions_too(store: RegistryStore) -> None:
    store.publish([doc("0.5")])
    assert store.set_paused("p", "s", True).paused
    store.set_paused("p", "s", True)  # already paused: nothing to commit
    assert not store.set_paused("p", "s", False).paused
    assert store.revision() == 3
    assert [e.kind for e in store.events_since(1) or []] == ["paused", "resumed"]
    with pytest.raises(VersionNotFound):
        store.set_paused("p", "ghost", True)


def test_create_only_and_reuse_any_version(store: RegistryStore) -> None:
    store.publish([doc("0.5")], create_only=True, paused=True)
    entry = store.stage_entry("p", "s")
    assert entry is not None and entry.paused
    with pytest.raises(StageExists):
        store.publish([doc("0.6")], create_only=True)
    store.publish([doc("0.6")])
    (again,) = store.publish([doc("0.5")], reuse_any_version=True)
    assert (again.version, again.created) == (1, False)


def test_events_too_old_to_be_kept_say_so(store: RegistryStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not isinstance(store, Registry):
        pytest.skip("this store keeps every event (an append-only log)")
    monkeypatch.setattr(registry_module, "EVENTS_KEPT", 2)
    for i in range(5):
        store.publish([doc(f"0.{i + 1}")])
    assert store.events_since(0) is None  # revisions 1-3 are gone: reload everything
    assert [e.revision for e in store.events_since(3) or []] == [4, 5]


# ---- what serves: candidates, promotion, rollback (each one event) ----------------------------

def test_a_version_published_without_activating_waits_as_a_candidate(
        store: RegistryStore) -> None:
    from stageguard.runtime.registry import Candidate, ServingChange

    store.publish([doc("0.5")])
    store.publish([doc("0.6")], activate=False)
    entry = store.stage_entry("p", "s")
    assert entry is not None and entry.serving is not None
    assert (entry.latest.version, entry.serving.version) == (2, 1)  # type: ignore[union-attr]
    rollout = Candidate(version=2, mode="rollout", percent=10, key="user")
    store.set_serving("p", "s", ServingChange("rollout", rollout))
    assert store.stage_entry("p", "s").candidate == rollout  # type: ignore[union-attr]
    before = store.revision()
    store.set_serving("p", "s", ServingChange("rollout", rollout))  # the same: no event
    assert store.revision() == before
    store.set_serving("p", "s", ServingChange("promoted"))
    entry = store.stage_entry("p", "s")
    assert entry.candidate is None and entry.serving.version == 2  # type: ignore[union-attr]
    store.set_serving("p", "s", ServingChange("rolled_back", version=1))
    entry = store.stage_entry("p", "s")
    assert entry.serving.version == 1 and [v.version for v in entry.versions] == [1, 2]  # type: ignore[union-attr]
    store.publish([doc("0.7")])  # a publish that activates serves its version
    assert store.stage_entry("p", "s").serving.version == 3  # type: ignore[union-attr]
    kinds = [(e.kind, e.version, e.note) for e in store.events_since(0) or []]
    assert kinds == [("published", 1, None), ("published", 2, "not activated"),
                     ("rollout", 2, "v2 for 10% by metadata.user"), ("promoted", 2,
                     "v2 for 10% by metadata.user"), ("rolled_back", 1, None),
                     ("published", 3, None)]


def test_a_candidate_must_be_a_version_of_a_central_stage(store: RegistryStore) -> None:
    from stageguard.runtime.registry import Candidate, RegistryError, ServingChange

    store.publish([doc("0.5")])
    before = store.revision()
    with pytest.raises(VersionNotFound):
        store.set_serving("p", "s", ServingChange("shadow", Candidate(version=7,
                                                                      mode="shadow")))
    with pytest.raises(RegistryError, match="already serves v1"):
        store.set_serving("p", "s", ServingChange("shadow", Candidate(version=1,
                                                                      mode="shadow")))
    store.publish([doc("0.6")], activate=False)
    with pytest.raises(RegistryError, match="metadata field"):
        store.set_serving("p", "s", ServingChange("rollout", Candidate(
            version=2, mode="rollout", percent=5)))
    with pytest.raises(RegistryError, match="no candidate"):
        store.set_serving("p", "s", ServingChange("promoted"))
    with pytest.raises(VersionNotFound):
        store.set_serving("p", "s", ServingChange("rolled_back", version=9))
    with pytest.raises(VersionNotFound):
        store.set_serving("p", "nope", ServingChange("cleared"))
    assert store.revision() == before + 1  # only the publish
    local = compile_text("project p\nstage loc {\n  type local\n}\n", "l.sg").artifacts
    store.publish(local)
    with pytest.raises(RegistryError, match="local stage"):
        store.set_serving("p", "loc", ServingChange("shadow", Candidate(version=1,
                                                                        mode="shadow")))


def test_serving_changes_are_conditional_too(store: RegistryStore) -> None:
    from stageguard.runtime.registry import Candidate, ServingChange

    store.publish([doc("0.5")])
    store.publish([doc("0.6")], activate=False)
    read = store.revision()
    store.set_serving("p", "s", ServingChange("shadow", Candidate(version=2, mode="shadow")),
                      expected_revision=read)
    with pytest.raises(RevisionConflict):
        store.set_serving("p", "s", ServingChange("cleared"), expected_revision=read)
    assert store.stage_entry("p", "s").candidate is not None  # type: ignore[union-attr]
