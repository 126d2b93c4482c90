"""What the code lenses over a stage run: its policy tests, an evaluation, a diff against
the registry's latest version. Each returns a summary line and the facts as data."""

from __future__ import annotations

import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageguard.compiler import ast
from stageguard.compiler.diagnostics import Span
from stageguard.compiler.diff import diff_stage
from stageguard.compiler.policytest import SUFFIX as TEST_SUFFIX
from stageguard.compiler.policytest import TestFileError, run_files
from stageguard.lsp.analysis import Analysis
from stageguard.runtime.engine import InvalidRequest, Runtime
from stageguard.runtime.registry import Registry, RegistryError
from stageguard.runtime.store import open_store

RUN_TESTS = "stageguard.runTests"
EVALUATE = "stageguard.evaluate"
DIFF_REGISTRY = "stageguard.diffRegistry"


@dataclass(frozen=True, slots=True)
class Lens:
    span: Span
    title: str
    command: str
    arguments: list[Any]


def _tests(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{TEST_SUFFIX}"))


def test_stages(folder: Path) -> dict[Path, str | None]:
    """Each policy test file of the folder, with the stage its top level names (None: it
    names none, or cannot be read)."""
    out: dict[Path, str | None] = {}
    for path in _tests(folder):
        try:
            stage = tomllib.loads(path.read_text(encoding="utf-8")).get("stage")
        except (OSError, ValueError):
            stage = None
        out[path] = stage if isinstance(stage, str) else None
    return out


def lenses(analysis: Analysis, file: str, registry: str | None) -> list[Lens]:
    out = []
    folder = str(analysis.folder)
    for f in analysis.compilation.files:
        if f.path != file:
            continue
        project = f.projects[0].name.value if f.projects else ""
        for stage in f.stages:
            name = stage.name.value
            span = stage.name.span
            if _tests(analysis.folder):
                out.append(Lens(span, "▶ run policy tests", RUN_TESTS, [folder, name]))
            if any(isinstance(i, ast.Ruleset) for i in stage.items):
                out.append(Lens(span, "evaluate a payload", EVALUATE,
                                [folder, project, name, {}]))
            if registry:
                out.append(Lens(span, "diff against the registry", DIFF_REGISTRY,
                                [folder, project, name, registry]))
    return out


def run_tests(folder: str, stage: str | None = None) -> dict[str, Any]:
    stages = test_stages(Path(folder))
    try:
        run = run_files([str(p) for p in stages])
    except TestFileError as exc:
        return {"passed": 0, "failed": 0, "failures": [], "summary": f"policy tests: {exc}"}
    # An outcome's id starts with its file as the run named it: the stage per file, once.
    by_file = {str(p): st for p, st in stages.items()}
    mine = [o for o in run.outcomes
            if stage is None or by_file.get(o.id.partition("::")[0]) in (None, stage)]
    failed = [o for o in mine if not o.passed]
    summary = f"policy tests: {len(mine) - len(failed)} passed, {len(failed)} failed"
    if failed:
        summary += ": " + "; ".join(f"{o.id.partition('::')[2]} ({o.headline})"
                                    for o in failed[:3])
    return {"passed": len(mine) - len(failed), "failed": len(failed),
            "failures": [o.id for o in failed], "summary": summary}


def evaluate(analysis: Analysis, project: str, stage: str,
             metrics: dict[str, Any] | None = None, text: str = "") -> dict[str, Any]:
    """Decide a payload with the stage as it is in the editor (compiled, not published)."""
    doc = next((d for d in analysis.compilation.artifacts
                if d.project == project and d.stage == stage), None)
    if doc is None:
        return {"summary": f"`{stage}` does not compile: fix its errors first"}
    with tempfile.TemporaryDirectory(prefix="stageguard-lsp-") as tmp:
        Registry(tmp).publish([doc])
        runtime = Runtime(tmp, deliver_webhooks=False)
        try:
            r = runtime.invoke({"input": text or "…", "output": text or "…",
                                "metrics": metrics or {}}, stage, project=project)
        except InvalidRequest as exc:
            return {"summary": f"not evaluated: {exc}"}
        finally:
            runtime.close()
    winner = next((x.name for x in r.ruleset_results if x.status.value == "triggered"), None)
    summary = f"{stage}: {r.status.value}" + (f" by `{winner}`" if winner else "")
    return {"status": r.status.value, "ruleset": winner, "text": r.text, "summary": summary}


def diff_registry(analysis: Analysis, project: str, stage: str,
                  registry: str) -> dict[str, Any]:
    doc = next((d for d in analysis.compilation.artifacts
                if d.project == project and d.stage == stage), None)
    if doc is None:
        return {"summary": f"`{stage}` does not compile: fix its errors first"}
    try:
        old = open_store(registry).load(project, stage)
    except (RegistryError, LookupError, OSError) as exc:
        return {"summary": f"no version of {project}/{stage} in {registry}: {exc}"}
    d = diff_stage(old, doc.to_artifact(old.version + 1), (project, stage))
    regions = len(d.regions)
    summary = (f"{project}/{stage} against v{old.version}: {d.status}"
               + (f", {regions} region{'s' if regions != 1 else ''} change fate"
                  if regions else ""))
    return {"status": d.status, "behaviour_changed": d.behaviour_changed,
            "regions": regions, "changes": [c.message for c in d.changes],
            "summary": summary}
