from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from stageguard.compiler.pipeline import Compilation, compile_text

# Example counts come from these profiles only (tests/profiles.py). CI replays a fixed
# sequence of examples so a run cannot fail on a new random draw that the submitter never
# saw; local runs keep exploring (and store failures in .hypothesis/); `nightly` runs ten
# times the examples and is not run in CI.
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                          database=None, print_blob=True)
settings.register_profile("nightly", max_examples=1_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def compile_src(text: str, path: str = "t.sg") -> Compilation:
    return compile_text(src(text), path)


def codes(result: Compilation) -> list[str]:
    return [d.code for d in result.diagnostics]


def stage_src(body: str, extra: str = "") -> str:
    """A minimal valid file around one central stage body."""
    return "project p\n" + extra + "stage s {\n" + textwrap.dedent(body) + "}\n"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path

# The broken policy-test fixture fails on purpose; tests run it explicitly (test_policytest).
collect_ignore_glob = ["policy_tests/*"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A real PostgreSQL server for the session (tests/postgres_helpers.py). Where it cannot
    be had the tests that need it skip, saying why; under CI they fail instead."""
    from tests.postgres_helpers import binaries, running_postgres

    problem = None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problem = "psycopg is not installed (pip install -e '.[fleet]')"
    if problem is None and binaries() is None:
        problem = "PostgreSQL is not installed (apt-get install postgresql)"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {problem}")
        pytest.skip(problem)
    with running_postgres() as server:
        yield server
