"""Start `stageguard serve` on a free loopback port, call it with `stageguard.client` as an
application would, print the decisions, and stop it with SIGTERM (which must exit 0).

    python scripts/serve_smoke.py REGISTRY
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from stageguard import client
from stageguard.runtime.model import Status


def main(registry: str) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stageguard.cli", "serve",
                             "--registry", registry, "--no-auth", "--no-webhooks",
                             "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        sg = client.connect(f"http://127.0.0.1:{port}")
        for _ in range(200):
            try:
                sg.get_stage(stage_name="output_guard")
                break
            except client.ServiceUnavailable:
                time.sleep(0.05)
        for metrics in ({"output_toxicity": 0.9, "output_pii": []},
                        {"output_toxicity": 0.1, "output_pii": ["ssn"]}):
            r = sg.invoke({"output": "Here is the answer.", "metrics": metrics},
                          stage_name="output_guard")
            print(f"serve: POST /protect/invoke {metrics} -> {r.status.value.upper()} "
                  f"{r.text!r} (v{r.stage_metadata.stage_version})")
        assert r.status is Status.TRIGGERED, r
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    if code != 0:
        print(f"serve exited with {code} after SIGTERM", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
