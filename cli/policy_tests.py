"""`stageguard test` (wired in by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stageguard.cli import style
from stageguard.compiler.ci_formats import JUnitCase, annotation, case_line, junit
from stageguard.compiler.diagnostics import Span
from stageguard.compiler.policytest import SUFFIX, TestFileError, run_files, suggest
from stageguard.runtime.fsutil import atomic_write


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser("test", help=f"run policy tests ({SUFFIX} files): cases, tables and "
                       "properties, with boundary coverage")
    t.add_argument("paths", nargs="+", metavar="PATH", help=f"{SUFFIX} files or directories")
    t.add_argument("-k", dest="pattern", metavar="PATTERN",
                   help="only cases and properties whose name contains or matches PATTERN")
    t.add_argument("--format", choices=("text", "json", "junit", "github"), default="text",
                   help="text for people; json (docs/schemas/test.schema.json), junit or "
                   "github (workflow annotations) for CI")
    t.add_argument("--output-file", metavar="FILE",
                   help="write the report to FILE (atomically) instead of standard output")
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
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = [o for o in result.outcomes if not o.passed]
    rulesets, rules, sides = result.coverage.percent()
    if args.format == "json":
        out = json.dumps({"passed": len(result.outcomes) - len(failed), "failed": len(failed),
                          "results": [{"id": o.id, "passed": o.passed, "report": o.report,
                                       "summary": o.summary, "seconds": round(o.seconds, 6)}
                                      for o in result.outcomes],
                          "coverage": {"rulesets": rulesets, "rules": rules,
                                       "boundaries": sides}}, indent=2) + "\n"
    elif args.format == "junit":
        out = junit([JUnitCase(o.id.partition("::")[0], o.id.partition("::")[2], o.seconds,
                               None if o.passed else o.headline, o.report)
                     for o in result.outcomes], "stageguard test", began)
    elif args.format == "github":
        lines = []
        for o in failed:
            file, _, name = o.id.partition("::")
            line = case_line(file, name)
            at = Span(file, 0, 0, line, 1, line, 1) if line else None
            lines.append(annotation("error", f"{name}: {o.headline}\n{o.report}",
                                    f"policy test failed: {name}"[:200], at))
        out = "".join(x + "\n" for x in lines)
    else:
        paint = style.painter(sys.stdout)
        parts = []
        for o in result.outcomes:
            parts.append(paint("pass", "PASS") + f"  {o.id}" if o.passed else
                         paint("fail", "FAIL") + f"  {o.id}\n{o.report}")
        parts.append(f"\n{len(result.outcomes) - len(failed)} passed, {len(failed)} failed")
        parts.append(f"coverage: rulesets triggered {rulesets:.0f}%, rules reached "
                     f"{rules:.0f}%, threshold sides (below / at / above) {sides:.0f}%")
        for (stage, name), n in sorted(result.coverage.triggered.items()):
            if not n:
                parts.append(f"  never triggered: {stage}/{name}")
        out = "\n".join(parts) + "\n"
    if args.suggest:
        text = suggest(result.stages, result.coverage)
        out += (("\n# missing boundary cases (expectations are today's decisions: review "
                 "them)\n" + text) if text else "\n# every threshold side is covered") + "\n"
    if args.output_file:
        try:
            atomic_write(Path(args.output_file), out.encode("utf-8"))
        except OSError as exc:
            print(f"error: cannot write {args.output_file}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    else:
        sys.stdout.write(out)
    if failed:
        return 1
    if args.coverage_min is not None and sides < args.coverage_min:
        print(f"boundary coverage {sides:.1f}% is below --coverage-min {args.coverage_min}%",
              file=sys.stderr)
        return 1
    return 0
