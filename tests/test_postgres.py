"""The PostgreSQL registry end to end, on a real server the suite starts: the CLI migrates
and builds into it, `stageguard serve` serves from it, and a pause made by another process
reaches the server. (The store's contract is tests/test_store_conformance.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Status
from tests.server_helpers import ADMIN, serve_process

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stageguard.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_build_serve_and_pause_through_postgresql(postgres: object, tmp_path: Path) -> None:
    url = postgres.new_database()  # type: ignore[attr-defined]
    before = _cli("build", str(ROOT / "policies"), "--registry", url)
    assert before.returncode == 1 and "no stageguard schema" in before.stderr
    migrated = _cli("registry", "migrate", url)
    assert migrated.returncode == 0, migrated.stderr
    assert _cli("registry", "migrate", url).returncode == 0  # again: nothing to do
    built = _cli("build", str(ROOT / "policies"), "--registry", url)
    assert built.returncode == 0, built.stderr
    assert "v1 (new)" in built.stdout
    with Runtime(url) as rt:
        stage = rt.stages()[0]
    with serve_process(url, "--poll-interval", "0.2") as (served, _):
        http = httpx.Client(base_url=served, headers={"Authorization": f"Bearer {ADMIN}"})
        body = {"payload": {"input": "hello", "output": "hello"},
                "project_name": stage.project, "stage_name": stage.name}
        first = http.post("/protect/invoke", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["status"] != "PAUSED"
        # The kill switch, pulled by another process on the same database.
        with Runtime(url) as other:
            other.pause_stage(project=stage.project, stage_name=stage.name)
        deadline = time.monotonic() + 10
        while http.post("/protect/invoke", json=body).json()["status"] != "PAUSED":
            assert time.monotonic() < deadline, "the pause did not reach the server"
            time.sleep(0.05)
        http.close()
    with Runtime(url) as rt:
        r = rt.invoke({"output": "x"}, stage.name, project=stage.project)
        assert r.status is Status.PAUSED


def test_migrate_refuses_a_directory(tmp_path: Path) -> None:
    done = _cli("registry", "migrate", str(tmp_path))
    assert done.returncode == 2 and "postgresql://" in done.stderr


@pytest.mark.parametrize("bad", ["postgresql://nobody@127.0.0.1:1/none"])
def test_an_unreachable_database_is_an_error_not_a_traceback(bad: str) -> None:
    done = _cli("build", str(ROOT / "policies"), "--registry", bad)
    assert done.returncode == 1 and "cannot connect" in done.stderr
    assert "Traceback" not in done.stderr


# ---- replicas -----------------------------------------------------------------------------

def _published(url: str) -> tuple[str, str]:
    from stageguard.runtime.postgres import PostgresRegistry

    store = PostgresRegistry(url)
    store.migrate()
    done = subprocess.run([sys.executable, "-m", "stageguard.cli", "build",
                           str(ROOT / "policies"), "--registry", url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    key = sorted((p, s) for p, stages in store.read_index().projects.items() for s in stages)[0]
    store.close()
    return key


def version(n: int) -> list[Any]:
    """Stage f/s whose version n answers "vN" when it triggers."""
    from stageguard.compiler.pipeline import compile_text

    return list(compile_text(f'project f\nstage s {{\n  ruleset r {{\n    when '
                             f'output_toxicity > 0.5\n    override {{\n      choice '
                             f'"v{n}"\n    }}\n  }}\n}}\n', "s.sg").artifacts)


def _until(predicate: object, seconds: float) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, "not within the time"
        time.sleep(0.01)
    return time.monotonic() - started


def test_notify_reaches_every_replica_before_its_poll(postgres: object) -> None:
    url = postgres.new_database()  # type: ignore[attr-defined]
    project, stage = _published(url)
    # Replicas that poll only every 30 s: only the NOTIFY can wake them in time.
    replicas = [Runtime(url, poll_interval=30.0) for _ in range(3)]
    try:
        time.sleep(0.3)  # the listeners are up
        with Runtime(url, poll_interval=None) as admin:
            admin.pause_stage(project=project, stage_name=stage)
        took = _until(lambda: all(
            r.invoke({"output": "x"}, stage, project=project).status is Status.PAUSED
            for r in replicas), 5.0)
        assert took < 5.0
        assert {r.sync_status().revision for r in replicas} == {2}
    finally:
        for r in replicas:
            r.close()


@pytest.mark.parametrize("kind", ["postgresql", "directory"])
def test_a_pause_and_a_version_reach_three_replica_processes(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    """Three `serve` processes on one registry; another process pauses the stage, resumes
    it and publishes a version: each replica answers with every change. PostgreSQL replicas
    poll every 30 s (only the NOTIFY is in time); directory replicas every 0.3 s."""
    from stageguard.runtime.store import open_store

    target = (request.getfixturevalue("postgres").new_database() if kind == "postgresql"
              else str(tmp_path / "reg"))
    store = open_store(target)
    store.migrate()

    store.publish(version(1))
    poll = "30" if kind == "postgresql" else "0.3"
    quiet = ("--poll-interval", poll, "--no-access-log", "--log-level", "warning")
    body = {"payload": {"output": "x", "metrics": {"output_toxicity": 0.9}},
            "project_name": "f", "stage_name": "s"}
    with serve_process(target, *quiet) as (a, _), serve_process(target, *quiet) as (b, _), \
            serve_process(target, *quiet) as (c, _):
        clients = [httpx.Client(base_url=u, timeout=10,
                                headers={"Authorization": f"Bearer {ADMIN}"})
                   for u in (a, b, c)]

        def answers() -> list[tuple[str, str]]:
            return [(r["status"].lower(), r.get("text") or "") for r in
                    (cl.post("/protect/invoke", json=body).json() for cl in clients)]

        time.sleep(0.5)  # the listeners are up
        assert answers() == [("triggered", "v1")] * 3
        for change, want in ((lambda: store.set_paused("f", "s", True), ("paused", "x")),
                             (lambda: store.set_paused("f", "s", False), ("triggered", "v1")),
                             (lambda: store.publish(version(2)),
                              ("triggered", "v2"))):
            change()
            _until(lambda want=want: answers() == [want] * 3, 5.0)
        for cl in clients:
            cl.close()
    close = getattr(store, "close", None)
    if callable(close):
        close()


def test_a_dropped_listener_reconnects_and_catches_up(postgres: object) -> None:
    import psycopg

    url = postgres.new_database()  # type: ignore[attr-defined]
    project, stage = _published(url)
    with Runtime(url, poll_interval=0.5) as replica:
        time.sleep(0.3)
        with psycopg.connect(url, autocommit=True) as conn:  # drop every other session
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "datname = current_database() AND pid <> pg_backend_pid()")
        with Runtime(url, poll_interval=None) as admin:
            admin.pause_stage(project=project, stage_name=stage)
        _until(lambda: replica.invoke({"output": "x"}, stage, project=project).status
               is Status.PAUSED, 10.0)


def test_store_down_keeps_serving_and_converges_after(tmp_path: Path) -> None:
    from tests.postgres_helpers import running_postgres

    with running_postgres() as server:
        url = server.new_database()
        project, stage = _published(url)
        strict = Runtime(url, poll_interval=0.2, max_staleness=0.5, on_stale="fail_closed")
        with Runtime(url, poll_interval=0.2) as replica, strict:
            before = replica.invoke({"output": "x"}, stage, project=project)
            assert strict.invoke({"output": "x"}, stage, project=project).error is None
            server.stop()
            _until(lambda: replica.sync_status().error is not None, 10.0)
            during = replica.invoke({"output": "x"}, stage, project=project)
            assert during.status is before.status  # the last good snapshot still decides
            assert during.stage_metadata.stage_version == before.stage_metadata.stage_version
            first = replica.sync_status().staleness or 0.0
            time.sleep(0.3)
            assert (replica.sync_status().staleness or 0.0) > first  # staleness rises
            # Past its budget the fail-closed replica answers `error` and says why.
            _until(lambda: strict.invoke({"output": "x"}, stage, project=project).status
                   is Status.ERROR, 10.0)
            refused = strict.invoke({"output": "x"}, stage, project=project)
            assert "max_staleness" in (refused.error or "") and refused.text == "x"
            assert refused.to_dict()["error"] == refused.error
            server.start()
            with Runtime(url, poll_interval=None) as admin:
                admin.pause_stage(project=project, stage_name=stage)
            _until(lambda: replica.invoke({"output": "x"}, stage, project=project).status
                   is Status.PAUSED, 10.0)
            assert replica.sync_status().error is None
            _until(lambda: strict.invoke({"output": "x"}, stage, project=project).status
                   is Status.PAUSED, 10.0)  # back within budget: deciding again


# ---- writers ------------------------------------------------------------------------------

_WRITER = """
import sys
from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.postgres import PostgresRegistry
from stageguard.runtime.registry import RevisionConflict

url, who, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = PostgresRegistry(url, publisher=who)
won = 0
for i in range(rounds):
    text = (f"project p\\nstage s {{\\n  ruleset r {{\\n    when output_toxicity > 0.{i + 1}\\n"
            f"  }}\\n  description \\"{who} {i}\\"\\n}}\\n")
    (doc,) = compile_text(text, "p.sg").artifacts
    read = store.revision()
    try:
        store.publish([doc], expected_revision=read)
        won += 1
    except RevisionConflict:
        pass
print(won)
"""


def test_racing_writer_processes_lose_nothing_and_duplicate_nothing(postgres: object) -> None:
    from stageguard.runtime.postgres import PostgresRegistry

    url = postgres.new_database()  # type: ignore[attr-defined]
    store = PostgresRegistry(url)
    store.migrate()
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, url, f"w{n}", "15"],
                                stdout=subprocess.PIPE, text=True) for n in range(4)]
    wins = [int(w.communicate(timeout=120)[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    entry = store.stage_entry("p", "s")
    assert entry is not None
    # Every win is one version and one revision; no version number is missing or repeated.
    assert [v.version for v in entry.versions] == list(range(1, sum(wins) + 1))
    assert store.revision() == sum(wins) >= 15  # at least one writer wins each round
    events = store.events_since(0) or []
    assert [e.revision for e in events] == list(range(1, sum(wins) + 1))
    assert store.verify() == []
    store.close()


def test_a_writer_killed_mid_transaction_leaves_nothing_and_blocks_nobody(
        postgres: object) -> None:
    import signal

    from stageguard.runtime.postgres import PostgresRegistry

    url = postgres.new_database()  # type: ignore[attr-defined]
    store = PostgresRegistry(url)
    store.migrate()
    store.publish([_doc(0.5)])
    # A writer that took the commit lock and wrote half a publish, then died.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, psycopg\n"
        "conn = psycopg.connect(sys.argv[1])\n"
        "conn.execute(\"SELECT value FROM stageguard_meta WHERE key = 'revision' FOR UPDATE\")\n"
        "conn.execute(\"UPDATE stageguard_stages SET paused = true\")\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n"), url], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    entry = store.stage_entry("p", "s")
    assert entry is not None and not entry.paused and store.revision() == 1
    (published,) = store.publish([_doc(0.6)])  # the lock was released
    assert published.version == 2 and store.revision() == 2
    store.close()


def _doc(threshold: float) -> object:
    from stageguard.compiler.pipeline import compile_text

    (doc,) = compile_text(f"project p\nstage s {{\n  ruleset r {{\n    when output_toxicity > "
                          f"{threshold}\n  }}\n}}\n", "p.sg").artifacts
    return doc


def test_cold_start_with_the_store_down_serves_the_disk_cache(tmp_path: Path) -> None:
    from stageguard.runtime.engine import StageNotFound
    from tests.postgres_helpers import running_postgres

    cache = tmp_path / "cache"
    with running_postgres() as server:
        url = server.new_database()
        project, stage = _published(url)
        with Runtime(url, poll_interval=None, cache_dir=cache) as first:
            version = first.get_stage(project=project, stage_name=stage).version  # type: ignore[union-attr]
        server.stop()
        # A replica starting now cannot read the store: it serves what the cache holds.
        with Runtime(url, poll_interval=None, cache_dir=cache) as cold:
            r = cold.invoke({"output": "x"}, stage, project=project)
            assert r.stage_metadata.stage_version == version
            assert "index" in cold.load_errors and cold.sync_status().revision >= 1
        # A tampered cache is refused whole: nothing serves rather than something forged.
        path = cache / "snapshot.json"
        data = json.loads(path.read_text())
        assert '"paused":false' in data["index"]
        data["index"] = data["index"].replace('"paused":false', '"paused":true')
        path.write_text(json.dumps(data))
        with Runtime(url, poll_interval=None, cache_dir=cache) as refused:
            assert "cache" in refused.load_errors
            with pytest.raises(StageNotFound):
                refused.invoke({"output": "x"}, stage, project=project)
        server.start()


def test_soak_three_replicas_while_publishing_and_pausing(postgres: object) -> None:
    """3 `serve` replicas invoked without a pause for as long as 50 versions are published
    and 20 pauses/resumes happen (at least 500 invokes each): no 5xx, every answer is one
    version's own, and each replica's versions only move forward."""
    import threading

    from stageguard.compiler.pipeline import compile_text
    from stageguard.runtime.postgres import PostgresRegistry

    def version_doc(n: int) -> object:
        (doc,) = compile_text(f'project soak\nstage s {{\n  ruleset r {{\n    when '
                              f'output_toxicity > 0.5\n    override {{\n      choice "{n}"\n'
                              f'    }}\n  }}\n}}\n', "s.sg").artifacts
        return doc

    url = postgres.new_database()  # type: ignore[attr-defined]
    store = PostgresRegistry(url)
    store.migrate()
    store.publish([version_doc(1)])
    body = {"payload": {"output": "x", "metrics": {"output_toxicity": 0.9}},
            "project_name": "soak", "stage_name": "s"}
    problems: list[str] = []
    seen: list[list[int]] = [[], [], []]
    done = threading.Event()
    quiet = ("--poll-interval", "0.2", "--no-access-log", "--log-level", "warning")
    with serve_process(url, *quiet) as (a, _), \
            serve_process(url, *quiet) as (b, _), \
            serve_process(url, *quiet) as (c, _):

        def hammer(i: int, base: str, least: int) -> None:
            with httpx.Client(base_url=base, timeout=30,
                              headers={"Authorization": f"Bearer {ADMIN}"}) as http:
                while len(seen[i]) < least or not done.is_set():
                    try:
                        resp = http.post("/protect/invoke", json=body)
                    except httpx.HTTPError as exc:
                        problems.append(f"{base}: {exc!r}")
                        return
                    if resp.status_code >= 500:
                        problems.append(f"{base}: {resp.status_code}")
                        return
                    answer = resp.json()
                    if resp.status_code != 200:
                        problems.append(f"{base}: {resp.status_code} {answer}")
                        return
                    version = answer["stage_metadata"]["stage_version"]
                    if answer["status"] == "TRIGGERED" and answer["text"] != str(version):
                        problems.append(f"v{version} answered {answer['text']!r}")
                    seen[i].append(version)

        def publish() -> None:
            for n in range(2, 52):
                store.publish([version_doc(n)])
                if n % 5 == 0:  # 10 pauses and 10 resumes
                    store.set_paused("soak", "s", True)
                    store.set_paused("soak", "s", False)
                time.sleep(0.01)
            done.set()

        threads = [threading.Thread(target=hammer, args=(i, base, 500))
                   for i, base in enumerate((a, b, c))]
        writer = threading.Thread(target=publish)
        for t in (*threads, writer):
            t.start()
        for t in (*threads, writer):
            t.join(timeout=300)
    store.close()
    assert done.is_set() and not problems, problems[:5]
    assert min(len(s) for s in seen) >= 500
    for versions in seen:
        assert versions == sorted(versions)  # never an older version after a newer one
        assert len(set(versions)) > 1  # the versions did change under the load


def test_a_rollout_and_a_rollback_reach_replicas_through_notify(postgres: object) -> None:
    """Serving changes are registry events like a pause: replicas polling every 30 s follow
    a rollout, its promotion and a rollback at once."""
    from stageguard.runtime.postgres import PostgresRegistry
    from stageguard.runtime.rollout import takes_candidate

    url = postgres.new_database()  # type: ignore[attr-defined]
    store = PostgresRegistry(url)
    store.migrate()

    store.publish(version(1))
    store.publish(version(2), activate=False)
    payload = {"output": "x", "metrics": {"output_toxicity": 0.9}}
    users = [f"u{i}" for i in range(60)]
    replicas = [Runtime(url, poll_interval=30.0) for _ in range(2)]
    try:
        time.sleep(0.3)
        with Runtime(url, poll_interval=None) as admin:
            admin.rollout_stage(2, 50, "user", stage_name="s")
            want = {u: "v2" if takes_candidate("f", "s", u, 50) else "v1" for u in users}
            _until(lambda: all(r.invoke(payload, "s", metadata={"user": u}).text == v
                               for r in replicas for u, v in want.items()), 5.0)
            admin.promote_stage(stage_name="s")
            _until(lambda: all(r.invoke(payload, "s").text == "v2" for r in replicas), 5.0)
            admin.rollback_stage(1, stage_name="s")
            _until(lambda: all(r.invoke(payload, "s").text == "v1" for r in replicas), 5.0)
        kinds = [e.kind for e in store.events_since(0) or []]
        assert kinds == ["published", "published", "rollout", "promoted", "rolled_back"]
    finally:
        for r in replicas:
            r.close()
        store.close()
