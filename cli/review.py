"""The review commands: `fmt`, `lint` and `diff` (wired into `stageguard` by cli.py)."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import stat
import sys
import time
from pathlib import Path

from stageguard.cli import findings, style
from stageguard.compiler import diagnostics as diag
from stageguard.compiler.diff import diff
from stageguard.compiler.formatter import INTERNAL, format_text
from stageguard.compiler.lint import lint
from stageguard.compiler.pipeline import compile_paths
from stageguard.compiler.report import COMMENT_LIMIT, as_json, diff_annotations, markdown, text
from stageguard.compiler.revisions import Side, SideError, compiled_side, from_git, load
from stageguard.compiler.sources import Source
from stageguard.compiler.sources import load as load_sources
from stageguard.runtime.fsutil import atomic_write

EXIT_OK, EXIT_FAIL, EXIT_ERROR, EXIT_INTERNAL = 0, 1, 2, 3
DIFF_FORMATS = ("text", "markdown", "json", "github")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fmt = sub.add_parser("fmt", help="format policy files in the canonical layout")
    fmt.add_argument("paths", nargs="+", metavar="PATH",
                     help="policy files or directories; - reads standard input")
    fmt.add_argument("--write", action="store_true", help="rewrite files in place")
    fmt.add_argument("--check", action="store_true",
                     help="list files that are not formatted; exit 1 if any (with --diff: "
                     "and show how)")
    fmt.add_argument("--diff", action="store_true",
                     help="print a unified diff of what formatting changes; exit 1 if any")

    lint_p = sub.add_parser("lint", help="exact analysis: contradictions, shadowing, "
                            "redundancy, vacuous thresholds, overlaps (with witnesses)")
    findings.add_options(lint_p)
    lint_p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help="stop the analysis after SECONDS: the findings so far, and "
                        "SG0708 naming the stages not analysed")

    d = sub.add_parser("diff", help="what a policy change does: structural changes and "
                       "every region of payloads whose decision changes (exit 1 if any)")
    d.add_argument("sides", nargs="*", metavar="OLD NEW",
                   help="files, directories or registry:[PROJECT/]STAGE[@N]; with --git, "
                   "the policy paths to read (default: .)")
    d.add_argument("--git", metavar="REV..REV",
                   help="compare the policies at two git revisions (REV.. : with the "
                   "working tree)")
    d.add_argument("--registry", default="registry", metavar="DIR",
                   help="registry for registry: sides (default: ./registry)")
    d.add_argument("--format", choices=DIFF_FORMATS, default="text",
                   help="text; markdown (a pull-request comment); json "
                   "(docs/schemas/diff.schema.json); github (one workflow annotation per "
                   "changed stage)")
    d.add_argument("--max-regions", type=int, metavar="N",
                   help="text and markdown: list at most N regions (and N webhook regions) per "
                   "stage, with the count of those left out (json always lists all)")
    d.add_argument("--max-chars", type=int, metavar="N",
                   help=f"markdown: cap regions further until the body fits N characters "
                   f"(default {COMMENT_LIMIT:,}, under GitHub's comment limit; 0: no limit)")
    d.add_argument("--full-report", metavar="WHERE",
                   help="markdown: where the uncapped report is (an artifact's name or url), "
                   "named wherever regions are left out")
    findings.add_output_options(d, DIFF_FORMATS)
    d.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop comparing after SECONDS: the stages compared so far are "
                   "reported, the rest named, and the exit code is 2 (nothing is proved for "
                   "them)")
    d.add_argument("--traffic", nargs="+", metavar="LOG",
                   help="count the logged decisions (JSONL files, or a postgresql:// "
                   "registry's table) that lie in each changed region")


def _seconds(text: str) -> float:
    """--timeout's value: seconds above 0 (argparse reports anything else, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError("takes a number of seconds above 0")
    return value


def run(args: argparse.Namespace) -> int:
    if args.command == "fmt":
        return _fmt(args)
    if args.command == "lint":
        return _lint(args)
    return _diff(args)


# ---- fmt ------------------------------------------------------------------------------------


def _fmt(args: argparse.Namespace) -> int:
    if args.write and (args.check or args.diff):
        print("error: --write rewrites files; --check and --diff only report (black and ruff "
              "alike)", file=sys.stderr)
        return EXIT_ERROR
    if args.paths == ["-"]:
        sources: list[Source] = [Source("<stdin>", sys.stdin.read())]
        problems: list[diag.Diagnostic] = []
    else:
        sources, problems = load_sources(args.paths)
    if problems:
        print(style.render_all(problems, {}, sys.stderr), file=sys.stderr)
        return EXIT_FAIL
    status = EXIT_OK
    unformatted = []
    for src in sources:
        result = format_text(src.text, src.path)
        if not result.ok:
            print(style.render_all(result.diagnostics, {src.path: src.text}, sys.stderr),
                  file=sys.stderr)
            internal = any(d.code == INTERNAL for d in result.diagnostics)
            status = max(status, EXIT_INTERNAL if internal else EXIT_FAIL)
            continue
        new = result.text
        assert new is not None
        if args.check or args.diff:
            if new != src.text:
                unformatted.append(src.path)
            if args.diff:
                sys.stdout.writelines(difflib.unified_diff(
                    src.text.splitlines(True), new.splitlines(True),
                    f"{src.path}", f"{src.path} (formatted)"))
        elif args.write and src.path == "<stdin>":
            sys.stdout.write(new)  # nothing to rewrite: standard input goes to the output
        elif args.write:
            if new != src.text:
                problem = _rewrite(Path(src.path), new)
                if problem:
                    print(f"error: {src.path}: {problem}; the file was left as it was",
                          file=sys.stderr)
                    status = max(status, EXIT_FAIL)
                    continue
                unformatted.append(src.path)
        else:
            sys.stdout.write(new)
    if args.check or args.diff:
        for path in unformatted if not args.diff else ():
            print(path)
        if unformatted:
            n = len(unformatted)
            print(f"{n} file{'s' if n != 1 else ''} would be reformatted "
                  "(run `stageguard fmt --write`)", file=sys.stderr)
            status = max(status, EXIT_FAIL)
        elif status == EXIT_OK:
            n = len(sources)
            print(f"ok: {n} file{'s' if n != 1 else ''} formatted", file=sys.stderr)
    elif args.write:
        n = len(unformatted)
        print(f"formatted {n} file{'s' if n != 1 else ''}, {len(sources) - n} unchanged",
              file=sys.stderr)
    return status


def _rewrite(path: Path, text: str) -> str | None:
    """Replace a file's text, crash-safe; why not, when it cannot be. A link is followed,
    so its target is formatted and the link stays a link; a read-only file is not touched
    (root could write it, but its owner said no)."""
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return "the file is read-only"
        atomic_write(target, text.encode("utf-8"), mode)
    except OSError as exc:
        return f"cannot write it ({exc.strerror or exc})"
    return None


# ---- lint -------------------------------------------------------------------------------------


def _lint(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    with style.progress("lint") as shown:
        compilation, named = findings.compile_args(args)
        found = list(compilation.diagnostics)
        if compilation.ok:
            found += lint(compilation, lambda i, n, name: shown.update(
                f"stage {i} of {n}, {name}"), timeout=args.timeout,
                full=args.format in ("json", "sarif") or bool(args.report))

    def ok() -> str:
        n = len(compilation.artifacts)
        return f"ok: {n} stage{'s' if n != 1 else ''}, no findings"

    # Unused suppressions are judged only when every code was computed (no check error).
    return findings.report("lint", args, compilation, found, compilation.ok, ok, named, began,
                           text_to_stderr=False, ok_with_findings=False)


# ---- diff -------------------------------------------------------------------------------------


def _sides(args: argparse.Namespace) -> tuple[Side, Side]:
    if args.git:
        old_rev, dots, new_rev = args.git.partition("..")
        if not dots or not old_rev:
            raise SideError("--git takes REV..REV (or REV.. for the working tree)")
        paths = args.sides or ["."]
        old = from_git(old_rev, paths)
        if new_rev:
            return old, from_git(new_rev, paths)
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise SideError(f"`{missing[0]}` does not exist in the working tree")
        return old, compiled_side("working tree", compile_paths(paths))
    if len(args.sides) != 2:
        raise SideError("give OLD and NEW (or --git REV..REV)")
    return load(args.sides[0], args.registry), load(args.sides[1], args.registry)


def _narrow(side: Side, only: tuple[str | None, str] | None) -> dict:  # type: ignore[type-arg]
    if only is None:
        return side.stages
    return {k: v for k, v in side.stages.items() if k == only}


def _diff(args: argparse.Namespace) -> int:
    try:
        old, new = _sides(args)
    except SideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for side in (old, new):
        if diag.has_errors(side.diagnostics):
            print(style.render_all(side.diagnostics, side.sources or {}, sys.stderr),
                  file=sys.stderr)
            print(f"error: `{side.label}` does not compile; nothing to compare",
                  file=sys.stderr)
            return EXIT_ERROR
    only = old.only or new.only
    with style.progress("diff") as shown:
        report = diff(_narrow(old, only), _narrow(new, only), old.label, new.label,
                      lambda i, n, name: shown.update(f"stage {i} of {n}, {name}"),
                      timeout=args.timeout)
    if args.traffic:
        from stageguard.cli.replay import log_events, missing_log
        from stageguard.compiler.traffic import with_traffic

        missing = missing_log(args.traffic)
        if missing:
            print(f"error: no decision log {missing}", file=sys.stderr)
            return EXIT_ERROR
        report = with_traffic(report, list(log_events(args.traffic)))
    if args.max_regions is not None and args.max_regions < 0:
        print("error: --max-regions takes a number of at least 0", file=sys.stderr)
        return EXIT_ERROR
    def render(fmt: str) -> str:
        if fmt == "json":
            return as_json(report) + "\n"
        if fmt == "markdown":
            limit = COMMENT_LIMIT if args.max_chars is None else (args.max_chars or None)
            return markdown(report, args.max_regions, limit, args.full_report)
        if fmt == "github":
            return diff_annotations(report)
        return text(report, args.max_regions)

    status = findings.write_reports(args, DIFF_FORMATS, render, render(args.format))
    if status:
        return status
    if report.incomplete:
        print(f"error: diff stopped at --timeout {args.timeout:g} s; not compared: "
              f"{', '.join(report.incomplete)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_FAIL if report.behaviour_changed else EXIT_OK
