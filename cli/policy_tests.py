"""`stageguard test` (wired in by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from xml.etree import ElementTree as ET

from stageguard.compiler.policytest import SUFFIX, Run, TestFileError, run_files, suggest


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser("test", help=f"run policy tests ({SUFFIX} files): cases, tables and "
                       "properties, with boundary coverage")
    t.add_argument("paths", nargs="+", metavar="PATH", help=f"{SUFFIX} files or directories")
    t.add_argument("-k", dest="pattern", metavar="PATTERN",
                   help="only cases and properties whose name contains or matches PATTERN")
    t.add_argument("--format", choices=("text", "json", "junit"), default="text")
    t.add_argument("--coverage-min", type=float, metavar="PCT",
                   help="fail when boundary coverage is below PCT percent")
    t.add_argument("--suggest", action="store_true",
                   help="print the missing boundary cases as ready-to-paste [[case]]s")


def run(args: argparse.Namespace) -> int:
    try:
        result = run_files(args.paths, args.pattern)
    except TestFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = [o for o in result.outcomes if not o.passed]
    rulesets, rules, sides = result.coverage.percent()
    if args.format == "json":
        json.dump({"passed": len(result.outcomes) - len(failed), "failed": len(failed),
                   "results": [{"id": o.id, "passed": o.passed, "report": o.report}
                               for o in result.outcomes],
                   "coverage": {"rulesets": rulesets, "rules": rules, "boundaries": sides}},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "junit":
        sys.stdout.write(_junit(result))
    else:
        for o in result.outcomes:
            print(f"{'PASS' if o.passed else 'FAIL'}  {o.id}")
            if not o.passed:
                print(o.report)
        print(f"\n{len(result.outcomes) - len(failed)} passed, {len(failed)} failed")
        print(f"coverage: rulesets triggered {rulesets:.0f}%, rules reached {rules:.0f}%, "
              f"threshold sides (below / at / above) {sides:.0f}%")
        for (stage, name), n in sorted(result.coverage.triggered.items()):
            if not n:
                print(f"  never triggered: {stage}/{name}")
    if args.suggest:
        text = suggest(result.stages, result.coverage)
        print(("\n# missing boundary cases (expectations are today's decisions: review them)\n"
               + text) if text else "\n# every threshold side is covered")
    if failed:
        return 1
    if args.coverage_min is not None and sides < args.coverage_min:
        print(f"boundary coverage {sides:.1f}% is below --coverage-min {args.coverage_min}%",
              file=sys.stderr)
        return 1
    return 0


def _junit(result: Run) -> str:
    suite = ET.Element("testsuite", name="stageguard", tests=str(len(result.outcomes)),
                       failures=str(sum(1 for o in result.outcomes if not o.passed)))
    for o in result.outcomes:
        file, _, name = o.id.partition("::")
        case = ET.SubElement(suite, "testcase", classname=file, name=name)
        if not o.passed:
            failure = ET.SubElement(case, "failure", message=o.report.splitlines()[0]
                                    if o.report else "failed")
            failure.text = o.report
    return ET.tostring(suite, encoding="unicode") + "\n"
