"""Compile benchmark: a generated policy of 10,000 rulesets through parse -> check -> artifact,
against the bare Lark parse (parse tree, no transformer) of the same text in the same run.

Run: .venv/bin/python benchmarks/bench_compile.py [--rulesets N] [--repeat R]
Targets (issue 2): whole pipeline <= 1.5x the bare parse; >= 25,000 lines/s on one core.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import big_policy
from lark import Lark

from stageguard.compiler.artifacts import compile_stage
from stageguard.compiler.checker import check
from stageguard.compiler.parser import grammar_text, parse
from stageguard.compiler.pipeline import compile_text


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rulesets", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    text = big_policy(args.rulesets)
    lines = text.count("\n")
    bare = Lark(grammar_text(), parser="lalr", lexer="contextual")
    parse(text[:500])  # build our parser's tables outside the timing, as bare's are

    stages: dict[str, object] = {}

    def pipeline() -> None:
        result = compile_text(text, "bench.sg")  # the CLI's path: parse, check, emit
        assert result.ok, result.diagnostics[:3]
        (art,) = result.artifacts
        stages["bytes"] = art.to_bytes(1)

    def phases() -> dict[str, float]:
        t0 = time.perf_counter()
        parsed = parse(text, "bench.sg")
        t1 = time.perf_counter()
        result = check([parsed])
        t2 = time.perf_counter()
        art = compile_stage(result.stages[0])
        t3 = time.perf_counter()
        art.to_bytes(1)
        t4 = time.perf_counter()
        return {"parse": t1 - t0, "check": t2 - t1, "compile": t3 - t2, "serialise": t4 - t3}

    def bare_no_gc() -> None:
        gc.disable()
        try:
            bare.parse(text)
        finally:
            gc.enable()

    bare_t = timed(lambda: bare.parse(text), args.repeat)
    bare_ng_t = timed(bare_no_gc, args.repeat)
    ours_t = timed(pipeline, args.repeat)
    b, o = statistics.median(bare_t), statistics.median(ours_t)
    bn = statistics.median(bare_ng_t)
    ph = phases()
    print(f"machine: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, one core")
    print(f"input: {args.rulesets} rulesets, {lines} lines, {len(text) / 1e6:.2f} MB; "
          f"artifact {len(stages['bytes']) / 1e6:.2f} MB")
    print(f"bare Lark parse (tree):      median {b * 1000:8.1f} ms  {lines / b:10,.0f} lines/s")
    print(f"  same, collector paused:    median {bn * 1000:8.1f} ms  {lines / bn:10,.0f} lines/s")
    print(f"stageguard parse+check+emit: median {o * 1000:8.1f} ms  {lines / o:10,.0f} lines/s")
    print(f"ratio pipeline / bare parse: {o / b:.2f}x   (target <= 1.5x); against the bare "
          f"parse with the collector paused too: {o / bn:.2f}x")
    spent = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in ph.items())
    print(f"phases (one run, collector on): {spent}")
    ok = o / bn <= 1.5 and o / b <= 1.5 and lines / o >= 25_000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
