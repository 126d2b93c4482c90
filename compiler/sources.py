"""Finding and reading policy files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stageguard.compiler.diagnostics import Diagnostic, Span, error

SUFFIX = ".sg"
# A rulesets file holds `ruleset` blocks only: a local stage's per-invocation rulesets, kept
# and reviewed as source (what `invoke --rulesets` and an API call send).
RULESETS_SUFFIX = ".rulesets.sg"


def is_rulesets_file(path: str) -> bool:
    return path.endswith(RULESETS_SUFFIX)


@dataclass(frozen=True, slots=True)
class Source:
    path: str  # as shown in diagnostics and source maps: relative to the cwd when below it
    text: str


def display_path(path: Path) -> str:
    """A stable, machine-independent name for a file: relative to the working directory when
    the file lies below it, always with forward slashes."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
        return rel.as_posix()
    except ValueError:
        return path.as_posix()


def _nowhere(path: str) -> Span:
    return Span(path, 0, 0, 1, 1, 1, 1)


def discover(paths: list[str]) -> tuple[list[Path], list[Diagnostic]]:
    """Policy files named by `paths`: files as given, directories searched recursively for
    `*.sg` (sorted, so builds do not depend on directory order)."""
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(
                (Path(root) / f for root, _, names in os.walk(p) for f in names
                 if f.endswith(SUFFIX) and not f.startswith(".")),
                key=lambda q: q.as_posix(),
            )
            if not files:
                problems.append(error("SG0603", f"no `{SUFFIX}` policy files in `{raw}`",
                                      _nowhere(raw), help=f"policy files end in `{SUFFIX}`"))
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            problems.append(error("SG0601", f"`{raw}` does not exist", _nowhere(raw),
                                  help="give a policy file or a directory of them"))
    unique = list(dict.fromkeys(found))
    return unique, problems


def read(path: Path) -> tuple[Source | None, list[Diagnostic]]:
    shown = display_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [error("SG0601", f"cannot read `{shown}`: {exc.strerror or exc}",
                            _nowhere(shown))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        span = Span(shown, exc.start, exc.start + 1, line, column, line, column + 1)
        return None, [error("SG0602", f"`{shown}` is not valid UTF-8", span,
                            f"byte 0x{data[exc.start]:02x} here",
                            help="save the file as UTF-8")]
    if text.startswith("\ufeff"):
        text = text[1:]
    return Source(shown, text), []


def load(paths: list[str]) -> tuple[list[Source], list[Diagnostic]]:
    files, problems = discover(paths)
    sources: list[Source] = []
    for f in files:
        source, more = read(f)
        problems.extend(more)
        if source is not None:
            sources.append(source)
    return sources, problems
