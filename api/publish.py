"""Publish one stage from stageguard source into a served registry: the server's
`POST /stages/{name}/source`.

The source is compiled and checked as `stageguard build` would, and the stage's webhook urls
are checked against the serving runtime's allowlist. Any error refuses the whole request with
diagnostics (spans into the request's own files) and nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from stageguard.compiler.checker import CheckedStage
from stageguard.compiler.diagnostics import (
    Diagnostic,
    Span,
    error,
    render_all,
    span_at,
)
from stageguard.compiler.pipeline import compile_sources
from stageguard.compiler.sources import Source
from stageguard.runtime.engine import Runtime, StageInfo


class SourceRejected(Exception):
    def __init__(self, diagnostics: tuple[Diagnostic, ...], sources: Mapping[str, str]) -> None:
        self.diagnostics = diagnostics
        self.sources = dict(sources)
        super().__init__(render_all(diagnostics, sources))


@dataclass(frozen=True, slots=True)
class SourcePublished:
    stage: StageInfo
    created: bool
    diagnostics: tuple[Diagnostic, ...]  # warnings and notes


def _first_line(file: str, text: str) -> Span:
    end = text.find("\n")
    return span_at(file, text, 0, end if end >= 0 else len(text))


def _url_span(stage: CheckedStage, ruleset_index: int, url: str,
              sources: Mapping[str, str]) -> Span:
    """Where the url is written: its string literal inside the ruleset (the ruleset itself
    when it was written with escapes)."""
    where = stage.rulesets[ruleset_index].span
    text = sources.get(where.file, "")
    literal = json.dumps(url, ensure_ascii=False)
    at = text.find(literal, where.start, where.end)
    return span_at(where.file, text, at, at + len(literal)) if at >= 0 else where


def publish_source(runtime: Runtime, name: str, files: Mapping[str, str],
                   project: str | None = None) -> SourcePublished:
    """Compile `files`, then publish the stage called `name` as its next version (nothing
    when it equals the latest). Raises SourceRejected with diagnostics on any error."""
    runtime.require_registry()  # before compiling: a runtime over files cannot publish
    sources = [Source(path, text) for path, text in files.items()]
    result = compile_sources(sources)
    texts = result.sources
    first = sources[0]
    if not result.ok:
        raise SourceRejected(result.diagnostics, texts)
    matches = [(doc, st) for doc, st in zip(result.artifacts, result.stages, strict=True)
               if st.name == name and (project is None or st.project == project)]
    problems: list[Diagnostic] = []
    if not matches:
        found = ", ".join(f"{s.project}/{s.name}" for s in result.stages) or "none"
        problems.append(error(
            "SG1001", f"no stage `{name}`{f' in project `{project}`' if project else ''} in "
            "these sources", _first_line(first.path, first.text), "the request publishes this "
            f"stage only; stages found: {found}",
            help="the name in the url must be a stage the sources define"))
    elif len(matches) > 1:
        problems.append(error(
            "SG1002", f"stage `{name}` is defined in projects "
            f"{', '.join(st.project for _, st in matches)}", matches[1][1].span,
            "say which one", help="send `project` with the sources"))
    else:
        _, stage = matches[0]
        policy = runtime.webhook_policy
        allow = policy.allow_hosts
        for i, ruleset in enumerate(stage.rulesets):
            for sub in ruleset.subscriptions:
                problem = policy.url_problem(sub.url)
                if problem:
                    hosts = ", ".join(sorted(allow)) if allow is not None else ""
                    problems.append(error(
                        "SG1003", f"webhook url not allowed: {sub.url}",
                        _url_span(stage, i, sub.url, texts), problem,
                        help=(f"allowed hosts: {hosts}" if hosts else
                              "a webhook url is http(s) with a host at a public address")))
    if problems:
        raise SourceRejected((*result.diagnostics, *problems), texts)
    doc, _ = matches[0]
    created, info = runtime.publish(doc)  # a RegistryError is the server's, not the policy's
    warnings = tuple(d for d in result.diagnostics if not d.is_error)
    return SourcePublished(info, created, warnings)
