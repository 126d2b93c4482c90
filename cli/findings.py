"""What `check` and `lint` share: which policies they read (`--project`), which findings they
show (suppressions, `--select`/`--ignore`, the project configuration), and how they print
them (`--format text|json|sarif|github|junit`, `--output-file`, `--max-errors`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from stageguard.cli import style
from stageguard.compiler import diagnostics as diag
from stageguard.compiler.artifacts import compiler_version
from stageguard.compiler.ci_formats import diagnostics_junit, github, sarif
from stageguard.compiler.config import ConfigError, codes, resolve, severities
from stageguard.compiler.lint_control import Settings, apply, limit_errors
from stageguard.compiler.pipeline import Compilation, compile_paths, compile_text
from stageguard.compiler.sources import SUFFIX, display_path
from stageguard.runtime.fsutil import atomic_write

FORMATS = ("text", "json", "sarif", "github", "junit")
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="policy files or directories; - reads standard input")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text for people; json (docs/schemas/), sarif (code scanning), github "
                   "(workflow annotations) or junit for CI")
    add_output_options(p, FORMATS)
    p.add_argument("--project", action="store_true",
                   help="the PATHs are files of larger policy directories (as pre-commit "
                   "passes them): each is checked with the other policy files beside it; "
                   "findings are shown for the named files, errors wherever they are")
    p.add_argument("--strict", action="store_true", default=None,
                   help="warnings are errors")
    p.add_argument("--select", metavar="CODES",
                   help="show only these codes or prefixes, comma-separated (SG07,SG0403); "
                   "errors are always shown")
    p.add_argument("--ignore", metavar="CODES", help="hide these codes or prefixes")
    p.add_argument("--severity", metavar="CODE=LEVEL", action="append",
                   help="report a code at another level (error, warning, info); repeatable")
    p.add_argument("--max-errors", type=int, metavar="N",
                   help="show at most N errors (the exit code still counts them all)")
    p.add_argument("--config", metavar="FILE",
                   help="the configuration to use (default: the nearest stageguard.toml or "
                   "pyproject.toml with [tool.stageguard], walking up)")
    p.add_argument("--isolated", action="store_true", help="read no configuration file")


def add_output_options(p: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    p.add_argument("--output-file", metavar="FILE",
                   help="write the report to FILE (atomically) instead of standard output")
    p.add_argument("--report", metavar="FORMAT=FILE", action="append", default=[],
                   help=f"also write the report in FORMAT ({', '.join(formats)}) to FILE, from "
                   "the same run (e.g. --format github --report sarif=lint.sarif); repeatable")


def extra_reports(args: argparse.Namespace, formats: Sequence[str]) -> list[tuple[str, Path]]:
    """`--report FORMAT=FILE` pairs; ValueError names a bad one."""
    out = []
    for item in args.report:
        fmt, eq, file = item.partition("=")
        if not eq or not file or fmt not in formats:
            raise ValueError(f"--report takes FORMAT=FILE with FORMAT one of "
                             f"{', '.join(formats)} (got `{item}`)")
        out.append((fmt, Path(file)))
    return out


def write_reports(args: argparse.Namespace, formats: Sequence[str],
                  render: Callable[[str], str], main: str) -> int:
    """Write `main` (the --format output) and every --report; an exit code for a failure to
    write (2), else 0. Each file is replaced whole or not at all."""
    try:
        extra = extra_reports(args, formats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    targets = [(Path(args.output_file), main)] if args.output_file else []
    targets += [(path, render(fmt)) for fmt, path in extra]
    for path, text in targets:
        try:
            atomic_write(path, text.encode("utf-8"))
        except OSError as exc:
            print(f"error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.output_file:
        sys.stdout.write(main)
    return EXIT_OK


def settings(args: argparse.Namespace) -> Settings:
    """The configuration file's settings, with the command line's flags over them."""
    start = Path(args.paths[0]) if args.paths and args.paths[0] != "-" else Path.cwd()
    found = resolve(start if start.exists() else Path.cwd(),
                    Path(args.config) if args.config else None, args.isolated).settings
    if args.select:
        found = replace(found, select=codes(args.select, "--select"))
    if args.ignore:
        found = replace(found, ignore=codes(args.ignore, "--ignore"))
    if args.severity:
        found = replace(found, severity={**found.severity,
                                         **severities(args.severity, "--severity")})
    if args.strict is not None:
        found = replace(found, strict=args.strict)
    if args.max_errors is not None:
        if args.max_errors < 1:
            raise ConfigError("--max-errors takes a whole number of at least 1")
        found = replace(found, max_errors=args.max_errors)
    return found


def compile_args(args: argparse.Namespace) -> tuple[Compilation, list[str] | None]:
    """The compilation the PATHs ask for, and (with `--project`) the files to report on."""
    if args.paths == ["-"]:
        return compile_text(sys.stdin.read(), "<stdin>"), None
    if not args.project:
        return compile_paths(args.paths), None
    named = [display_path(Path(p)) for p in args.paths if Path(p).is_file()]
    folders = sorted({str(Path(p).parent) if Path(p).is_file() else p for p in args.paths
                      if not Path(p).is_file() or p.endswith(SUFFIX)})
    return compile_paths(folders), named + [p for p in args.paths if Path(p).is_dir()]


def _only(found: Sequence[diag.Diagnostic], named: list[str] | None) -> list[diag.Diagnostic]:
    if named is None:
        return list(found)
    folders = tuple(n.rstrip("/") + "/" for n in named if Path(n).is_dir())
    return [d for d in found if d.is_error or d.span.file in named
            or d.span.file.startswith(folders)]


def report(command: str, args: argparse.Namespace, compilation: Compilation,
           found: Sequence[diag.Diagnostic], all_codes: bool, ok_line: Callable[[], str],
           named: list[str] | None, began: float, text_to_stderr: bool,
           ok_with_findings: bool = True) -> int:
    """Filter, print and judge the findings; the exit code."""
    try:
        chosen = settings(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = _only(apply(found, compilation.files, compilation.sources, chosen,
                        report_unused=all_codes), named)
    failed = diag.has_errors(shown)

    def text(stream: TextIO | None) -> str:
        """The rendered diagnostics, coloured when `stream` (their destination) wants it."""
        kept, hidden = limit_errors(shown, chosen.max_errors)
        paint = style.painter(stream) if stream is not None else diag.plain
        out = diag.render_all(kept, compilation.sources, paint) + "\n" if kept else ""
        if hidden:
            out += (f"… and {hidden} more error{'s' if hidden != 1 else ''} not shown "
                    f"(--max-errors {chosen.max_errors})\n")
        return out

    def render(fmt: str) -> str:
        if fmt == "json":
            return json.dumps({"ok": not failed, "diagnostics": diag.as_data(shown)},
                              indent=2, ensure_ascii=False) + "\n"
        if fmt == "sarif":
            return json.dumps(sarif(shown, compiler_version(), command), indent=2,
                              ensure_ascii=False) + "\n"
        if fmt == "github":
            return github(shown)
        if fmt == "junit":
            return diagnostics_junit(shown, compilation.sources, command,
                                     time.perf_counter() - began)
        return text(None)

    fmt = args.format
    if fmt == "text":
        # Diagnostics go where `check` has always put them (standard error), coloured for
        # that stream; the verdict line goes to standard output.
        out = text(sys.stderr if text_to_stderr else sys.stdout)
        if text_to_stderr:
            sys.stderr.write(out)
            out = ""
        if not failed and (ok_with_findings or not shown):
            out += ok_line() + "\n"
    else:
        out = render(fmt)
    status = write_reports(args, FORMATS, render, out)
    if status:
        return status
    if failed and fmt == "text" and chosen.strict and not diag.has_errors(found):
        print("error: warnings fail the run (--strict)", file=sys.stderr)
    return EXIT_FAIL if failed else EXIT_OK
