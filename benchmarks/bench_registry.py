"""What one commit costs as the registry grows: creating a stage, publishing a new version
of one, pausing one, in registries of 300, 1,200 and 5,000 stages; for the directory store
and the PostgreSQL store, and, as the baseline of the same run, what format 2 of the
directory store paid on every commit (rewriting the one index of every stage, the step
format 3 removed). The figure that matters is the ratio of the largest registry to the
smallest: 1.0 means a commit's cost does not follow the registry's size.

Run: .venv/bin/python benchmarks/bench_registry.py [--trials N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.canonical import ArtifactDocument
from stageguard.runtime.fsutil import atomic_write
from stageguard.runtime.registry import Index, Registry
from stageguard.runtime.store import RegistryStore, open_store
from tests.postgres_helpers import running_postgres

SIZES = (300, 1_200, 5_000)


def _stages(project: str, names: list[str], threshold: str = "0.5") -> list[ArtifactDocument]:
    body = "".join(f"stage {n} {{\n  ruleset r {{\n    when output_toxicity > {threshold}\n"
                   "  }\n}\n" for n in names)
    result = compile_text(f"project {project}\n{body}", "p.sg")
    assert result.ok
    return list(result.artifacts)


def _median_ms(trials: int, step: Callable[[int], None]) -> float:
    took = []
    for i in range(trials):
        started = time.perf_counter()
        step(i)
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


def _measure(store: RegistryStore, size: int, trials: int) -> dict[str, float]:
    for start in range(0, size, 500):  # filled in batches, one commit each
        store.publish(_stages("big", [f"s{i}" for i in range(start, min(size, start + 500))]))
    fresh = _stages("big", [f"new{i}" for i in range(trials)])
    versions = [_stages("big", ["s7"], f"0.{i % 9 + 1}{i}")[0] for i in range(trials)]
    figures = {
        "create_stage": _median_ms(trials, lambda i: store.publish([fresh[i]],
                                                                   create_only=True)),
        "publish a version": _median_ms(trials, lambda i: store.publish([versions[i]])),
        "pause/resume": _median_ms(trials, lambda i: store.set_paused("big", "s3", i % 2 == 0)),
    }
    if isinstance(store, Registry):
        # What format 2 added to each of those commits: the whole index read and validated,
        # then serialised and written by temp + fsync + rename.
        target = Path(store.root) / ".format2-index.json"
        atomic_write(target, (store.read_index().model_dump_json(indent=2) + "\n").encode())

        def rewrite(_: int) -> None:
            index = Index.model_validate_json(target.read_bytes())
            atomic_write(target, (index.model_dump_json(indent=2) + "\n").encode())

        figures["format 2's index read+write"] = _median_ms(trials, rewrite)
        target.unlink()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, dict[int, dict[str, float]]] = {"directory": {}, "postgresql": {}}
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            results["directory"][size] = _measure(Registry(Path(tmp) / f"r{size}"), size,
                                                  args.trials)
            store = open_store(server.new_database())
            store.migrate()
            results["postgresql"][size] = _measure(store, size, args.trials)
            store.close()  # type: ignore[attr-defined]
    for backend, by_size in results.items():
        print(f"{backend} (median of {args.trials}, ms):")
        for what in by_size[SIZES[0]]:
            row = "  ".join(f"{by_size[s][what]:7.2f} @ {s:,}" for s in SIZES)
            ratio = by_size[SIZES[-1]][what] / by_size[SIZES[0]][what]
            print(f"  {what:26}: {row}   ratio {SIZES[-1]:,}/{SIZES[0]}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
