from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.registry import Registry, RegistryError, load_artifact


def stage_text(threshold: str, name: str = "s") -> str:
    return (f"project p\nstage {name} {{\n  ruleset r {{\n    when output_toxicity > {threshold}"
            "\n  }\n}\n")


def arts(text: str):
    result = compile_text(text, "p.sg")
    assert result.ok
    return result.artifacts


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_first_build_writes_v1_and_the_index(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    (pub,) = reg.publish(arts(stage_text("0.5")))
    assert (pub.version, pub.created) == (1, True)
    art = load_artifact(tmp_path / "reg" / "p" / "s" / "v1.json")
    assert art.version == 1
    index = reg.read_index()
    assert [v.version for v in index.projects["p"]["s"].versions] == [1]


def test_unchanged_build_is_a_no_op(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish(arts(stage_text("0.5")))
    before = snapshot(tmp_path / "reg")
    (pub,) = reg.publish(arts("# reformatted\n" + stage_text("0.50")))
    assert (pub.version, pub.created) == (1, False)
    assert snapshot(tmp_path / "reg") == before


def test_changed_stage_gets_next_version_and_old_versions_stay_byte_identical(
        tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish(arts(stage_text("0.5")))
    v1 = tmp_path / "reg/p/s/v1.json"
    v1_bytes, v1_stat = v1.read_bytes(), v1.stat()
    (pub,) = reg.publish(arts(stage_text("0.7")))
    assert (pub.version, pub.created) == (2, True)
    assert v1.read_bytes() == v1_bytes and v1.stat().st_mtime_ns == v1_stat.st_mtime_ns
    assert reg.load("p", "s").version == 2
    assert reg.load("p", "s", 1).rulesets[0].rules[0].target_value == 0.5
    with pytest.raises(RegistryError, match="no version 9"):
        reg.load("p", "s", 9)
    # Going back to old content is a change too: it becomes v3, history is never rewritten.
    (pub,) = reg.publish(arts(stage_text("0.5")))
    assert pub.version == 3


def test_versioned_file_matches_compiled_bytes_apart_from_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    (art,) = arts(stage_text("0.5"))
    reg.publish([art])
    assert (tmp_path / "reg/p/s/v1.json").read_bytes() == art.to_bytes(1)
    # A validated model publishes identically (e.g. from the management API).
    other = Registry(tmp_path / "reg2")
    other.publish([art.to_artifact()])
    assert (tmp_path / "reg2/p/s/v1.json").read_bytes() == art.to_bytes(1)


def test_failed_publish_leaves_registry_exactly_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.publish(arts(stage_text("0.5", "a") + stage_text("0.5", "b").replace("project p\n", "")))
    # A directory where stage b's next version file must go makes its write fail after
    # stage a's new version file was already written.
    (root / "p" / "b" / "v2.json").mkdir()
    before = snapshot(root)
    changed = arts(stage_text("0.6", "a") + stage_text("0.6", "b").replace("project p\n", ""))
    with pytest.raises(RegistryError, match="nothing was published"):
        reg.publish(changed)
    assert snapshot(root) == before
    assert not (root / "p" / "a" / "v2.json").exists()


def test_directory_that_is_not_a_registry_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not a stageguard registry"):
        Registry(tmp_path).publish(arts(stage_text("0.5")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_corrupt_index_is_reported_with_its_path(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish(arts(stage_text("0.5")))
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"index\.json"):
        reg.read_index()


def _racer(root: str, threshold: str, barrier) -> None:
    barrier.wait()
    Registry(root).publish(arts(stage_text(threshold)))


def test_racing_builds_serialise_and_lose_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "reg")
    Registry(root).publish(arts(stage_text("0.1")))
    thresholds = ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(thresholds))
    procs = [ctx.Process(target=_racer, args=(root, t, barrier)) for t in thresholds]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert json.loads((Path(root) / "index.json").read_text())["revision"] == 7
    versions = json.loads((Path(root) / "p/s/stage.json").read_text())["entry"]["versions"]
    assert [v["version"] for v in versions] == list(range(1, len(thresholds) + 2))
    seen = set()
    for v in versions:
        art = load_artifact(Path(root) / v["file"])
        assert art.version == v["version"] and art.digest == v["digest"]
        seen.add(art.rulesets[0].rules[0].target_value)
    assert seen == {0.1, *(float(t) for t in thresholds)}
    leftovers = [p for p in Path(root).rglob("*.tmp")]
    assert leftovers == []


def test_the_layout_holds_data_and_the_lock_only(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    reg.publish(arts(stage_text("0.5")))
    assert sorted(os.listdir(tmp_path / "r")) == [".journal", ".lock", "index.json", "p"]
    assert sorted(os.listdir(tmp_path / "r" / "p" / "s")) == ["stage.json", "v1.json"]
    assert os.listdir(tmp_path / "r" / ".journal") == ["1.json"]


def test_project_of_a_stage_name(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    for project in ("a", "b"):
        result = compile_text(f"project {project}\nstage shared {{\n  type local\n}}\n"
                              f"stage only_{project} {{\n  type local\n}}\n")
        assert result.ok
        reg.publish(result.artifacts)
    assert reg.project_of("only_b") == "b"
    with pytest.raises(RegistryError, match=r"projects a, b of registry .*PROJECT/STAGE"):
        reg.project_of("shared")
    with pytest.raises(RegistryError, match="no project"):
        reg.project_of("missing")


def test_names_that_are_not_one_path_part_never_become_paths(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    for project, stage in (("..", "s"), ("p", "../../x"), ("p", "a/b"), ("", "s"),
                           ("p", "a\\b"), ("p", ".x"), ("p", "x\x00")):
        with pytest.raises(RegistryError, match="not a name"):
            registry.artifact_path(project, stage, 1)
        with pytest.raises(RegistryError):
            registry.load(project, stage, 1)


# ---- a registry is believed only as far as its index vouches -------------------------------

def _two_versions(root: Path) -> Registry:
    reg = Registry(root)
    reg.publish(arts(stage_text("0.5")))
    reg.publish(arts(stage_text("0.9")))
    return reg


def _swap_in_v2_as_v1(root: Path) -> None:
    """What an attacker with write access to one file would do: v2's content, with the
    version field edited to 1, so the file is self-consistent."""
    v2 = json.loads((root / "p" / "s" / "v2.json").read_bytes())
    v2["version"] = 1
    (root / "p" / "s" / "v1.json").write_text(json.dumps(v2))


def test_a_pinned_version_is_checked_against_the_index(tmp_path: Path) -> None:
    from stageguard.runtime.engine import Runtime

    reg = _two_versions(tmp_path)
    _swap_in_v2_as_v1(tmp_path)
    with pytest.raises(RegistryError, match="does not match the index entry"):
        reg.load("p", "s", 1)
    with Runtime(tmp_path, deliver_webhooks=False) as rt, \
            pytest.raises(RegistryError, match="does not match the index entry"):
        rt.invoke({"input": "x", "metrics": {"input_toxicity": 0.7}}, "s", version=1)
    assert [p.split(":")[0] for p in reg.verify()] == [str(tmp_path / "p/s/v1.json")
                                                       + " does not match the index entry (index"]


def test_an_entry_out_of_order_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    reg = _two_versions(tmp_path)
    stage_file = tmp_path / "p" / "s" / "stage.json"
    held = json.loads(stage_file.read_text())
    entry = held["entry"]
    third = {**entry["versions"][1], "version": 3, "file": "p/s/v3.json"}
    entry["versions"] = [entry["versions"][0], third, entry["versions"][1]]
    stage_file.write_text(json.dumps(held))
    before = snapshot(tmp_path)
    with pytest.raises(RegistryError, match=r"stage\.json .*versions \[1, 3, 2\]"):
        reg.publish(arts(stage_text("0.3")))
    assert snapshot(tmp_path) == before
    entry["versions"] = [entry["versions"][0], {**third, "version": 2}]
    stage_file.write_text(json.dumps(held))
    with pytest.raises(RegistryError, match=r"names file 'p/s/v3\.json'"):
        reg.read_index()


def test_an_interrupt_after_the_index_landed_rolls_nothing_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stageguard.runtime import fsutil

    reg = Registry(tmp_path)
    reg.publish(arts(stage_text("0.5")))
    real = fsutil.fsync_dir

    def interrupted(path: Path) -> None:
        real(path)
        if path == tmp_path:  # the index was renamed into place: the publish has committed
            raise KeyboardInterrupt

    monkeypatch.setattr(fsutil, "fsync_dir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reg.publish(arts(stage_text("0.9")))
    monkeypatch.undo()
    assert [v.version for v in reg.stage_entry("p", "s").versions] == [1, 2]
    assert reg.verify() == []  # v2.json is there, as the index says


def test_inspect_verifies_every_version_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    _two_versions(tmp_path / "reg")
    cli = [sys.executable, "-m", "stageguard.cli", "inspect", str(tmp_path / "reg")]
    assert subprocess.run(cli, capture_output=True, text=True).returncode == 0
    _swap_in_v2_as_v1(tmp_path / "reg")
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 1 and "v1.json does not match the index entry" in done.stderr
    assert "Traceback" not in done.stderr


# ---- formats 1 and 2: one index.json holding everything, read as is, migrated on write -------

def _as_legacy(root: Path, version: int) -> dict[str, bytes]:
    """Rewrite a registry as stageguard wrote formats 1 and 2: one index of every stage
    (2 also with the revision and the kept events), no stage files, no journal."""
    reg = Registry(root)
    index = reg.read_index().model_dump(mode="json")
    events = [e.model_dump(mode="json") for e in reg.events_since(0) or []]
    for stage_file in root.rglob("stage.json"):
        stage_file.unlink()
    for record in (root / ".journal").iterdir():
        record.unlink()
    (root / ".journal").rmdir()
    index["format_version"] = version
    if version == 1:
        del index["revision"], index["events"]
    else:
        index["events"] = events
    (root / "index.json").write_text(json.dumps(index))
    return snapshot(root)


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_format_reads_as_it_is_and_the_first_write_migrates_it(
        tmp_path: Path, version: int) -> None:
    _two_versions(tmp_path)
    before = _as_legacy(tmp_path, version)
    reg = Registry(tmp_path)
    assert reg.format_version() == version
    assert reg.revision() == (0 if version == 1 else 2)
    assert [v.version for v in reg.stage_entry("p", "s").versions] == [1, 2]
    assert reg.load("p", "s", 1).rulesets[0].rules[0].target_value == 0.5
    assert [e.revision for e in reg.events_since(0) or []] == ([] if version == 1 else [1, 2])
    assert snapshot(tmp_path) == before  # reading writes nothing

    (pub,) = reg.publish(arts(stage_text("0.3")))
    assert (pub.version, pub.created) == (3, True)
    assert reg.format_version() == 3
    assert reg.revision() == (1 if version == 1 else 3)
    assert [v.version for v in reg.stage_entry("p", "s").versions] == [1, 2, 3]
    for name in ("p/s/v1.json", "p/s/v2.json"):  # every version stays, byte for byte
        assert (tmp_path / name).read_bytes() == before[name]
    if version == 2:  # the kept events survive the migration
        assert [e.revision for e in reg.events_since(0) or []] == [1, 2, 3]
    assert reg.verify() == []


def test_registry_migrate_brings_a_directory_to_the_current_format(tmp_path: Path) -> None:
    import subprocess
    import sys

    _two_versions(tmp_path / "reg")
    _as_legacy(tmp_path / "reg", 2)
    cli = [sys.executable, "-m", "stageguard.cli", "registry", "migrate", str(tmp_path / "reg")]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0 and "migrated from 2 to 3" in done.stdout, done.stderr
    assert Registry(tmp_path / "reg").format_version() == 3
    assert Registry(tmp_path / "reg").verify() == []
    again = subprocess.run(cli, capture_output=True, text=True)
    assert again.returncode == 0 and "already 3" in again.stdout
    missing = subprocess.run([*cli[:-1], str(tmp_path / "nowhere")], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "is not a registry" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_future_format_is_refused_with_a_reason(tmp_path: Path) -> None:
    reg = _two_versions(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "stageguard.registry",
                                                      "format_version": 4, "revision": 9}))
    with pytest.raises(RegistryError, match="version 4; this stageguard reads versions 1 to 3"):
        reg.read_index()


# ---- a commit interrupted after its index landed: readers and the next writer finish it ----

def test_a_commit_not_yet_copied_to_its_stage_file_reads_from_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _two_versions(tmp_path)
    real = Registry._copy_out
    monkeypatch.setattr(Registry, "_copy_out", lambda self, head: None)
    reg.set_paused("p", "s", True)
    monkeypatch.setattr(Registry, "_copy_out", real)
    held = json.loads((tmp_path / "p/s/stage.json").read_text())
    assert (held["revision"], held["entry"]["paused"]) == (2, False)  # not copied yet
    assert reg.stage_entry("p", "s").paused and reg.read_index().projects["p"]["s"].paused
    reg.publish(arts(stage_text("0.3")))  # the next writer copies it out first
    entry = reg.stage_entry("p", "s")
    assert entry.paused and [v.version for v in entry.versions] == [1, 2, 3]
    held = json.loads((tmp_path / "p/s/stage.json").read_text())
    assert (held["revision"], held["entry"]["paused"]) == (4, True)


def test_publishing_reads_only_the_stages_it_changes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path)
    text = "project p\n" + "".join(stage_text("0.5", f"s{i}").replace("project p\n", "")
                                    for i in range(30))
    reg.publish(arts(text))
    reg.publish(arts(stage_text("0.9", "s0")))
    # A commit checks the previous commit's stages (finishing its copy if it was cut short)
    # and reads the stages it changes: never the rest of the registry.
    read: list[tuple[str, str]] = []
    real = Registry._stage_file

    def counting(self: Registry, project: str, stage: str):  # type: ignore[no-untyped-def]
        read.append((project, stage))
        return real(self, project, stage)

    monkeypatch.setattr(Registry, "_stage_file", counting)
    reg.publish(arts(stage_text("0.9", "s7")))
    reg.set_paused("p", "s3", True)
    assert set(read) == {("p", "s0"), ("p", "s7"), ("p", "s3")}


def test_registry_files_follow_the_umask_so_a_group_can_share_them(tmp_path: Path) -> None:
    """A CI user and the server user sharing a group must both read the registry: files get
    0666 less the umask, as `open` would give them, not a temporary file's 0600."""
    old = os.umask(0o002)
    try:
        reg = Registry(tmp_path / "reg")
        reg.publish(arts(stage_text("0.5")))
        reg.publish(arts(stage_text("0.6")))
    finally:
        os.umask(old)
    for name in ("index.json", "p/s/stage.json", "p/s/v1.json", "p/s/v2.json", ".journal/2.json"):
        assert (tmp_path / "reg" / name).stat().st_mode & 0o777 == 0o664, name
    (tmp_path / "reg" / "index.json").chmod(0o640)  # an operator's choice is kept
    Registry(tmp_path / "reg").set_paused("p", "s", True)
    assert (tmp_path / "reg" / "index.json").stat().st_mode & 0o777 == 0o640
