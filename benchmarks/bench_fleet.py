"""Fleet propagation: a pause made by one process, until each of 3 replica runtimes answers
`paused` (runtimes in this process, and `stageguard serve` processes asked over HTTP); over
a PostgreSQL registry (NOTIFY wakes the replicas; they poll every 30 s, so only the
notification can be fast) and over a directory registry (polled every 0.5 s), measured in
the same run. Also the decision with the store up against the store down.

Run: .venv/bin/python benchmarks/bench_fleet.py [--trials N]
Goal (issue 15): < 200 ms with NOTIFY; < poll_interval + 200 ms without.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stageguard.compiler.pipeline import compile_paths, compile_text
from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Status
from stageguard.runtime.store import RegistryStore, open_store
from tests.postgres_helpers import running_postgres

ROOT = Path(__file__).resolve().parent.parent


def _propagation(target: str, poll: float, trials: int) -> list[float]:
    store: RegistryStore = open_store(target)
    migrate = getattr(store, "migrate", None)
    if callable(migrate):
        migrate()
    store.publish(compile_paths([str(ROOT / "policies")]).artifacts)
    project, stage = sorted((p, s) for p, stages in store.read_index().projects.items()
                            for s in stages)[0]
    replicas = [Runtime(target, poll_interval=poll) for _ in range(3)]
    admin = Runtime(target, poll_interval=None)
    time.sleep(0.5)
    took = []
    try:
        for i in range(trials):
            paused = i % 2 == 0
            started = time.perf_counter()
            (admin.pause_stage if paused else admin.resume_stage)(project=project,
                                                                  stage_name=stage)
            want = Status.PAUSED if paused else None
            while True:
                statuses = [r.invoke({"output": "x"}, stage, project=project).status
                            for r in replicas]
                if all((s is Status.PAUSED) == (want is Status.PAUSED) for s in statuses):
                    break
                time.sleep(0.001)
            took.append(time.perf_counter() - started)
    finally:
        for r in (*replicas, admin):
            r.close()
    return took


def _publish_to_served(url: str, trials: int) -> list[float]:
    """A new version published by one process until each of 3 replicas decides with it."""
    store: RegistryStore = open_store(url)
    store.migrate()  # type: ignore[attr-defined]

    def version(n: int) -> object:
        (doc,) = compile_text(f'project f\nstage s {{\n  ruleset r {{\n    when '
                              f'output_toxicity > 0.5\n    override {{\n      choice "{n}"\n'
                              f'    }}\n  }}\n}}\n', "s.sg").artifacts
        return doc

    store.publish([version(0)])
    replicas = [Runtime(url, poll_interval=30.0) for _ in range(3)]
    time.sleep(0.5)
    took = []
    payload = {"output": "x", "metrics": {"output_toxicity": 0.9}}
    try:
        for n in range(1, trials + 1):
            started = time.perf_counter()
            store.publish([version(n)])
            while not all(r.invoke(payload, "s", project="f").text == str(n) for r in replicas):
                time.sleep(0.001)
            took.append(time.perf_counter() - started)
    finally:
        for r in replicas:
            r.close()
    return took


def _process_propagation(target: str, poll: float, trials: int) -> list[float]:
    """As `_propagation`, to 3 `stageguard serve` processes asked over HTTP (each poll of a
    replica is one loopback request, so the figure includes up to one request's time)."""
    import httpx

    from tests.server_helpers import ADMIN, serve_process

    store: RegistryStore = open_store(target)
    store.migrate()
    store.publish(compile_paths([str(ROOT / "policies")]).artifacts)
    project, stage = sorted((p, s) for p, stages in store.read_index().projects.items()
                            for s in stages)[0]
    quiet = ("--poll-interval", str(poll), "--no-access-log", "--log-level", "warning")
    body = {"payload": {"output": "x"}, "project_name": project, "stage_name": stage}
    took = []
    with serve_process(target, *quiet) as (a, _), serve_process(target, *quiet) as (b, _), \
            serve_process(target, *quiet) as (c, _):
        clients = [httpx.Client(base_url=u, timeout=10,
                                headers={"Authorization": f"Bearer {ADMIN}"})
                   for u in (a, b, c)]
        time.sleep(0.5)
        for i in range(trials):
            paused = i % 2 == 0
            started = time.perf_counter()
            store.set_paused(project, stage, paused)
            pending = list(clients)
            while pending:
                pending = [cl for cl in pending if (cl.post("/protect/invoke", json=body).json()
                                                    ["status"].lower() == "paused") != paused]
                if pending:
                    time.sleep(0.001)
            took.append(time.perf_counter() - started)
        for cl in clients:
            cl.close()
    close = getattr(store, "close", None)
    if callable(close):
        close()
    return took


STORM = """
import sys
from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.store import open_store

writer, n = open_store(sys.argv[1]), 0
while True:
    n += 1
    writer.publish(compile_text(f"project stormy\\nstage s{n % 5} {{\\n  ruleset r {{\\n"
                                f"    when output_toxicity > 0.{n % 9 + 1}\\n  }}\\n}}\\n",
                                "s.sg").artifacts)
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        notify = _propagation(server.new_database(), 30.0, args.trials)
        polled = _propagation(str(Path(tmp) / "reg"), 0.5, args.trials)
        served = _publish_to_served(server.new_database(), args.trials)
        notify_procs = _process_propagation(server.new_database(), 30.0, args.trials)
        polled_procs = _process_propagation(str(Path(tmp) / "reg-procs"), 0.5, args.trials)
        print(f"pause/resume -> all 3 replicas, {args.trials} trials:")
        for name, values, goal in (("postgresql + NOTIFY (poll 30 s)", notify, 0.2),
                                   ("directory, poll 0.5 s", polled, 0.7),
                                   ("3 serve processes, NOTIFY", notify_procs, 0.2),
                                   ("3 serve processes, directory 0.5 s", polled_procs, 0.7)):
            print(f"  {name:34}: p50 {statistics.median(values) * 1000:7.1f} ms  p99 "
                  f"{_pct(values, 0.99) * 1000:7.1f} ms  (goal < {goal * 1000:.0f} ms)")
        print(f"publish -> all 3 replicas decide with it (NOTIFY): p50 "
              f"{statistics.median(served) * 1000:.1f} ms  p99 {_pct(served, 0.99) * 1000:.1f} ms")
        # The decision path never reads the store: the same with the store up and down.
        url = server.new_database()
        store = open_store(url)
        store.migrate()  # type: ignore[attr-defined]
        store.publish(compile_paths([str(ROOT / "policies")]).artifacts)
        project, stage = sorted((p, s) for p, st in store.read_index().projects.items()
                                for s, entry in st.items() if entry.type.value == "central")[0]
        logging.disable(logging.ERROR)  # the replica logs every failed sync while down
        with Runtime(url, poll_interval=0.2) as rt:
            def rate() -> float:
                started, n = time.perf_counter(), 0
                while time.perf_counter() - started < 1.0:
                    r = rt.invoke({"output": "a plain answer, no secrets here"}, stage,
                                  project=project)
                    assert r.status is not Status.SKIPPED
                    n += 1
                return n / (time.perf_counter() - started)

            up = rate()
            # The publisher is another process, as in a fleet: only the replica's own reload
            # work competes with its decisions.
            storm = subprocess.Popen([sys.executable, "-c", STORM, url])
            time.sleep(0.5)
            during = rate()
            storm.terminate()
            storm.wait()
            server.stop()
            time.sleep(0.5)
            down = rate()
            server.start()
        print(f"invokes/s with the store up {up:,.0f}, during a publish storm {during:,.0f} "
              f"(ratio {during / up:.2f}), down {down:,.0f} (ratio {down / up:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
