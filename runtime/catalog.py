"""The built-in metric catalog of docs/semantics.md and its legacy aliases."""

from __future__ import annotations

import re
from functools import lru_cache
from types import MappingProxyType

from stageguard.runtime.model import MetricSpec, MetricType

PII_LABELS = (
    "account_info",
    "address",
    "credit_card_info",
    "date_of_birth",
    "email",
    "name",
    "network_info",
    "password",
    "phone_number",
    "ssn",
    "username",
)
PROMPT_INJECTION_LABELS = (
    "impersonation",
    "obfuscation",
    "simple_instruction",
    "few_shot",
    "new_context",
)
TONE_LABELS = (
    "anger",
    "annoyance",
    "confusion",
    "fear",
    "joy",
    "love",
    "sadness",
    "surprise",
    "neutral",
)


def _score(name: str, description: str) -> MetricSpec:
    return MetricSpec(
        name=name, type=MetricType.SCORE, description=description,
        minimum=0.0, maximum=1.0, builtin=True,
    )


def _labels(name: str, kind: MetricType, labels: tuple[str, ...], description: str) -> MetricSpec:
    return MetricSpec(name=name, type=kind, description=description, labels=labels, builtin=True)


_BUILTINS = (
    _score("input_toxicity", "Toxicity of the input text"),
    _score("output_toxicity", "Toxicity of the output text"),
    _score("input_sexist", "Sexism in the input text"),
    _score("output_sexist", "Sexism in the output text"),
    _score("context_adherence", "How closely the output keeps to the supplied context"),
    _score("completeness", "How much of the relevant context the output covers"),
    _score("tool_error_rate", "Share of tool calls that failed"),
    _score("tool_selection_quality", "Whether the agent picked the right tool and arguments"),
    _score("action_advancement", "Whether the step advanced the user's goal"),
    _score("action_completion", "Whether the agent completed the user's goal"),
    _labels("input_pii", MetricType.LABELS, PII_LABELS, "PII found in the input text"),
    _labels("output_pii", MetricType.LABELS, PII_LABELS, "PII found in the output text"),
    _labels("prompt_injection", MetricType.LABELS, PROMPT_INJECTION_LABELS,
            "Prompt-injection techniques detected in the input"),
    MetricSpec(name="input_length", type=MetricType.NUMBER, minimum=0.0, builtin=True,
               description="Characters in the input text"),
    MetricSpec(name="output_length", type=MetricType.NUMBER, minimum=0.0, builtin=True,
               description="Characters in the output text"),
    _labels("input_tone", MetricType.LABEL, TONE_LABELS, "Dominant emotional tone of the input"),
    _labels("output_tone", MetricType.LABEL, TONE_LABELS, "Dominant emotional tone of the output"),
)

BUILTIN_METRICS: MappingProxyType[str, MetricSpec] = MappingProxyType(
    {m.name: m for m in _BUILTINS}
)

# Legacy and alternative spellings Galileo accepts, resolved to one canonical name so that two
# spellings of the same rule compile to the same artifact.
ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "toxicity": "output_toxicity",
        "sexist": "output_sexist",
        "pii": "output_pii",
        "tone": "output_tone",
        "context_adherence_luna": "context_adherence",
        "adherence_nli": "context_adherence",
    }
)


def canonical_name(name: str) -> str:
    """The catalog name for `name`: a legacy alias followed, or a built-in metric's display
    label as Galileo's SDK writes it (`GalileoMetrics.input_toxicity` is "Input Toxicity",
    its small-model variant "Input Toxicity (SLM)"; "PII") resolved; anything else, custom
    metrics included, as written."""
    found = ALIASES.get(name)
    if found is not None:
        return found
    if name in BUILTIN_METRICS:
        return name
    return _display_label(name)


@lru_cache(maxsize=1024)  # payload keys are the caller's: bounded
def _display_label(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_").replace("sexism", "sexist")
    for candidate in (slug, re.sub(r"_(?:slm|luna)$", "", slug)):
        candidate = ALIASES.get(candidate, candidate)
        if candidate in BUILTIN_METRICS:
            return candidate
    return name
