"""Rollouts (runtime/rollout.py): a deterministic, sticky split by a caller's key, followed
by every replica, promoted or rolled back as registry events."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.engine import Runtime
from stageguard.runtime.errors import InvalidRequest, StageNotFound
from stageguard.runtime.registry import Registry
from stageguard.runtime.rollout import bucket, takes_candidate
from tests.profiles import examples


def version_text(n: int) -> str:
    return (f'project p\nstage s {{\n  ruleset r {{\n    when output_toxicity > 0.5\n'
            f'    override {{\n      choice "v{n}"\n    }}\n  }}\n}}\n')


def publish(root: Path, n: int, activate: bool = True) -> None:
    Registry(root).publish(compile_text(version_text(n), "s.sg").artifacts, activate=activate)


PAYLOAD = {"output": "x", "metrics": {"output_toxicity": 0.9}}

keys = st.text(min_size=1, max_size=40)
percents = st.floats(0, 100)


@examples(10)
@given(keys, percents, percents)
def test_raising_the_percent_only_adds_keys(key: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= bucket("p", "s", key) < 100
    if takes_candidate("p", "s", key, low):
        assert takes_candidate("p", "s", key, high)
    assert not takes_candidate("p", "s", key, 0.0)
    assert takes_candidate("p", "s", key, 100.0)


@examples(0.2)
@given(st.sampled_from([1.0, 5.0, 10.0, 25.0, 50.0, 90.0]), st.integers(0, 10**6))
def test_the_split_over_many_keys_is_the_percent(percent: float, salt: int) -> None:
    n = 20_000
    share = sum(takes_candidate("p", "s", f"user-{salt}-{i}", percent) for i in range(n)) / n
    sigma = math.sqrt(percent / 100 * (1 - percent / 100) / n)
    assert abs(share - percent / 100) < 5 * sigma + 1e-9  # binomial: 5 sigma


def test_keys_are_split_per_stage() -> None:
    """Two stages rolled out to 50% do not pick the same half of the users."""
    users = [f"u{i}" for i in range(2_000)]
    a = {u for u in users if takes_candidate("p", "a", u, 50)}
    b = {u for u in users if takes_candidate("p", "b", u, 50)}
    assert 0.4 < len(a & b) / len(a) < 0.6


def test_a_rollout_is_sticky_on_every_replica_and_promoted_or_rolled_back(
        tmp_path: Path) -> None:
    root = tmp_path / "reg"
    publish(root, 1)
    publish(root, 2, activate=False)
    users = [f"user-{i}" for i in range(400)]
    with Runtime(root, poll_interval=None) as admin, \
            Runtime(root, poll_interval=None) as a, Runtime(root, poll_interval=None) as b:
        assert {a.invoke(PAYLOAD, "s", metadata={"user": u}).text for u in users} == {"v1"}
        info = admin.rollout_stage(2, 25, "user", stage_name="s")
        assert info.version == 1 and info.candidate is not None
        assert info.candidate.describe() == "v2 for 25% by metadata.user"
        a.refresh()
        b.refresh()
        first = {u: a.invoke(PAYLOAD, "s", metadata={"user": u}) for u in users}
        for u, r in first.items():  # sticky: same key, same version, on both replicas
            want = "v2" if takes_candidate("p", "s", u, 25) else "v1"
            assert r.text == want and r.stage_metadata.stage_version == int(want[1])
            assert b.invoke(PAYLOAD, "s", metadata={"user": u}).text == want
            assert a.invoke(PAYLOAD, "s", metadata={"user": u}).text == want
        share = sum(r.text == "v2" for r in first.values()) / len(users)
        assert 0.15 < share < 0.35
        # No key, no candidate: the caller did not say who it is.
        assert a.invoke(PAYLOAD, "s").text == "v1"
        assert a.invoke(PAYLOAD, "s", metadata={"session": "x"}).text == "v1"
        # A pinned version is that version, whatever the rollout.
        assert a.invoke(PAYLOAD, "s", version=1, metadata={"user": users[0]}).text == "v1"

        admin.promote_stage(stage_name="s")
        a.refresh()
        assert {a.invoke(PAYLOAD, "s", metadata={"user": u}).text for u in users} == {"v2"}
        admin.rollback_stage(1, stage_name="s")
        a.refresh()
        assert {a.invoke(PAYLOAD, "s", metadata={"user": u}).text for u in users} == {"v1"}
        kinds = [(e.kind, e.version) for e in admin.stage_history(stage_name="s")]
        assert kinds == [("published", 1), ("published", 2), ("rollout", 2), ("promoted", 2),
                         ("rolled_back", 1)]
        # Files are never rewritten: both versions are there as published.
        assert [v.version for v in Registry(root).stage_entry("p", "s").versions] == [1, 2]  # type: ignore[union-attr]


def test_rollout_mistakes_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    publish(root, 1)
    with Runtime(root, poll_interval=None) as rt:
        with pytest.raises(StageNotFound):
            rt.rollout_stage(5, 10, "user", stage_name="s")
        with pytest.raises(InvalidRequest, match="rollout"):
            rt.rollout_stage(1, 120, "user", stage_name="s")
        with pytest.raises(InvalidRequest, match="already serves"):
            rt.shadow_stage(1, stage_name="s")


def test_the_split_is_the_one_docs_semantics_md_states() -> None:
    import hashlib

    for key in ("u1", "user-42", "ünïcode", ""):
        digest = hashlib.sha256(f"shop/answers\0{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * 100
        assert bucket("shop", "answers", key) == point
        assert takes_candidate("shop", "answers", key, point + 1e-9)
        assert not takes_candidate("shop", "answers", key, point)
