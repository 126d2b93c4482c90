"""PII scorer benchmark: cost per KB of adversarial texts from 1 KB to 1 MB, against plain
prose measured in the same run; and the backtracking detector it replaced, on the sizes it
can finish.

Run: .venv/bin/python benchmarks/bench_pii.py [--repeat R]
Target (issue 12): per-KB cost flat from 1 KB to 1 MB on adversarial inputs.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compile import timed

from stageguard.runtime import pii
from tests import pii_reference

PROSE = ("Thanks for reaching out! Your order shipped on Tuesday and should arrive within "
         "three to five business days. If anything looks wrong, reply to this message. ")

# Each is a unit repeated to the size: what made a pattern of the old detector backtrack,
# or what makes the new one find (and check) the most candidates.
HOSTILE: dict[str, Callable[[int], str]] = {
    "account + spaces": lambda n: "account" + " " * (n - 8) + "x",
    "a. repeated": lambda n: ("a." * n)[:n],
    "a@ repeated": lambda n: ("a@" * n)[:n],
    "digit groups": lambda n: ("4111 " * n)[:n],
    "single digits": lambda n: ("4 " * n)[:n],
    "dotted digits": lambda n: ("1.2.3." * n)[:n],
    "colons and hex": lambda n: ("fe:" * n)[:n],
    "born + words": lambda n: ("born " + "word " * n)[:n],
}
SIZES = (1 << 10, 10 << 10, 100 << 10, 1 << 20)


def best(fn: Callable[[], object], repeat: int) -> float:
    return min(timed(fn, repeat))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}")
    print("| input | 1 KB | 10 KB | 100 KB | 1 MB | 1 MB ÷ 1 KB per KB |")
    print("|---|---|---|---|---|---|")
    rows = {"prose (baseline)": lambda n: (PROSE * (n // len(PROSE) + 1))[:n], **HOSTILE}
    for name, make in rows.items():
        per_kb = []
        for size in SIZES:
            text = make(size)
            per_kb.append(best(lambda t=text: pii.detect(t), args.repeat) / (size / 1024))
        cells = " | ".join(f"{x * 1e6:,.0f} µs/KB" for x in per_kb)
        print(f"| {name} | {cells} | {per_kb[-1] / per_kb[0]:.2f} |")
    print()
    print("The backtracking detector (tests/pii_reference.py) on the first inputs:")
    for name in ("account + spaces", "a. repeated"):
        for size in (1 << 9, 1 << 10, 2 << 10):
            text = HOSTILE[name](size)
            old = best(lambda t=text: pii_reference.detect(t), 1)
            new = best(lambda t=text: pii.detect(t), args.repeat)
            print(f"  {name}, {size:,} B: old {old * 1e3:,.1f} ms, new {new * 1e3:,.2f} ms "
                  f"({old / new:,.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
