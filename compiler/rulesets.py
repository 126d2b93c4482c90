"""Rulesets written as stageguard source (`ruleset NAME { … }` blocks), as an API call sends
them for a local stage or a central update: parsed from the grammar's `rulesets` start
symbol, checked against the catalog, compiled to artifact rulesets. Diagnostics point into
the text itself, as if it were a file named `<rulesets>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from stageguard.compiler import ast
from stageguard.compiler.checker import CheckedStage, check
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
    result = check([as_stage_file(parsed, SOURCE_NAME, "api", len(text))], extra_metrics=custom)
    problems = [d for d in result.diagnostics if d.is_error]
    if problems:
        raise PolicyError(problems, text)
    (stage,) = result.stages
    from stageguard.compiler.artifacts import document

    return tuple(RulesetSpec.model_validate(r) for r in document(stage)["rulesets"])


def as_stage_file(parsed: ParseResult, path: str, project: str, size: int) -> ParseResult:
    """The parsed rulesets as the one stage (`rulesets`) of a file of `project`, built as AST
    (no text is joined)."""
    if parsed.file is None:
        return parsed
    here = Span(path, 0, 0, 1, 1, 1, 1)
    whole = Span(path, 0, size, 1, 1, 1, 1)  # holds every ruleset, as a stage would
    rulesets: list[ast.StageItem] = []
    for item in parsed.file.items:  # parse_rulesets yields rulesets only
        if isinstance(item, ast.Ruleset):
            rulesets.append(item)
    stage = ast.Stage(ast.Name("rulesets", here), tuple(rulesets), whole)
    file = ast.PolicyFile(path, (ast.ProjectDecl(ast.Name(project, here), here), stage),
                          parsed.file.comments)
    return ParseResult(file, parsed.diagnostics, parsed.error_offsets)


def check_rulesets_files(files: Sequence[tuple[ParseResult, int]],
                         siblings: Sequence[ast.PolicyFile],
                         ) -> tuple[list[Diagnostic], list[CheckedStage]]:
    """Check rulesets files (`*.rulesets.sg`, each parsed with its size) against the metrics
    of the project their directory's policy files declare: as the one stage of a file of
    that project, beside the project's metric declarations only (so nothing else is
    reported twice). The diagnostics point into the rulesets files; the stages (named
    `rulesets`, project as found) are for the analysis, never for a registry."""
    diagnostics: list[Diagnostic] = []
    stages: list[CheckedStage] = []
    for parsed, size in files:
        path = parsed.file.path if parsed.file else (
            parsed.diagnostics[0].span.file if parsed.diagnostics else "")
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        near = [f for f in siblings if (f.path.rsplit("/", 1)[0] if "/" in f.path else "")
                == folder and f.projects]
        projects = sorted({f.projects[0].name.value for f in near})
        project = projects[0] if len(projects) == 1 else "rulesets"
        metric_files = [ParseResult(ast.PolicyFile(f.path, (f.projects[0], *f.metrics), ()),
                                    (), ()) for f in near if f.projects[0].name.value == project]
        result = check([*metric_files, as_stage_file(parsed, path, project, size)])
        diagnostics.extend(d for d in result.diagnostics if d.span.file == path)
        stages.extend(s for s in result.stages if s.span.file == path)
    return diagnostics, stages
