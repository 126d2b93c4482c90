"""The hooks of .pre-commit-hooks.yaml, run by the real pre-commit on a throwaway repository.

The throwaway repository's .pre-commit-config.yaml names this checkout as the hooks' repo
and a commit as `rev`, as docs/review.md shows users (the commit is a snapshot of the working
tree, so uncommitted changes are what is tested). pre-commit builds the hooks' environment
once with pip; the dependencies come from the wheels scripts/setup.sh keeps in
.venv/wheelhouse, so nothing is fetched from the network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import POLICIES

ROOT = Path(__file__).parent.parent
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example"})


def snapshot(dest: Path) -> str:
    """This checkout's working tree (tracked and new files, not ignored ones) committed in a
    clone at `dest`; its commit. A checkout that is not a git repository is copied whole."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60).stdout.strip()
    if inside != "true":
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
            "registry"))
        git(dest, "init", "-q", "-b", "main")
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "snapshot")
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True,
                   capture_output=True, timeout=120)
    changed = subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard", "-z"],
                             cwd=ROOT, check=True, capture_output=True, timeout=60).stdout
    for name in filter(None, changed.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    deleted = subprocess.run(["git", "ls-files", "-d", "-z"], cwd=ROOT, check=True,
                             capture_output=True, timeout=60).stdout
    for name in filter(None, deleted.decode().split("\0")):
        (dest / name).unlink(missing_ok=True)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "--allow-empty", "-m", "snapshot")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def pre_commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE), "NO_COLOR": "1",
           "PRE_COMMIT_COLOR": "never", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(PRE_COMMIT), "run", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def verdicts(output: str) -> dict[str, str]:
    """{hook name: Passed | Failed | Skipped} from pre-commit's report lines."""
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^(stageguard[^.\n]*?)\.{3,}(?:\([^)]*\))?(Passed|Failed|Skipped)$",
                        output, re.M)}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if not WHEELHOUSE.is_dir():
        pytest.skip("no .venv/wheelhouse: run scripts/setup.sh (it keeps the wheels pre-commit "
                    "installs from offline)")
    rev = snapshot(tmp_path / "stageguard")
    r = tmp_path / "repo"
    shutil.copytree(POLICIES, r / "policies")
    hooks = "".join(f"      - id: {h['id']}\n" for h in HOOKS)
    (r / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {tmp_path / 'stageguard'}\n    rev: {rev}\n    hooks:\n{hooks}")
    git(r, "init", "-q", "-b", "main")
    git(r, "add", ".")
    git(r, "commit", "-qm", "policies")
    return r


def test_every_hook_takes_file_arguments() -> None:
    assert {h["id"] for h in HOOKS} == {"stageguard-fmt", "stageguard-fmt-check",
                                        "stageguard-check", "stageguard-lint",
                                        "stageguard-test"}
    for hook in HOOKS:
        assert hook.get("pass_filenames", True) and "args" not in hook, hook["id"]
        assert "policies" not in hook["entry"]


def test_the_hooks_on_a_clean_and_on_a_broken_change(repo: Path) -> None:
    p = pre_commit(repo, "--all-files")
    assert p.returncode == 0, p.stdout + p.stderr
    assert verdicts(p.stdout) == {h["name"]: "Passed" for h in HOOKS}

    # One change of each kind, passed as the changed files (as a commit would).
    guard = repo / "policies" / "input_guard.sg"
    guard.write_text(guard.read_text().replace("  ruleset abusive_question {",
                                               "  ruleset   abusive_question   {"))
    out = repo / "policies" / "output_guard.sg"
    out.write_text(out.read_text().replace("output_toxicity >= 0.7", "output_toxicty >= 0.7"))
    case = repo / "policies" / "input_guard.test.toml"
    case.write_text(case.read_text().replace(
        'expect = { status = "not_triggered", text = "Please answer briefly." }',
        'expect = { status = "triggered", text = "Please answer briefly." }'))
    p = pre_commit(repo, "stageguard-fmt", "--files", "policies/input_guard.sg")
    assert verdicts(p.stdout) == {"stageguard fmt": "Failed"}
    assert "files were modified by this hook" in p.stdout
    assert "ruleset abusive_question {" in guard.read_text()  # fixed in place
    p = pre_commit(repo, "--files", "policies/output_guard.sg",
                   "policies/input_guard.test.toml")
    got = verdicts(p.stdout)
    assert got == {"stageguard fmt": "Passed", "stageguard fmt --check": "Passed",
                   "stageguard check": "Failed", "stageguard lint": "Failed",
                   "stageguard test": "Failed"}, p.stdout
    assert "error[SG0201]: unknown metric `output_toxicty`" in p.stdout
    assert "--> policies/output_guard.sg:19:10" in p.stdout
    # A policy file checked alone still sees the metrics declared beside it.
    out.write_text(out.read_text().replace("output_toxicty >= 0.7", "output_toxicity >= 0.7"))
    p = pre_commit(repo, "--files", "policies/output_guard.sg",
                   "policies/input_guard.test.toml")
    assert verdicts(p.stdout) == {"stageguard fmt": "Passed", "stageguard fmt --check": "Passed",
                                  "stageguard check": "Passed", "stageguard lint": "Passed",
                                  "stageguard test": "Failed"}, p.stdout
    assert "FAIL  policies/input_guard.test.toml::simple instructions" in p.stdout


def test_the_documented_rev_is_this_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    review = (ROOT / "docs" / "review.md").read_text()
    assert re.findall(r"^\s+rev: (\S+)$", review, re.M) == [f"v{version}"]
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()
