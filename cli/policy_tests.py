"""`stageguard test` (wired in by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from stageguard.cli import style
from stageguard.cli.findings import add_output_options, write_reports
from stageguard.compiler import diagnostics as diag
from stageguard.compiler.ci_formats import JUnitCase, annotation, case_line, junit
from stageguard.compiler.diagnostics import Painter, Span
from stageguard.compiler.policytest import (
    SUFFIX,
    Outcome,
    Run,
    TestFileError,
    run_files,
    suggest,
)

FORMATS = ("text", "json", "junit", "github")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser("test", help=f"run policy tests ({SUFFIX} files): cases, tables and "
                       "properties, with boundary coverage")
    t.add_argument("paths", nargs="+", metavar="PATH", help=f"{SUFFIX} files or directories")
    t.add_argument("-k", dest="pattern", metavar="PATTERN",
                   help="only cases and properties whose name contains or matches PATTERN")
    t.add_argument("--format", choices=FORMATS, default="text",
                   help="text for people; json (docs/schemas/test.schema.json), junit or "
                   "github (workflow annotations) for CI")
    add_output_options(t, FORMATS)
    t.add_argument("--coverage-min", type=float, metavar="PCT",
                   help="fail when boundary coverage is below PCT percent")
    t.add_argument("--suggest", action="store_true",
                   help="print the missing boundary cases as ready-to-paste [[case]]s")


def run(args: argparse.Namespace) -> int:
    began = time.time()
    try:
        with style.progress("test") as shown:
            result = run_files(args.paths, args.pattern,
                               lambda o: shown.update(f"{o.id.rpartition('::')[2]}"))
    except TestFileError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        if len(exc.problems) > 1:
            print(f"{len(exc.problems)} problems in the test files", file=sys.stderr)
        return 1
    failed = [o for o in result.outcomes if not o.passed]
    rulesets, rules, sides = result.coverage.percent()

    def render(fmt: str) -> str:
        if fmt == "json":
            return json.dumps({
                "passed": len(result.outcomes) - len(failed), "failed": len(failed),
                "results": [{"id": o.id, "passed": o.passed, "report": o.report,
                             "summary": o.summary, "seconds": round(o.seconds, 6)}
                            for o in result.outcomes],
                "coverage": {"rulesets": rulesets, "rules": rules, "boundaries": sides}},
                indent=2) + "\n"
        if fmt == "junit":
            return junit([JUnitCase(o.id.partition("::")[0], o.id.partition("::")[2],
                                    o.seconds, None if o.passed else o.headline, o.report)
                          for o in result.outcomes], "stageguard test", began)
        if fmt == "github":
            lines = []
            for o in failed:
                file, _, name = o.id.partition("::")
                line = case_line(file, name)
                at = Span(file, 0, 0, line, 1, line, 1) if line else None
                lines.append(annotation("error", f"{name}: {o.headline}\n{o.report}",
                                        f"policy test failed: {name}"[:200], at))
            return "".join(x + "\n" for x in lines)
        return _text(result, failed, style.painter(sys.stdout) if fmt == "tty"
                     else diag.plain) + _suggestions()

    def _suggestions() -> str:
        if not args.suggest:
            return ""
        text = suggest(result.stages, result.coverage)
        return (("\n# missing boundary cases (expectations are today's decisions: review "
                 "them)\n" + text) if text else "\n# every threshold side is covered") + "\n"

    main = render("tty" if args.format == "text" else args.format)
    if args.format != "text":  # the report stays machine-readable; the cases go aside
        sys.stderr.write(_suggestions())
    status = write_reports(args, FORMATS, render, main)
    if status:
        return status
    if failed:
        return 1
    if args.coverage_min is not None and sides < args.coverage_min:
        print(f"boundary coverage {sides:.1f}% is below --coverage-min {args.coverage_min}%",
              file=sys.stderr)
        return 1
    return 0


def _text(result: Run, failed: list[Outcome], paint: Painter) -> str:
    parts = []
    for o in result.outcomes:
        parts.append(paint("pass", "PASS") + f"  {o.id}" if o.passed else
                     paint("fail", "FAIL") + f"  {o.id}\n{o.report}")
    rulesets, rules, sides = result.coverage.percent()
    parts.append(f"\n{len(result.outcomes) - len(failed)} passed, {len(failed)} failed")
    parts.append(f"coverage: rulesets triggered {rulesets:.0f}%, rules reached {rules:.0f}%, "
                 f"threshold sides (below / at / above) {sides:.0f}%")
    for (stage, name), n in sorted(result.coverage.triggered.items()):
        if not n:
            parts.append(f"  never triggered: {stage}/{name}")
    return "\n".join(parts) + "\n"
