"""text -> parse -> check -> artifacts, for the CLI and for library users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stageguard.compiler.artifacts import compile_stage
from stageguard.compiler.ast import PolicyFile
from stageguard.compiler.checker import CheckedStage, CheckResult, check
from stageguard.compiler.diagnostics import Diagnostic, has_errors
from stageguard.compiler.parser import parse, parse_rulesets
from stageguard.compiler.rulesets import check_rulesets_files
from stageguard.compiler.sources import Source, is_rulesets_file, load
from stageguard.runtime import collector
from stageguard.runtime.canonical import ArtifactDocument


@dataclass(frozen=True, slots=True)
class Compilation:
    sources: dict[str, str]
    diagnostics: tuple[Diagnostic, ...]
    artifacts: tuple[ArtifactDocument, ...]  # empty whenever there is an error
    stages: tuple[CheckedStage, ...] = ()     # what the artifacts were built from, with spans
    files: tuple[PolicyFile, ...] = ()        # the syntax trees (comments included) parsed
    # Each rulesets file's rulesets as a stage named `rulesets`, for the analysis (never
    # published: a local stage's rulesets come with each invocation).
    rulesets: tuple[CheckedStage, ...] = ()

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


def compile_sources(sources: Sequence[Source],
                    extra: Sequence[Diagnostic] = ()) -> Compilation:
    with collector.paused():
        return _compile_sources(sources, extra)


def _compile_sources(sources: Sequence[Source], extra: Sequence[Diagnostic]) -> Compilation:
    plain = [s for s in sources if not is_rulesets_file(s.path)]
    parsed = [parse(s.text, s.path) for s in plain]
    result: CheckResult = check(parsed)
    rulesets_parsed = [(parse_rulesets(s.text, s.path), len(s.text)) for s in sources
                       if is_rulesets_file(s.path)]
    siblings = [r.file for r in parsed if r.file is not None]
    more, rulesets_stages = check_rulesets_files(rulesets_parsed, siblings)
    diagnostics = (*extra, *result.diagnostics, *more)
    artifacts: tuple[ArtifactDocument, ...] = ()
    stages: tuple[CheckedStage, ...] = ()
    if not has_errors(diagnostics):
        stages = result.stages
        artifacts = tuple(compile_stage(stage) for stage in stages)
    files = tuple(r.file for r in [*parsed, *(p for p, _ in rulesets_parsed)]
                  if r.file is not None)
    return Compilation({s.path: s.text for s in sources}, diagnostics, artifacts, stages, files,
                       tuple(rulesets_stages) if not has_errors(diagnostics) else ())


def compile_paths(paths: Sequence[str]) -> Compilation:
    sources, problems = load(list(paths))
    return compile_sources(sources, problems)


def compile_text(text: str, path: str = "<input>") -> Compilation:
    return compile_sources([Source(path, text)])
