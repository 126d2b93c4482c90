"""Hypothesis strategies for stageguard policies (the `testing` extra).

- `payloads(stage, ...)`: metric values that hit every threshold, label and vocabulary,
  missing values and (optionally) metric failures; `triggering=` / `not_triggering=` /
  `winning=` draw only payloads with that fate, derived exactly from the analysis (no
  filtering, so no discarded examples).
- `stages()` / `policies()`: well-typed random stages and policy files (source text, syntax
  tree and artifact) for tool authors and for property tests of rule semantics.

See docs/testing.md for a worked example.
"""

from stageguard.testing.generate import GeneratedPolicy, policies, stages
from stageguard.testing.payloads import as_stage, payloads

__all__ = ["GeneratedPolicy", "as_stage", "payloads", "policies", "stages"]
