"""The limits pass: a policy over any limit is an SG0311 error at its place and builds no
artifact; a policy at every limit builds one the runtime serves."""

from __future__ import annotations

import pytest

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime import limits
from stageguard.runtime.engine import Runtime
from stageguard.runtime.model import Artifact

RULE = "    when output_toxicity > 0.5\n"


def _stage(ruleset: str = "", *, stage: str = "s", project: str = "p", before: str = "",
           description: str = "d") -> str:
    body = ruleset or "  ruleset r {\n" + RULE + "  }\n"
    return (f"project {project}\n{before}stage {stage} {{\n  description \"{description}\"\n"
            f"{body}}}\n")


def _ruleset(extra: str = "", name: str = "r", rules: int = 1) -> str:
    return f"  ruleset {name} {{\n" + RULE * rules + extra + "  }\n"


def _choices(n: int, size: int = 1) -> str:
    return "    override {\n" + "".join(f'      choice "{"c" * size}"\n' for _ in range(n)) + \
        "    }\n"


def _notify(n: int, url_size: int = 20) -> str:
    url = "https://h.example/" + "a" * (url_size - len("https://h.example/"))
    return "".join(f'    notify "{url}"\n' for _ in range(n))


def _labels(n: int, size: int = 1) -> str:
    labels = ", ".join(f'"{"l" * (size - len(str(i)))}{i}"' for i in range(n))
    return f"    when output_pii any [{labels}]\n"


N = limits.NAME
CASES = {
    "project name": (_stage(project="p" * N), _stage(project="p" * (N + 1))),
    "stage name": (_stage(stage="s" * N), _stage(stage="s" * (N + 1))),
    "ruleset name": (_stage(_ruleset(name="r" * N)), _stage(_ruleset(name="r" * (N + 1)))),
    "metric name": (_stage(before=f"metric {'m' * N} {{\n  type score\n}}\n"),
                    _stage(before=f"metric {'m' * (N + 1)} {{\n  type score\n}}\n")),
    "description": (_stage(description="x" * limits.DESCRIPTION),
                    _stage(description="x" * (limits.DESCRIPTION + 1))),
    "url": (_stage(_ruleset(_notify(1, limits.URL))),
            _stage(_ruleset(_notify(1, limits.URL + 1)))),
    "subscriptions": (_stage(_ruleset(_notify(limits.SUBSCRIPTIONS))),
                      _stage(_ruleset(_notify(limits.SUBSCRIPTIONS + 1)))),
    "choices": (_stage(_ruleset(_choices(limits.CHOICES))),
                _stage(_ruleset(_choices(limits.CHOICES + 1)))),
    "choice": (_stage(_ruleset(_choices(1, limits.CHOICE))),
               _stage(_ruleset(_choices(1, limits.CHOICE + 1)))),
    "rules": (_stage(_ruleset(rules=limits.RULES)), _stage(_ruleset(rules=limits.RULES + 1))),
}


@pytest.mark.parametrize("what", sorted(CASES))
def test_at_the_limit_builds_and_serves_over_it_is_sg0311(what: str, tmp_path) -> None:
    at, over = CASES[what]
    built = compile_text(at, "at.sg")
    assert built.ok, [d.message for d in built.diagnostics]
    (doc,) = built.artifacts
    path = tmp_path / "a.json"
    path.write_bytes(doc.to_bytes(1))
    with Runtime.from_files(path) as rt:  # the runtime's models accept what check passed
        assert isinstance(rt.artifact(project=doc.project, stage_name=doc.stage), Artifact)
    refused = compile_text(over, "over.sg")
    assert not refused.ok and refused.artifacts == ()
    assert [d.code for d in refused.diagnostics if d.is_error] == ["SG0311"]
    (d,) = refused.diagnostics
    assert "this one has" in d.message


def test_label_lists_over_the_limit() -> None:
    over = compile_text(_stage(_ruleset(_labels(limits.LABELS + 1))), "l.sg")
    assert "SG0311" in [d.code for d in over.diagnostics] and not over.artifacts
    long_label = compile_text(_stage(_ruleset(_labels(1, limits.LABEL + 1))), "l.sg")
    assert "SG0311" in [d.code for d in long_label.diagnostics]


def test_the_limit_diagnostic_points_at_the_first_item_too_many() -> None:
    over = compile_text(_stage(_ruleset(rules=limits.RULES + 1)), "r.sg")
    (d,) = over.diagnostics
    assert d.span.line == 5 + limits.RULES  # the 1,001st `when` line
