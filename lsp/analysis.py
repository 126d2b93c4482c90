"""What the language server knows about one policy directory: its files (open buffers over
the disk), their compilation, and an index of every name in them. Pure: no protocol here.

A policy directory is the unit `stageguard check DIR` compiles: the `.sg` files beside each
other, so a metric declared in `metrics.sg` is known in `output_guard.sg`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stageguard.compiler import ast
from stageguard.compiler.checker import catalog_of
from stageguard.compiler.diagnostics import Diagnostic, Span
from stageguard.compiler.pipeline import Compilation, compile_sources
from stageguard.compiler.sources import SUFFIX, Source
from stageguard.runtime.catalog import canonical_name
from stageguard.runtime.model import MetricSpec


@dataclass(frozen=True, slots=True)
class Symbol:
    """A name in the source: what it names and where."""

    kind: str          # "metric", "stage", "ruleset", "project"
    name: str          # as written (metrics: canonical)
    span: Span         # the name itself
    node: object       # the declaration (MetricDecl, Stage, Ruleset, ProjectDecl) or Rule
    stage: str | None = None  # a ruleset's stage
    declaration: bool = True


@dataclass
class Index:
    symbols: list[Symbol] = field(default_factory=list)
    # file -> project name
    projects: dict[str, str] = field(default_factory=dict)
    catalogs: dict[str, dict[str, MetricSpec]] = field(default_factory=dict)

    def at(self, file: str, offset: int) -> Symbol | None:
        """The innermost name at `offset` (a reference or a declaration's name)."""
        # The cursor right after a name is on it too (editors put it there after typing).
        found = [s for s in self.symbols
                 if s.span.file == file and s.span.start <= offset <= s.span.end]
        return min(found, key=lambda s: s.span.end - s.span.start) if found else None

    def declarations(self, kind: str, name: str, stage: str | None = None) -> list[Symbol]:
        return [s for s in self.symbols if s.declaration and s.kind == kind and s.name == name
                and (stage is None or s.stage == stage)]

    def references(self, kind: str, name: str, stage: str | None = None) -> list[Symbol]:
        return [s for s in self.symbols if s.kind == kind and s.name == name
                and (stage is None or s.stage == stage)]

    def catalog(self, file: str) -> dict[str, MetricSpec]:
        return self.catalogs.get(self.projects.get(file, ""), {})


def index(files: tuple[ast.PolicyFile, ...]) -> Index:
    idx = Index(catalogs=catalog_of(files))
    for f in files:
        idx.projects[f.path] = f.projects[0].name.value if f.projects else ""
        for item in f.items:
            idx.symbols.extend(_symbols(item))
    return idx


def _symbols(item: object) -> Iterator[Symbol]:
    if isinstance(item, ast.ProjectDecl):
        yield Symbol("project", item.name.value, item.name.span, item)
    elif isinstance(item, ast.MetricDecl):
        yield Symbol("metric", item.name.value, item.name.span, item)
    elif isinstance(item, ast.Stage):
        yield Symbol("stage", item.name.value, item.name.span, item)
        for rs in item.rulesets:
            yield Symbol("ruleset", rs.name.value, rs.name.span, rs, item.name.value)
            for rule in rs.rules:
                yield Symbol("metric", canonical_name(rule.metric.value), rule.metric.span,
                             rule, item.name.value, declaration=False)
    elif isinstance(item, ast.Ruleset):  # a rulesets file's
        yield Symbol("ruleset", item.name.value, item.name.span, item, None)
        for rule in item.rules:
            yield Symbol("metric", canonical_name(rule.metric.value), rule.metric.span, rule,
                         None, declaration=False)


@dataclass
class Analysis:
    folder: Path
    compilation: Compilation
    index: Index
    lint: list[Diagnostic] | None = None  # None: not run yet (or stale)

    def text(self, file: str) -> str | None:
        return self.compilation.sources.get(file)

    def diagnostics(self) -> dict[str, list[Diagnostic]]:
        """Every file's diagnostics, check first then the analysis's; every file is a key,
        so a file whose problems are gone gets an empty list."""
        out: dict[str, list[Diagnostic]] = {f: [] for f in self.compilation.sources}
        for d in (*self.compilation.diagnostics, *(self.lint or ())):
            out.setdefault(d.span.file, []).append(d)
        return out


def folder_sources(folder: Path, buffers: Mapping[str, str]) -> list[Source]:
    """The policy files of `folder` (absolute paths), open buffers in place of the disk."""
    paths = {str(p) for p in folder.glob(f"*{SUFFIX}") if p.is_file()
             and not p.name.startswith(".")}
    paths |= {p for p in buffers if Path(p).parent == folder and p.endswith(SUFFIX)}
    sources = []
    for p in sorted(paths):
        text = buffers.get(p)
        if text is None:
            try:
                text = Path(p).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # unreadable here; `check` says why
        sources.append(Source(p, text.removeprefix("\ufeff")))
    return sources


def analyse(folder: Path, buffers: Mapping[str, str]) -> Analysis:
    compilation = compile_sources(folder_sources(folder, buffers))
    return Analysis(folder, compilation, index(compilation.files))
