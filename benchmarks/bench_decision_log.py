"""Decision logs: what logging costs a decision, per sink, against no logging in the same run;
and replay throughput on a million logged events.

Two views of the cost. Paced: 2,000 decisions/s (a busy service's share of one core), the
caller asleep between them as a server's thread is, the latency of each `invoke` as its
caller sees it, p50 and p99. Flat out: decisions/s in a tight
loop, where the log's own thread (building, redacting, encoding events) competes with the
caller for the interpreter. Sinks: a rotating JSONL file; an HTTP collector in another
process on 127.0.0.1; the same collector's port with nothing listening (a sink that is
down); PostgreSQL's table.

Run: .venv/bin/python benchmarks/bench_decision_log.py [--replay-events N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.decision_log import Decision, DecisionLog, build_event
from stageguard.runtime.engine import Runtime
from stageguard.runtime.log_sinks import HttpSink, JsonlSink, encode_lines, iter_events
from stageguard.runtime.registry import Registry
from stageguard.runtime.replay import replay
from stageguard.runtime.served import load_model
from tests.postgres_helpers import running_postgres
from tests.server_helpers import free_port

STAGE = """project bench
stage answers {
  ruleset toxic {
    when output_toxicity > 0.8
  }
  ruleset rude {
    when output_toxicity > 0.5
    when output_tone == "anger"
  }
  ruleset leak {
    when output_pii any ["ssn", "credit_card_info"]
  }
}
"""
NEW = STAGE.replace("output_toxicity > 0.8", "output_toxicity > 0.6")

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _payload(i: int) -> dict[str, object]:
    return {"output": "x", "metrics": {"output_toxicity": (i % 100) / 100,
                                       "output_tone": ("anger", "joy")[i % 2],
                                       "output_pii": [] if i % 7 else ["ssn"]}}


def _paced(rt: Runtime, n: int, rate: float) -> tuple[float, float]:
    took = []
    started = time.perf_counter()
    for i in range(n):
        due = started + i / rate
        wait = due - time.perf_counter()
        if wait > 0:  # asleep between requests, as a server's thread is (in epoll)
            time.sleep(wait)
        t = time.perf_counter()
        rt.invoke(_payload(i), "answers", metadata={"user": f"u{i % 500}"})
        took.append(time.perf_counter() - t)
    took.sort()
    return took[len(took) // 2] * 1e6, took[int(len(took) * 0.99)] * 1e6


def _flat(rt: Runtime, seconds: float) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        rt.invoke(_payload(n), "answers", metadata={"user": f"u{n % 500}"})
        n += 1
    return n / (time.perf_counter() - started)


def _cost(registry: Path, make: Callable[[], DecisionLog | None]) -> tuple[float, float, float]:
    log = make()
    with Runtime(registry, poll_interval=None, deliver_webhooks=False, decision_log=log) as rt:
        _paced(rt, 500, 2_000)  # warm up
        p50, p99 = _paced(rt, 6_000, 2_000)
        rate = _flat(rt, 2.0)
        rt.flush(5)
    return p50, p99, rate


def _replay_throughput(tmp: Path, events: int) -> tuple[float, float, int]:
    """Write `events` logged decisions (real events, varied values and ids), then replay
    them against a changed version: events/s read and decided, and the flips."""
    art = compile_text(STAGE, "s.sg").artifacts[0].to_artifact()
    sample = []
    with Runtime.from_files(_artifact_file(tmp, STAGE), deliver_webhooks=False) as rt:
        for i in range(1_000):
            r = rt.invoke(_payload(i), "answers")
            sample.append(build_event(Decision(r, art.digest, 1, "active", None)))
    path = tmp / "million.jsonl"
    with path.open("wb") as f:
        for i in range(events):
            e = dict(sample[i % len(sample)])
            e["decision_id"] = f"{i:012d}"
            f.write(encode_lines([e]))
    new = load_model(compile_text(NEW, "n.sg").artifacts[0].to_artifact())
    started = time.perf_counter()
    report = replay(iter_events([path]), "bench", "answers", new, "new", keep_outcomes=False)
    took = time.perf_counter() - started
    size = path.stat().st_size
    path.unlink()
    return events / took, size / events, report.flipped


def _artifact_file(tmp: Path, text: str) -> Path:
    (doc,) = compile_text(text, "s.sg").artifacts
    path = tmp / "served.json"
    path.write_bytes(doc.to_bytes(1))
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    args = parser.parse_args()
    compiled = compile_text(STAGE, "s.sg")
    assert compiled.ok, [d.message for d in compiled.diagnostics]
    with tempfile.TemporaryDirectory() as name, running_postgres() as server:
        tmp = Path(name)
        Registry(tmp / "reg").publish(compiled.artifacts)
        port = free_port()
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
        time.sleep(0.5)
        url = server.new_database()
        from stageguard.runtime.postgres import PostgresDecisionSink, PostgresRegistry

        store = PostgresRegistry(url)
        store.migrate()
        store.close()
        dead = free_port()
        rows = {
            "no decision log": lambda: None,
            "JSONL file": lambda: DecisionLog([JsonlSink(tmp / "d.jsonl")]),
            "HTTP collector (another process)": lambda: DecisionLog(
                [HttpSink(f"http://127.0.0.1:{port}/events")]),
            "HTTP collector down": lambda: DecisionLog(
                [HttpSink(f"http://127.0.0.1:{dead}/events", timeout=0.5)]),
            "PostgreSQL table": lambda: DecisionLog([PostgresDecisionSink(url)]),
        }
        results = {name: _cost(tmp / "reg", make) for name, make in rows.items()}
        receiver.terminate()
        receiver.wait()
        base = results["no decision log"]
        print("decision latency at 2,000/s (p50, p99 µs) and flat-out decisions/s:")
        for name, (p50, p99, rate) in results.items():
            print(f"  {name:34} p50 {p50:6.1f} ({p50 / base[0]:4.2f}×)  p99 {p99:6.1f} "
                  f"({p99 / base[1]:4.2f}×)  {rate:9,.0f}/s ({rate / base[2]:4.2f}×)")
        rate, size, flipped = _replay_throughput(tmp, args.replay_events)
        print(f"replay: {args.replay_events:,} events ({size:.0f} bytes each) at "
              f"{rate:,.0f} events/s; {flipped:,} flip")
    print(json.dumps({k: list(v) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
