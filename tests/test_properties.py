"""Totality and round-trip properties of the compiler front end."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from stageguard.compiler.pipeline import Compilation, compile_text
from stageguard.compiler.unparse import string_literal
from stageguard.runtime.canonical import artifact_bytes
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.model import MetricType
from stageguard.runtime.registry import parse_artifact
from tests.conftest import POLICIES
from tests.profiles import examples

EXAMPLES = [p.read_text(encoding="utf-8") for p in sorted(POLICIES.glob("*.sg"))]
TOKENS = ["project", "stage", "ruleset", "metric", "when", "override", "choice", "notify",
          "passthrough", "description", "type", "fail", "on", "is", "not", "empty", "any",
          "all", "contains", "{", "}", "[", "]", ",", ">", ">=", "==", "!=", '"', '"""', "\n",
          "#", "0.5", "-1", "1e400", "output_pii", "input_toxicity", '"ssn"', "\\", "=",
          "'", "\t", "\u00e9", "\ufeff", "\x00"]


def assert_well_formed(text: str, result: Compilation) -> None:
    for d in result.diagnostics:
        s = d.span
        assert 0 <= s.start <= s.end <= len(text), d
        assert s.line == text.count("\n", 0, s.start) + 1, d
        assert s.column == s.start - (text.rfind("\n", 0, s.start) + 1) + 1, d
        assert d.code.startswith("SG") and d.message
    if result.ok:
        for art in result.artifacts:
            # Valid under the runtime's models and digest check, and byte-identical to the
            # models' own serialisation.
            data = art.to_bytes(1)
            assert artifact_bytes(parse_artifact(data)) == data
    else:
        assert result.artifacts == ()


@examples(10, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_compiles_or_gets_our_diagnostics(text: str) -> None:
    assert_well_formed(text, compile_text(text, "f.sg"))


@examples(10, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([*TOKENS, " ", " ", "\n", "x"]), max_size=80))
def test_token_soup_compiles_or_gets_our_diagnostics(tokens: list[str]) -> None:
    text = " ".join(tokens)
    assert_well_formed(text, compile_text(text, "f.sg"))


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.text(max_size=5)) + text[j:]
        else:
            text = text[:i] + text[i:j] + text[i:]
    return text


@examples(5, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_policy())
# Found by this test: recovery inserted an empty metric name, which reached MetricSpec.
@example("project p\nmetric answer_words metric{\n  type number\n}\n")
# ... and a url with an unbalanced IPv6 bracket, which made urlsplit raise.
@example('project p\nstage s {\n  ruleset r {\n    when input_toxicity > 0.5\n'
         '    notify "https://[hooks.example.com/x"\n  }\n}\n')
def test_mutated_policies_compile_or_get_our_diagnostics(text: str) -> None:
    assert_well_formed(text, compile_text(text, "m.sg"))


# ---- generated well-typed policies ----------------------------------------------------------

NUMERIC = [m for m in BUILTIN_METRICS.values() if m.type is MetricType.SCORE]
LABELS = [m for m in BUILTIN_METRICS.values() if m.type is MetricType.LABELS]
LABEL = [m for m in BUILTIN_METRICS.values() if m.type is MetricType.LABEL]


def _q(s: str) -> str:
    return '"' + s + '"'


@st.composite
def rule_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["num", "labels", "label"]))
    if kind == "num":
        m = draw(st.sampled_from(NUMERIC))
        op = draw(st.sampled_from([">", "<", ">=", "<=", "==", "!="]))
        value = draw(st.floats(0, 1, allow_nan=False))
        return f"{m.name} {op} {value!r}"
    if kind == "labels":
        m = draw(st.sampled_from(LABELS))
        labels = draw(st.lists(st.sampled_from(m.labels), max_size=3, unique=True))
        op = draw(st.sampled_from(["contains", "any", "all", "is empty", "is not empty"]))
        if op == "contains":
            return f"{m.name} contains {_q(draw(st.sampled_from(m.labels)))}"
        if op in ("any", "all"):
            return f"{m.name} {op} [{', '.join(map(_q, labels or [m.labels[0]]))}]"
        return f"{m.name} {op}"
    m = draw(st.sampled_from(LABEL))
    if draw(st.booleans()):
        return f"{m.name} {draw(st.sampled_from(['==', '!=']))} {_q(m.labels[0])}"
    return f"{m.name} any [{', '.join(map(_q, m.labels[:2]))}]"


# Any text at all, written through the literal encoder the tools use (escapes included).
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).map(string_literal)


@st.composite
def policy(draw: st.DrawFn) -> tuple[str, int]:
    n = draw(st.integers(1, 6))
    lines = ["project gen", "stage s {", "  type central"]
    for i in range(n):
        lines.append(f"  ruleset r{i} {{")
        if draw(st.booleans()):
            lines.append(f"    description {draw(ANY_TEXT)}")
        for rule in draw(st.lists(rule_line(), min_size=1, max_size=4)):
            lines.append(f"    when {rule}")
        if draw(st.booleans()):
            lines.append("    override {")
            for c in draw(st.lists(ANY_TEXT, min_size=1, max_size=3)):
                lines.append(f"      choice {c}")
            lines.append("    }")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n", n


@examples(2)
@given(policy())
def test_generated_policies_compile(generated: tuple[str, int]) -> None:
    text, n = generated
    result = compile_text(text, "g.sg")
    assert result.ok, [d.message for d in result.diagnostics]
    (art,) = result.artifacts
    assert len(art.to_artifact().rulesets) == n
    assert_well_formed(text, result)


@examples(1.5)
@given(policy(), st.sampled_from(["\n", "  ", "\n# note\n", "\t"]))
def test_layout_never_changes_the_digest(generated: tuple[str, int], filler: str) -> None:
    text, _ = generated
    # Encoded strings hold no raw newline, so this only moves tokens around.
    relaid = text.replace("\n", "\n" + filler)
    a = compile_text(text, "a.sg").artifacts[0]
    b = compile_text(relaid, "b.sg").artifacts[0]
    assert a.digest == b.digest
