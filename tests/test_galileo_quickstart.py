"""Galileo's own documentation examples, copied with only the import changed, run unmodified
against stageguard: embedded (a registry directory) and remote (`stageguard serve`), chosen
by STAGEGUARD_TARGET alone."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Installed is enough to know (the SDK runs in processes of its own): importing it here
# would cost every test worker 3 s of collection.
if importlib.util.find_spec("galileo") is None:
    pytest.skip("the galileo SDK is not installed (pip install -e '.[conformance]')",
                allow_module_level=True)

from stageguard.api import Protect
from stageguard.runtime.identity import project_id
from tests.server_helpers import ADMIN, serving

HERE = Path(__file__).parent / "galileo_quickstart"


@pytest.fixture(params=["embedded", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    registry = tmp_path / "reg"
    with Protect(registry) as seed:  # the project exists, as a Galileo user's does
        seed.create_stage(name="seed", project_name="quickstart")
    if request.param == "embedded":
        yield {"STAGEGUARD_TARGET": str(registry)}
    else:
        with serving(registry) as served:
            yield {"STAGEGUARD_TARGET": served.url, "STAGEGUARD_TOKEN": ADMIN}


def _run(script: str, tmp_path: Path, env: dict[str, str]) -> list[str]:
    text = (HERE / script).read_text().replace("<project_id>", project_id("quickstart"))
    copy = tmp_path / script
    copy.write_text(text)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("GALILEO_", "STAGEGUARD_"))}
    done = subprocess.run([sys.executable, str(copy)], capture_output=True, text=True,
                          timeout=120, env={**clean, "GALILEO_PROJECT": "quickstart", **env},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_galileo_protect_howto(target: dict[str, str], tmp_path: Path) -> None:
    assert _run("galileo_protect_howto.py", tmp_path, target) == [
        "central triggered Personal Identifiable Information detected in the model output. "
        "Sorry, I cannot answer that question.",
        "local not_triggered Hello!",
        "paused paused",
        "updated 2",
    ]


def test_galileo_sdk_stages_page(target: dict[str, str], tmp_path: Path) -> None:
    assert _run("galileo_sdk_stages.py", tmp_path, target) == [
        "created My stage central 1",
        "created My local stage local",
        "got My stage",
        "updated 1",  # the same rulesets again: stageguard makes no new version (ours)
        "resumed False",
    ]
