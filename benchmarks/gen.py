"""Deterministic generator of large realistic policies for benchmarks."""

from __future__ import annotations

import random

_SCORES = ("input_toxicity", "output_toxicity", "context_adherence", "completeness",
           "input_sexist", "output_sexist")
_PII = ("ssn", "email", "credit_card_info", "phone_number", "address", "password")


def big_policy(rulesets: int, seed: int = 7) -> str:
    """One central stage with `rulesets` rulesets, about five lines each."""
    rnd = random.Random(seed)
    out = ["project bench", "", "stage big {", "  type central",
           '  description "Generated benchmark stage"', ""]
    for i in range(rulesets):
        out.append(f"  ruleset r{i} {{")
        kind = i % 4
        if kind == 0:
            out.append(f"    when {rnd.choice(_SCORES)} > {rnd.randint(1, 99) / 100}")
        elif kind == 1:
            out.append(f'    when output_pii contains "{rnd.choice(_PII)}"')
        elif kind == 2:
            labels = ", ".join(f'"{p}"' for p in rnd.sample(_PII, 2))
            out.append(f"    when input_pii any [{labels}]")
        else:
            out.append("    when prompt_injection is not empty")
        out.append(f"    when {rnd.choice(_SCORES)} <= {rnd.randint(1, 99) / 100}")
        if i % 2:
            out.append(f'    override {{ choice "Blocked by rule {i}." }}')
        else:
            out.append("    passthrough")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
