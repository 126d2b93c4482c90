from __future__ import annotations

import gc
import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stageguard.compiler import ast
from stageguard.compiler.parser import parse, parse_rulesets
from stageguard.runtime import limits
from stageguard.runtime.model import Operator
from tests.conftest import src

FULL = src('''
    project shop  # trailing comment
    stage out {
      type central
      ruleset r1 {
        when output_pii any ["ssn", "email"]
        when output_toxicity >= 0.5
        when input_pii is empty
        when prompt_injection is not empty
        when output_pii contains "ssn"
        when output_pii all []
        when output_tone != "joy"
        override {
          choice "a"
          choice """
            first
              second "q"
            third\\tx
            """
        }
        notify "https://h.example/x" on triggered, failed
      }
    }
''')


def test_full_file_lowers_to_typed_nodes_with_spans() -> None:
    r = parse(FULL, "f.sg")
    assert r.diagnostics == ()
    assert r.file is not None
    (project,) = r.file.projects
    assert project.name.value == "shop"
    (stage,) = r.file.stages
    (rs,) = stage.rulesets
    ops = [rule.operator for rule in rs.rules]
    assert ops == [Operator.ANY, Operator.GTE, Operator.EMPTY, Operator.NOT_EMPTY,
                   Operator.CONTAINS, Operator.ALL, Operator.NEQ]
    first = rs.rules[0]
    assert (first.span.line, first.span.column) == (5, 5)
    assert FULL[first.metric.span.start:first.metric.span.end] == "output_pii"
    assert FULL[first.operator_span.start:first.operator_span.end] == "any"
    assert isinstance(first.target, ast.ListLit)
    assert [i.value for i in first.target.items] == ["ssn", "email"]  # type: ignore[union-attr]
    empty = rs.rules[2]
    assert FULL[empty.operator_span.start:empty.operator_span.end] == "is empty"
    assert empty.target is None
    assert rs.rules[5].target == ast.ListLit((), rs.rules[5].target.span)  # type: ignore[union-attr]
    notify = next(i for i in rs.items if isinstance(i, ast.Notify))
    assert [s.value for s in notify.statuses] == ["triggered", "failed"]
    assert [c.text for c in r.file.comments] == ["# trailing comment"]


def test_multiline_string_strips_closing_indent_and_first_newline() -> None:
    r = parse(FULL, "f.sg")
    override = next(i for i in r.file.stages[0].rulesets[0].items  # type: ignore[union-attr]
                    if isinstance(i, ast.Override))
    assert override.choices[1].value == 'first\n  second "q"\nthird\tx'
    assert override.choices[1].multiline


@pytest.mark.parametrize(("literal", "value"), [
    (r'"a\"b"', 'a"b'),
    (r'"back\\slash"', "back\\slash"),
    (r'"\u00e9t\u00e9"', "été"),
    (r'"tab\there"', "tab\there"),
    ('"ünïcødé ✓"', "ünïcødé ✓"),
])
def test_string_escapes(literal: str, value: str) -> None:
    r = parse(f"project p\nstage s {{ description {literal} }}")
    assert r.diagnostics == ()
    desc = r.file.stages[0].items[0]  # type: ignore[union-attr]
    assert isinstance(desc, ast.Description)
    assert desc.text.value == value


def test_unknown_escape_is_reported_once_with_its_span() -> None:
    text = 'project p\nstage s { description "bad \\q" }'
    r = parse(text, "e.sg")
    assert [d.code for d in r.diagnostics] == ["SG0005"]
    assert r.diagnostics[0].span.line == 2


def test_multiline_string_indented_less_than_closing_quotes() -> None:
    text = 'project p\nstage s {\n  description """\n    ok\n  bad\n    """\n}\n'
    assert [d.code for d in parse(text).diagnostics] == ["SG0006"]


def test_huge_number_is_reported_not_infinite() -> None:
    r = parse("project p\nmetric m { type number max 1e999 }")
    assert [d.code for d in r.diagnostics] == ["SG0007"]


def test_keywords_are_still_usable_as_names() -> None:
    # The contextual lexer only treats `stage` as a keyword where one may stand.
    r = parse("project stage\nstage when { ruleset type { when any > 1 } }")
    assert r.diagnostics == ()
    assert r.file.stages[0].name.value == "when"  # type: ignore[union-attr]


# ---- recovery: one diagnostic per mistake, the rest of the file still parsed ------------------

BROKEN = src('''
    project p
    stage s {
      ruleset a {
        wen output_toxicity > 0.5
        when output_toxicity = 0.5
        description "unterminated
        when x > 1
      ruleset b {
        when y >
        when z > 2
        override { choice 'hi' }
      }
    }
    stage t {
      ruleset c {
        when q is empty
''')


def test_recovery_reports_each_mistake_once() -> None:
    r = parse(BROKEN, "b.sg")
    got = [(d.code, d.span.line) for d in r.diagnostics]
    assert got == [
        ("SG0001", 4),  # `wen`
        ("SG0002", 5),  # `=`
        ("SG0003", 6),  # unterminated string
        ("SG0001", 8),  # `ruleset` inside a ruleset: missing `}`
        ("SG0001", 10),  # `when` where a value was expected
        ("SG0002", 11),  # single quote
        ("SG0004", 17),  # end of file inside a block
    ]


def test_recovery_keeps_the_structure_after_errors() -> None:
    r = parse(BROKEN, "b.sg")
    assert r.file is not None
    shape = [(s.name.value, [(rs.name.value, [ru.metric.value for ru in rs.rules])
                             for rs in s.rulesets]) for s in r.file.stages]
    assert shape == [("s", [("a", ["x"]), ("b", ["y", "z"])]), ("t", [("c", ["q"])])]


def test_misspelt_keyword_gets_a_suggestion() -> None:
    r = parse("project p\nstage s {\n  ruleset a {\n    wen x > 1\n  }\n}\n")
    (d,) = r.diagnostics
    assert d.help == "did you mean `when`?"
    assert "expected" in d.message and "`when`" in d.message


def test_missing_closing_brace_suggests_it() -> None:
    r = parse("project p\nstage s {\n  ruleset a {\n    when x > 1\n  ruleset b {\n"
              "    when y > 1\n  }\n}\n")
    (d,) = r.diagnostics
    assert d.span.line == 5
    assert d.help is not None and "`}`" in d.help


def test_unterminated_multiline_string_stops_at_end() -> None:
    r = parse('project p\nstage s {\n  description """\n  text\n}\n')
    assert r.diagnostics[0].code == "SG0003"
    assert "multi-line" in r.diagnostics[0].message


def test_garbage_is_bounded() -> None:
    r = parse("@" * 5000)
    assert 1 <= len(r.diagnostics) <= 50


# ---- hostile input: linear time, bounded errors, threads that do not wait ------------------

def _valid_file(rulesets: int) -> str:
    body = "".join(f"  ruleset r{i} {{\n    when output_toxicity > 0.5\n  }}\n"
                   for i in range(rulesets))
    return "project p\nstage s {\n" + body + "}\n"


def _seconds(text: str) -> float:
    """The best of three parses, with the cyclic collector off: a collection's pause grows
    with the whole test process's heap, not with this input."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(3):
            started = time.perf_counter()
            parse(text, "h.sg")
            best = min(best, time.perf_counter() - started)
    finally:
        gc.enable()
    return best


_BASELINE: list[float] = []


def _per_byte_baseline() -> float:
    """Seconds per byte to parse a valid file, measured in this run (a ratio against it is
    what the tests assert, never a time: machines here drift by ±40%)."""
    if not _BASELINE:
        text = _valid_file(400)
        _BASELINE.append(_seconds(text) / len(text))
    return _BASELINE[0]


_HOSTILE_PIECES = st.sampled_from([
    "ruleset", "stage", "project", "when", "x", ">", "0.5", "{", "}", "[", "]", ",", '"s"',
    '"', '"""', "override", "choice", "notify", "on", "\x00", "=", ";", "'", "  ", "\n",
    "#c\n", "1e999", "\\", "é", "\ud800",
])


@given(prefix_rulesets=st.integers(0, 300), junk=st.lists(_HOSTILE_PIECES, min_size=1,
                                                          max_size=400))
@example(prefix_rulesets=300, junk=[" w"] * 40)  # the report's 13 KB / 10.7 s input
@example(prefix_rulesets=0, junk=["\x00"] * 400)
@example(prefix_rulesets=300, junk=["ruleset", "{", "when", "x", ">", "}", "]", "'"] * 3_000)
def test_parse_time_is_linear_in_the_input_whatever_it_holds(prefix_rulesets: int,
                                                             junk: list[str]) -> None:
    text = _valid_file(prefix_rulesets)[:-2] + " ".join(junk) + "\n}\n"
    bound = 20 * _per_byte_baseline() * len(text) + 0.02
    assert _seconds(text) <= bound


def test_every_error_counts_toward_the_cap() -> None:
    # Consecutive stray words report one diagnostic but each costs a recovery: the cap
    # counts them all, and says why it stopped.
    r = parse("project p\n" + "stray " * 10_000, "f.sg")
    assert r.diagnostics[-1].code == "SG0008"
    assert "too many syntax errors" in r.diagnostics[-1].message
    assert len(r.diagnostics) <= 50
    r = parse("\x00" * 400_000, "nul.sg")
    assert [d.code for d in r.diagnostics] == ["SG0002", "SG0008"]


def test_files_and_strings_over_the_limits_are_diagnosed() -> None:
    huge = parse(" " * (limits.SOURCE + 1), "big.sg")
    assert (huge.file, [d.code for d in huge.diagnostics]) == (None, ["SG0008"])
    assert "16,777,216 bytes" in (huge.diagnostics[0].help or "")
    long = '"' + "x" * (limits.STRING + 1) + '"'
    r = parse(f"project p\nstage s {{\n  description {long}\n}}\n", "f.sg")
    assert [d.code for d in r.diagnostics] == ["SG0008"]


def test_escaped_surrogate_pairs_join_and_lone_halves_are_errors() -> None:
    r = parse('project p\nstage s {\n  description "\\ud83d\\ude00"\n}\n', "f.sg")
    assert r.diagnostics == () and r.file is not None
    assert r.file.stages[0].items[0].text.value == "\U0001f600"  # type: ignore[union-attr]
    r = parse('project p\nstage s {\n  description "a\\udc00"\n}\n', "f.sg")
    assert [d.code for d in r.diagnostics] == ["SG0005"]
    assert r.file is not None
    assert r.file.stages[0].items[0].text.value == "a\ufffd"  # type: ignore[union-attr]


def test_a_lone_surrogate_in_the_text_itself_is_reported_where_it_is() -> None:
    r = parse('project p\nstage s {\n  description "a\ud800"\n}\n', "f.sg")
    (d,) = r.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("SG0002", 3, 17)
    assert "U+D800" in (d.help or "")


def test_parse_rulesets_reads_rulesets_only() -> None:
    r = parse_rulesets('ruleset a {\n  when x > 1\n}\n}\nstage z {\n', "<rulesets>")
    assert r.diagnostics[0].code == "SG0001" and r.diagnostics[0].span.line == 4
    ok = parse_rulesets("ruleset a {\n  when x > 1\n}\nruleset b {\n  when y > 1\n}\n")
    assert ok.diagnostics == () and ok.file is not None
    assert [type(i) for i in ok.file.items] == [ast.Ruleset, ast.Ruleset]


def test_parses_in_threads_do_not_wait_for_each_other() -> None:
    # Each thread has its own parser: while one thread parses a large file, a small parse
    # in another finishes long before it (with one shared parser behind a lock it had to
    # wait for the whole large parse).
    large = _valid_file(6_000)
    small = _valid_file(2)
    done: dict[str, float] = {}
    started = threading.Event()

    def parse_large() -> None:
        started.set()
        parse(large, "large.sg")
        done["large"] = time.perf_counter()

    worker = threading.Thread(target=parse_large)
    worker.start()
    started.wait()
    time.sleep(0.01)
    parse(small, "small.sg")
    done["small"] = time.perf_counter()
    worker.join()
    assert done["small"] < done["large"]
