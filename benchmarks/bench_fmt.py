"""Formatter benchmark: `fmt` of the 10,000-ruleset generated policy (50k lines), plain and
with a trailing comment on every rule, against compiling the same text in the same run.
fmt parses twice and prints twice (its safety check), so ~2-3x compile is the floor.

Run: .venv/bin/python benchmarks/bench_fmt.py [--rulesets N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import big_policy

from stageguard.compiler.formatter import format_text
from stageguard.compiler.pipeline import compile_text


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rulesets", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    plain = big_policy(args.rulesets)
    commented = "\n".join(line + ("  # note" if line.strip().startswith("when") else "")
                          for line in plain.splitlines()) + "\n"
    base = best(lambda: compile_text(plain), args.repeat)
    print(f"{len(plain.splitlines())} lines; compile {base:.2f}s")
    for name, text in (("plain", plain), ("a comment per rule", commented)):
        t = best(lambda text=text: format_text(text, "big.sg"), args.repeat)
        print(f"fmt, {name}: {t:.2f}s = {t / base:.1f}x compile, "
              f"{len(text.splitlines()) / t:,.0f} lines/s")


if __name__ == "__main__":
    main()
