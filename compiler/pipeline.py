"""text -> parse -> check -> artifacts, for the CLI and for library users."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from stageguard.compiler.artifacts import compile_stage
from stageguard.compiler.checker import CheckedStage, CheckResult, check
from stageguard.compiler.diagnostics import Diagnostic, has_errors
from stageguard.compiler.parser import parse
from stageguard.compiler.sources import Source, load
from stageguard.runtime.canonical import ArtifactDocument


@dataclass(frozen=True, slots=True)
class Compilation:
    sources: dict[str, str]
    diagnostics: tuple[Diagnostic, ...]
    artifacts: tuple[ArtifactDocument, ...]  # empty whenever there is an error
    stages: tuple[CheckedStage, ...] = ()     # what the artifacts were built from, with spans

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic collector while building large acyclic trees: its passes, triggered
    by allocation counts, cost a third of compile time on big policies and find nothing
    (reference counting frees the trees)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_sources(sources: Sequence[Source],
                    extra: Sequence[Diagnostic] = ()) -> Compilation:
    with _no_cyclic_gc():
        return _compile_sources(sources, extra)


def _compile_sources(sources: Sequence[Source], extra: Sequence[Diagnostic]) -> Compilation:
    result: CheckResult = check([parse(s.text, s.path) for s in sources])
    diagnostics = (*extra, *result.diagnostics)
    artifacts: tuple[ArtifactDocument, ...] = ()
    stages: tuple[CheckedStage, ...] = ()
    if not has_errors(diagnostics):
        stages = result.stages
        artifacts = tuple(compile_stage(stage) for stage in stages)
    return Compilation({s.path: s.text for s in sources}, diagnostics, artifacts, stages)


def compile_paths(paths: Sequence[str]) -> Compilation:
    sources, problems = load(list(paths))
    return compile_sources(sources, problems)


def compile_text(text: str, path: str = "<input>") -> Compilation:
    return compile_sources([Source(path, text)])
