"""`stageguard serve` over loopback: invokes per second and latency, measured with wrk.

The server runs as users run it (`stageguard serve`, one process); wrk (Debian's `wrk`,
one thread) is the load generator. Baselines measured in the same run: `GET /healthz` on the
same server (the HTTP stack alone, with no decision) and the same decisions made in-process
(the runtime alone, with the Response serialised as the server does).

    python benchmarks/bench_server.py [--seconds 10]

Target (issue 7): >= 2,000 invokes/s on 2 cores for the example output stage with
precomputed metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-invoke-token-000000"
METRICS = [
    # clean: every ruleset evaluated, none triggers
    {"output_toxicity": 0.1, "output_pii": [], "context_adherence": 0.9, "answer_words": 3,
     "competitor_mention": 0.0, "output_tone": "joy"},
    # toxic: the second ruleset overrides
    {"output_toxicity": 0.9, "output_pii": [], "context_adherence": 0.9, "answer_words": 3,
     "competitor_mention": 0.0, "output_tone": "joy"},
    # ungrounded and long: the third ruleset overrides
    {"output_toxicity": 0.2, "output_pii": [], "context_adherence": 0.1, "answer_words": 80,
     "competitor_mention": 0.0, "output_tone": "neutral"},
]


def bodies() -> list[str]:
    return [json.dumps({"payload": {"output": "Your order ships on Monday.", "metrics": m},
                        "stage_name": "output_guard"}) for m in METRICS]


def lua_script(path: Path) -> None:
    quoted = ",\n".join("  " + json.dumps(b) for b in bodies())
    path.write_text(f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
local bodies = {{
{quoted}
}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
""")


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p50": latency("50"), "p99": latency("99"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def in_process(registry: Path, seconds: float) -> float:
    from stageguard.runtime.engine import Runtime

    rt = Runtime(registry, deliver_webhooks=False)
    payloads = [{"output": "Your order ships on Monday.", "metrics": m} for m in METRICS]
    n, end = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        for p in payloads:
            json.dumps(rt.invoke(p, "output_guard").to_dict(), ensure_ascii=False)
        n += len(payloads)
    rate = n / (time.perf_counter() - started)
    rt.close()
    return rate


def serve(registry: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "STAGEGUARD_INVOKE_TOKENS": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "stageguard.cli", "serve",
                             "--registry", str(registry), "--port", str(port), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            time.sleep(1.0)  # every worker is up, not only the first to answer
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="sg-bench-server-"))
    registry = work / "registry"
    subprocess.run([sys.executable, "-m", "stageguard.cli", "build",
                    str(ROOT / "policies"), "--registry", str(registry)], check=True,
                   stdout=subprocess.DEVNULL)
    script = work / "invoke.lua"
    lua_script(script)
    rows = []
    ceiling = in_process(registry, args.seconds / 2)
    for label, extra in (("JSON access + decision logs on", ()),
                         ("logs off (--log-level warning)", ("--log-level", "warning")),
                         ("logs off, --workers 2", ("--log-level", "warning",
                                                    "--workers", "2"))):
        # --no-webhooks: the example stages notify hooks.example.com; traffic stays local.
        proc = serve(registry, args.port, "--no-webhooks", *extra)
        try:
            url = f"http://127.0.0.1:{args.port}"
            wrk(f"{url}/protect/invoke", 2, 16, script)  # warm-up
            for connections in (1, 16, 64):
                inv = wrk(f"{url}/protect/invoke", args.seconds, connections, script)
                base = wrk(f"{url}/healthz", args.seconds, connections)
                rows.append((label, connections, inv, base))
        finally:
            proc.terminate()
            proc.wait()
    print(f"in-process ceiling (invoke + to_dict + json.dumps): {ceiling:,.0f} decisions/s")
    print("| server | connections | invokes/s | p50 ms | p99 ms | non-2xx | /healthz/s "
          "| invoke ÷ healthz |")
    print("|---|---|---|---|---|---|---|---|")
    for label, c, inv, base in rows:
        print(f"| {label} | {c} | {inv['rate']:,.0f} | {inv['p50']:.2f} | {inv['p99']:.2f} "
              f"| {inv['non_2xx']} | {base['rate']:,.0f} | {inv['rate'] / base['rate']:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
