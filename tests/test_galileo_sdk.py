"""The real galileo SDK (2.x) against `stageguard serve` on 127.0.0.1: its stage calls and its
sync and async invoke, configured only through the SDK's documented settings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Installed is enough to know (the SDK runs in processes of its own): importing it here
# would cost every test worker 3 s of collection.
if importlib.util.find_spec("galileo") is None:
    pytest.skip("the galileo SDK is not installed (pip install -e '.[conformance]')",
                allow_module_level=True)

from tests.server_helpers import ADMIN, serve_process

SCRIPT = Path(__file__).parent / "galileo_sdk" / "sdk_calls.py"


def test_the_galileo_sdk_drives_stageguard_serve(tmp_path: Path) -> None:
    (tmp_path / "reg").mkdir()
    with serve_process(tmp_path / "reg") as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALILEO_")}
        env.update(GALILEO_CONSOLE_URL=url, GALILEO_API_URL=url, GALILEO_API_KEY=ADMIN,
                   GALILEO_PROJECT="SDK project", HOME=str(tmp_path))
        done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["created"][1:] == ["My stage", "central", 1]
    assert out["local"] == "local" and out["found"] == out["created"][0]
    # The built-in PII scorer decides: Galileo's Payload carries text only.
    assert out["invoke"] == ["not_triggered", "a perfectly kind question"]
    assert out["triggered"] == ["triggered", "Sorry, no."]
    assert out["by_id"] == "not_triggered" and out["ainvoke_local"] == "triggered"
    assert out["paused"] is True and out["paused_invoke"] == "paused"
    assert out["resumed"] is False and out["updated"] == 2
