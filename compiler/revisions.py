"""Where `diff` reads the two sides from: policy files or directories, registry versions
(`registry:[PROJECT/]STAGE[@N]`), or policy files at a git revision."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from stageguard.compiler.diagnostics import Diagnostic
from stageguard.compiler.pipeline import compile_paths, compile_sources
from stageguard.compiler.sources import SUFFIX, Source
from stageguard.runtime.model import Artifact
from stageguard.runtime.registry import Registry, RegistryError

REGISTRY_PREFIX = "registry:"


class SideError(Exception):
    """A side could not be read; the message says why."""


@dataclass(frozen=True)
class Side:
    label: str
    stages: dict[tuple[str, str], Artifact]
    # When the side names one stage, the other side is narrowed to it.
    only: tuple[str | None, str] | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    sources: dict[str, str] | None = None


def compiled_side(label: str, compilation: object) -> Side:
    c = compilation
    stages = {(a.project, a.stage.name): a for a in
              (d.to_artifact() for d in c.artifacts)}  # type: ignore[attr-defined]
    return Side(label, stages, None, c.diagnostics, c.sources)  # type: ignore[attr-defined]


def from_paths(path: str) -> Side:
    return compiled_side(path, compile_paths([path]))


def from_registry(spec: str, root: str) -> Side:
    what = spec[len(REGISTRY_PREFIX):]
    name, _, version_text = what.partition("@")
    project, _, stage = name.rpartition("/")
    if not stage:
        raise SideError(f"`{spec}`: name a stage, as registry:STAGE or registry:STAGE@3")
    version = None
    if version_text:
        if not version_text.isdigit() or int(version_text) < 1:
            raise SideError(f"`{spec}`: the version after @ is a number from 1")
        version = int(version_text)
    registry = Registry(root)
    try:
        project = project or registry.project_of(stage)
    except RegistryError as exc:
        raise SideError(f"`{spec}`: {exc}") from None
    try:
        artifact = registry.load(project, stage, version)
    except RegistryError as exc:
        raise SideError(str(exc)) from exc
    label = f"{project}/{stage}@{artifact.version}"
    return Side(label, {(project, stage): artifact}, (project, stage))


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False, encoding="utf-8")
    except FileNotFoundError as exc:
        raise SideError("git is not installed") from exc
    if done.returncode != 0:
        raise SideError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def from_git(revision: str, paths: list[str]) -> Side:
    """The policy files under `paths` as they were at `revision`."""
    cwd = Path.cwd()
    top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd)
    except SideError:
        raise SideError(f"`{revision}` is not a commit of the repository at {top}") from None
    prefixes = []
    for p in paths:
        rel = (cwd / p).resolve().relative_to(top.resolve()).as_posix()
        prefixes.append("" if rel == "." else rel)
    listed = _git(["ls-tree", "-r", "--name-only", revision, "--",
                   *[p or "." for p in prefixes]], top)
    sources = []
    for name in sorted(n for n in listed.splitlines() if n.endswith(SUFFIX)):
        text = _git(["show", f"{revision}:{name}"], top)
        shown = Path(top / name).resolve().relative_to(cwd.resolve()).as_posix() \
            if (top / name).resolve().is_relative_to(cwd.resolve()) else name
        sources.append(Source(shown, text))
    if not sources:
        raise SideError(f"no `{SUFFIX}` files under {', '.join(paths)} at {revision}")
    return compiled_side(revision, compile_sources(sources))


def load(spec: str, registry_root: str) -> Side:
    if spec.startswith(REGISTRY_PREFIX):
        return from_registry(spec, registry_root)
    if not Path(spec).exists():
        raise SideError(f"`{spec}` does not exist (give a file, a directory, "
                        f"{REGISTRY_PREFIX}STAGE[@N] or --git REV..REV)")
    return from_paths(spec)
