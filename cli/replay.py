"""`stageguard replay`: logged decisions decided again by another version of their stage
(runtime/replay.py), as a flip table; `--max-flip-rate` makes it a CI gate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stageguard.compiler import diagnostics as diag
from stageguard.compiler.pipeline import compile_paths
from stageguard.runtime.log_sinks import iter_events
from stageguard.runtime.model import Artifact
from stageguard.runtime.postgres import is_url
from stageguard.runtime.replay import replay
from stageguard.runtime.served import load_model
from stageguard.runtime.store import open_store

EXIT_OK, EXIT_GATE, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("replay", help="decide logged decisions again with another version "
                       "of their stage and print what flips (exit 1 past --max-flip-rate)")
    r.add_argument("logs", nargs="+", metavar="LOG",
                   help="decision logs: JSONL files (.gz too), or a postgresql:// registry "
                   "whose decision table to read")
    r.add_argument("--stage", required=True, metavar="[PROJECT/]STAGE")
    against = r.add_mutually_exclusive_group(required=True)
    against.add_argument("--against", metavar="PATH", nargs="+",
                         help="policy files or directories holding the stage's new version")
    against.add_argument("--version", type=int, metavar="N",
                         help="a version of the stage in --registry")
    r.add_argument("--registry", metavar="REGISTRY", help="where --version N is")
    r.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    r.add_argument("--max-flip-rate", type=float, metavar="PCT",
                   help="exit 1 when more than PCT percent of the replayed decisions change "
                   "status")


def log_events(logs: list[str], project: str | None = None,
               stage: str | None = None) -> Iterator[dict[str, Any] | None]:
    """The events of decision logs: JSONL files, or a PostgreSQL registry's decision table
    (of one stage when project and stage are named)."""
    for log in logs:
        if is_url(log):
            store = open_store(log)
            try:
                yield from store.read_decisions(project, stage)  # type: ignore[attr-defined]
            finally:
                store.close()  # type: ignore[attr-defined]
        else:
            yield from iter_events([log])


def missing_log(logs: list[str]) -> str | None:
    return next((log for log in logs if not is_url(log) and not Path(log).is_file()), None)


def _against(args: argparse.Namespace, project: str | None,
             stage: str) -> tuple[Artifact, str] | int:
    if args.version is not None:
        if not args.registry:
            print("error: --version N needs --registry REGISTRY", file=sys.stderr)
            return EXIT_USAGE
        store = open_store(args.registry)
        if project is None:
            index = store.read_index()
            holders = sorted(p for p, stages in index.projects.items() if stage in stages)
            if len(holders) != 1:
                print(f"error: name the project: --stage PROJECT/{stage}", file=sys.stderr)
                return EXIT_USAGE
            project = holders[0]
        return store.load(project, stage, args.version), f"v{args.version}"
    result = compile_paths(args.against)
    if not result.ok:
        print(diag.render_all(result.diagnostics, result.sources), file=sys.stderr)
        return EXIT_GATE
    found = [a for a in result.artifacts if a.stage == stage and project in (None, a.project)]
    if len(found) != 1:
        where = " ".join(args.against)
        print(f"error: {where} holds {'no' if not found else 'several'} stage "
              f"{project + '/' if project else ''}{stage}", file=sys.stderr)
        return EXIT_USAGE
    return found[0].to_artifact(), " ".join(args.against)


def run(args: argparse.Namespace) -> int:
    project, _, stage = args.stage.rpartition("/")
    chosen = _against(args, project or None, stage)
    if isinstance(chosen, int):
        return chosen
    artifact, label = chosen
    missing = missing_log(args.logs)
    if missing:
        print(f"error: no decision log {missing}", file=sys.stderr)
        return EXIT_USAGE
    report = replay(log_events(args.logs, artifact.project, stage), artifact.project, stage,
                    load_model(artifact), label, keep_outcomes=False)
    if args.format == "json":
        json.dump(report.to_data(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "markdown":
        sys.stdout.write(report.markdown())
    else:
        print(report.text())
    if args.max_flip_rate is not None and report.flip_rate * 100 > args.max_flip_rate:
        print(f"replay: {report.flip_rate:.2%} of the replayed decisions change status, more "
              f"than --max-flip-rate {args.max_flip_rate:g}%", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK
