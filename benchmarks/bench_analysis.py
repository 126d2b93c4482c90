"""Analysis benchmark: lint and diff of generated stages, and how their cost grows.

The headline case is issue 4's: a 200-ruleset stage over 8 metrics (6 scores with 1 to 3
rules per ruleset drawn from 12 thresholds each, plus two PII label lists), linted, and
diffed against an edited copy (5 thresholds moved, 2 rulesets swapped, 1 added), with
metric failures modelled. Baseline, measured in the same run: compiling the same policy
from source (parse, check, artifact), the cheapest thing a reviewer's CI does anyway.

Run: .venv/bin/python benchmarks/bench_analysis.py [--repeat R] [--scale [--cap S]]
Targets: issue 4, lint and diff of the headline case each under 2 s on one core; issue 20,
200 x 12 each <= 0.5 s, the fail-mode flip at 200 rulesets <= 1 s, 1,000 x 20 each <= 5 s
(`--scale`, which also prints the growth tables).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import time
from collections.abc import Callable

from stageguard.compiler.analysis import AnalysisStopped, StageModel, time_limit
from stageguard.compiler.diff import behaviour
from stageguard.compiler.lint import findings
from stageguard.compiler.pipeline import compile_text

SCORES = ("input_toxicity", "output_toxicity", "context_adherence", "completeness",
          "input_sexist", "output_sexist", "tool_error_rate", "action_completion",
          "tool_selection_quality", "action_advancement")
PII = ("ssn", "email", "credit_card_info", "phone_number", "address", "password")
LISTS = ("output_pii", "input_pii")


def policy(rulesets: int, metrics: int, seed: int = 11, edit: bool = False) -> str:
    """Beyond the 10 built-in scores and 2 label lists, the stage's project declares
    score metrics of its own (`custom_1`, ...), so `metrics` is always what the stage uses."""
    rnd = random.Random(seed)
    wanted = max(1, metrics - 2)
    scores = SCORES[:wanted] + tuple(f"custom_{k}" for k in range(1, wanted - len(SCORES) + 1))
    lists = LISTS[:max(0, metrics - len(scores))]
    declared = "".join(f"metric {m} {{\n  type score\n}}\n\n" for m in scores
                       if m not in SCORES)
    thresholds = [round(0.05 + 0.075 * k, 3) for k in range(12)]
    blocks = []
    for i in range(rulesets):
        lines = [f"  ruleset r{i} {{"]
        for _ in range(rnd.randint(1, 3)):
            if lists and rnd.random() < 0.25:
                m = rnd.choice(lists)
                if rnd.random() < 0.5:
                    lines.append(f'    when {m} contains "{rnd.choice(PII)}"')
                else:
                    chosen = ", ".join(f'"{p}"' for p in rnd.sample(PII, 2))
                    lines.append(f"    when {m} any [{chosen}]")
            else:
                op = rnd.choice([">", ">=", "<", "<="])
                lines.append(f"    when {rnd.choice(scores)} {op} {rnd.choice(thresholds)}")
        if rnd.random() < 0.5:
            lines.append(f'    override {{\n      choice "answer {i % 7}"\n    }}')
        else:
            lines.append("    passthrough")
        lines.append("  }")
        blocks.append("\n".join(lines))
    if edit:
        er = random.Random(seed + 1)
        for _ in range(5):
            k = er.randrange(len(blocks))
            blocks[k] = _move_threshold(blocks[k])
        a, b = er.randrange(len(blocks)), er.randrange(len(blocks))
        blocks[a], blocks[b] = blocks[b], blocks[a]
        blocks.insert(er.randrange(len(blocks)), f"  ruleset added {{\n    when {scores[0]} > "
                      "0.9\n    passthrough\n  }")
    return ("project bench\n\n" + declared + "stage big {\n  type central\n\n"
            + "\n\n".join(blocks) + "\n}\n")


def _move_threshold(block: str) -> str:
    for token in block.split():
        try:
            value = float(token)
        except ValueError:
            continue
        return block.replace(f" {token}", f" {round(min(1.0, value + 0.075), 3)}", 1)
    return block


def model(text: str) -> StageModel:
    c = compile_text(text)
    assert c.ok, c.diagnostics[:3]
    return StageModel.of(c.artifacts[0].to_artifact())


def best(fn: Callable[[], object], repeat: int, cap: float | None = None) -> float:
    """Best of `repeat` runs; with `cap` (seconds), a run stopped there counts as inf."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        try:
            with time_limit(cap):
                fn()
        except AnalysisStopped:
            return math.inf
        times.append(time.perf_counter() - t)
    return min(times)


def row(rulesets: int, metrics: int, repeat: int, cap: float | None = None
        ) -> tuple[float, float, float, int, int]:
    old_text = policy(rulesets, metrics)
    new_text = policy(rulesets, metrics, edit=True)
    old, new = model(old_text), model(new_text)
    base = best(lambda: compile_text(old_text), repeat)
    t_lint = best(lambda: findings(old), repeat, cap)
    t_diff = best(lambda: behaviour(old, new), repeat, cap)
    nf = len(findings(old)) if t_lint < math.inf else -1
    nr = len(behaviour(old, new)[1]) if t_diff < math.inf else -1
    return base, t_lint, t_diff, nf, nr


def _s(t: float) -> str:
    return f"{t:.2f}s" if t < math.inf else "stopped"


def growth(repeat: int, cap: float) -> None:
    """Issue 20's growth tables: rulesets at 8 metrics, then metrics at 200 rulesets."""
    print(f"\ngrowth (each analysis stopped at {cap:.0f} s)")
    print(f"{'rulesets':>8} {'metrics':>7} {'compile':>9} {'lint':>9} {'diff':>9}")
    cases = [(n, 8) for n in (25, 100, 500, 1000, 2000)] + \
        [(200, m) for m in (2, 4, 8, 12, 16, 20, 24)]
    for n, m in cases:
        base, t_lint, t_diff, _, _ = row(n, m, repeat, cap)
        print(f"{n:>8} {m:>7} {base * 1e3:>7.0f}ms {_s(t_lint):>9} {_s(t_diff):>9}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", action="store_true",
                    help="also issue 20's 1,000-ruleset cases and growth tables")
    ap.add_argument("--cap", type=float, default=60.0,
                    help="seconds after which a --scale analysis is stopped")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    print(f"python {platform.python_version()} on {platform.machine()}, best of {args.repeat}")
    print(f"{'rulesets':>8} {'metrics':>7} {'compile':>9} {'lint':>9} {'diff':>9} "
          f"{'lint/compile':>12} {'diff/compile':>12} {'findings':>8} {'regions':>7}")
    cases = [(200, 8)] + [(n, 8) for n in (25, 50, 100, 400)] + [(200, m) for m in (2, 4, 12)]
    if args.scale:
        cases += [(1000, 12), (1000, 20)]
    for n, m in cases:
        base, t_lint, t_diff, nf, nr = row(n, m, args.repeat, args.cap if args.scale else None)
        print(f"{n:>8} {m:>7} {base * 1e3:>7.1f}ms {t_lint * 1e3:>7.1f}ms {t_diff * 1e3:>7.1f}ms "
              f"{t_lint / base:>11.1f}x {t_diff / base:>11.1f}x {nf:>8} {nr:>7}", flush=True)
    # The worst case for diff: flipping the fail mode changes behaviour wherever any metric
    # can fail, so failure kinds must be modelled across the whole stage.
    for n in (25, 200):
        text = policy(n, 8)
        old = model(text)
        new = model(text.replace("  type central\n", "  type central\n  fail closed\n", 1))
        base = best(lambda t=text: compile_text(t), args.repeat)
        t_diff = best(lambda o=old, w=new: behaviour(o, w), args.repeat)
        print(f"fail-mode flip, {n} rulesets x 8 metrics: diff {t_diff * 1e3:.0f}ms "
              f"({t_diff / base:.0f}x compile), {len(behaviour(old, new)[1])} regions")
    if args.scale:
        growth(1, args.cap)


if __name__ == "__main__":
    main()
