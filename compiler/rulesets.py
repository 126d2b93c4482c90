"""Rulesets written as stageguard source (`ruleset NAME { … }` blocks), as an API call sends
them for a local stage or a central update: parsed from the grammar's `rulesets` start
symbol, checked against the catalog, compiled to artifact rulesets. Diagnostics point into
the text itself, as if it were a file named `<rulesets>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from stageguard.compiler import ast
from stageguard.compiler.checker import check
from stageguard.compiler.diagnostics import Diagnostic, Span, render_all
from stageguard.compiler.parser import ParseResult, parse_rulesets
from stageguard.runtime.catalog import BUILTIN_METRICS
from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.model import MetricSpec, RulesetSpec

SOURCE_NAME = "<rulesets>"


class PolicyError(InvalidRequest):
    """Ruleset source with errors; `diagnostics` holds them, `str()` renders them."""

    def __init__(self, diagnostics: Sequence[Diagnostic], text: str) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__(render_all(self.diagnostics, {SOURCE_NAME: text}))


def rulesets_from_source(text: str, metrics: Sequence[MetricSpec] = ()) -> tuple[RulesetSpec, ...]:
    """Compile `ruleset` blocks. Diagnostics point into `text` itself, as if it were a file
    named `<rulesets>`. The text is parsed as rulesets only (never spliced into a stage), so
    nothing in it can open or close another block."""
    if not isinstance(text, str):
        raise InvalidRequest(f"rulesets source is a string, not {type(text).__name__}")
    parsed = parse_rulesets(text, SOURCE_NAME)
    custom = [m for m in metrics if m.name not in BUILTIN_METRICS]
    result = check([_as_stage_file(parsed, len(text))], extra_metrics=custom)
    problems = [d for d in result.diagnostics if d.is_error]
    if problems:
        raise PolicyError(problems, text)
    (stage,) = result.stages
    from stageguard.compiler.artifacts import document

    return tuple(RulesetSpec.model_validate(r) for r in document(stage)["rulesets"])


def _as_stage_file(parsed: ParseResult, size: int) -> ParseResult:
    """The parsed rulesets as the one stage of a file, built as AST (no text is joined)."""
    if parsed.file is None:
        return parsed
    here = Span(SOURCE_NAME, 0, 0, 1, 1, 1, 1)
    whole = Span(SOURCE_NAME, 0, size, 1, 1, 1, 1)  # holds every ruleset, as a stage would
    rulesets: list[ast.StageItem] = []
    for item in parsed.file.items:  # parse_rulesets yields rulesets only
        if isinstance(item, ast.Ruleset):
            rulesets.append(item)
    stage = ast.Stage(ast.Name("rulesets", here), tuple(rulesets), whole)
    file = ast.PolicyFile(SOURCE_NAME, (ast.ProjectDecl(ast.Name("api", here), here), stage),
                          parsed.file.comments)
    return ParseResult(file, parsed.diagnostics, parsed.error_offsets)
