"""Colour (NO_COLOR, FORCE_COLOR, --color) and progress (cli/style.py)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stageguard.cli.style import Progress
from tests.conftest import POLICIES
from tests.test_cli import EXE

CORPUS = Path(__file__).parent / "lint" / "findings.sg"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lint(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([str(EXE), "lint", str(CORPUS), "--isolated", *flags],
                          capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


def test_colour_follows_the_conventions() -> None:
    plain = lint().stdout
    assert "\x1b[" not in plain  # a pipe is not a terminal
    forced = lint(env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[1;33mwarning[SG0701]\x1b[0m" in forced
    assert "\x1b[" not in lint(env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert lint("--color", "always", env={"NO_COLOR": "1"}).stdout == forced
    assert "\x1b[" not in lint("--color", "never", env={"FORCE_COLOR": "1"}).stdout
    # The words are the same, colour or not.
    assert ANSI.sub("", forced) == plain


def test_colour_before_the_subcommand_too() -> None:
    p = subprocess.run([str(EXE), "--color", "always", "check", "-"], input="stage {",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "\x1b[1;31merror[SG0001]\x1b[0m" in p.stderr


def test_lint_reads_standard_input() -> None:
    p = subprocess.run([str(EXE), "lint", "-", "--isolated", "--format", "json"],
                       input=CORPUS.read_text(), capture_output=True, text=True, timeout=60)
    found = json.loads(p.stdout)["diagnostics"]
    assert {d["span"]["file"] for d in found} == {"<stdin>"} and len(found) == 11


def test_json_is_never_coloured() -> None:
    p = lint("--format", "json", "--color", "always")
    assert "\x1b[" not in p.stdout and json.loads(p.stdout)["diagnostics"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_appears_after_the_delay_and_is_erased() -> None:
    out = Terminal()
    p = Progress("lint", out, after=0.05)
    p.update("stage 1 of 2, big")
    time.sleep(0.5)
    p.close()
    text = out.getvalue()
    assert "\r\x1b[2Klint: stage 1 of 2, big … " in text
    assert text.endswith("\r\x1b[2K")


@pytest.mark.parametrize("stream", [Terminal, io.StringIO])
def test_no_progress_for_quick_work_or_off_a_terminal(stream: type[io.StringIO]) -> None:
    out = stream()
    p = Progress("lint", out, after=0.3 if stream is Terminal else 0.0)
    time.sleep(0.05 if stream is Terminal else 0.2)
    p.close()
    assert out.getvalue() == ""


def test_inspect_json_matches_the_registry(tmp_path: Path) -> None:
    shutil.copytree(POLICIES, tmp_path / "policies")
    subprocess.run([str(EXE), "build", "policies", "--registry", "reg"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    p = subprocess.run([str(EXE), "inspect", "reg", "--format", "json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(p.stdout)
    assert [s["stage"] for s in doc["stages"]] == ["agent_tools", "input_guard",
                                                   "output_guard"]
    guard = doc["stages"][1]
    assert guard["rulesets"][0]["name"] == "prompt_injection" and guard["versions"] == [1]
    assert guard["rulesets"][0]["rules"] == [
        'prompt_injection any ["impersonation", "new_context", "obfuscation"]']
