"""Following a registry (runtime/follow.py): a reload reads what the events since the last
one name, not the whole registry, and falls back to a whole read when they are not kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime import registry as registry_module
from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Status
from stageguard.runtime.registry import Registry


class Watched(Registry):
    """The directory store, counting what a follower asks of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, Any]] = []

    def read_index(self) -> registry_module.Index:
        self.calls.append(("read_index", None))
        return super().read_index()

    def stage_entry(self, project: str, stage: str) -> registry_module.StageEntry | None:
        self.calls.append(("stage_entry", (project, stage)))
        return super().stage_entry(project, stage)


def _stages(threshold: str, names: list[str]) -> list[Any]:
    body = "".join(f"stage {n} {{\n  ruleset r {{\n    when output_toxicity > {threshold}\n"
                   "  }\n}\n" for n in names)
    result = compile_text("project p\n" + body, "p.sg")
    assert result.ok
    return list(result.artifacts)


PAYLOAD = {"output": "x", "metrics": {"output_toxicity": 0.7}}


def test_a_reload_reads_only_the_stages_that_changed(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(20)]
    writer = Registry(tmp_path)
    writer.publish(_stages("0.5", names))
    store = Watched(tmp_path)
    with Runtime(store, poll_interval=None) as rt:
        assert rt.invoke(PAYLOAD, "s3").status is Status.TRIGGERED
        store.calls.clear()
        writer.set_paused("p", "s3", True)
        writer.publish(_stages("0.9", ["s4"]))
        assert rt.refresh()
        assert sorted(store.calls) == [("stage_entry", ("p", "s3")),
                                       ("stage_entry", ("p", "s4"))]
        assert rt.invoke(PAYLOAD, "s3").status is Status.PAUSED
        assert rt.invoke(PAYLOAD, "s4").status is Status.NOT_TRIGGERED
        assert rt.invoke(PAYLOAD, "s5").status is Status.TRIGGERED
        assert rt.sync_status().revision == writer.revision() == 3


def test_events_no_longer_kept_mean_a_whole_read(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "EVENTS_KEPT", 2)
    writer = Registry(tmp_path)
    writer.publish(_stages("0.5", ["a", "b"]))
    store = Watched(tmp_path)
    with Runtime(store, poll_interval=None) as rt:
        for threshold in ("0.6", "0.65", "0.9"):
            writer.publish(_stages(threshold, ["a"]))
        store.calls.clear()
        assert rt.refresh()
        assert [name for name, _ in store.calls] == ["read_index"]
        assert rt.invoke(PAYLOAD, "a").status is Status.NOT_TRIGGERED
        assert rt.invoke(PAYLOAD, "b").status is Status.TRIGGERED
