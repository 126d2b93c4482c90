"""`stageguard import galileo` and `stageguard export galileo` (wired in by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from stageguard.compiler import diagnostics as diag
from stageguard.compiler.galileo_interop import export_galileo, import_galileo
from stageguard.compiler.sources import Source, read
from stageguard.runtime.fsutil import atomic_write
from stageguard.runtime.registry import Registry

EXIT_OK, EXIT_FAIL = 0, 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    imp = sub.add_parser("import", help="write stageguard source from Galileo Protect JSON")
    imp.add_argument("kind", choices=("galileo",))
    imp.add_argument("file", metavar="FILE.json", help="a stage body, an invoke request or a "
                     "list of rulesets; - reads standard input")
    imp.add_argument("--stage", metavar="NAME", help="stage name (default: the JSON's)")
    imp.add_argument("--project", metavar="NAME", help="project name (default: the JSON's "
                     "project_name, else `imported`)")
    imp.add_argument("--type", choices=("central", "local"), help="stage type (default: the "
                     "JSON's)")
    imp.add_argument("--output", metavar="FILE.sg", help="write here (atomically) instead of "
                     "standard output; an existing file is kept unless --force")
    imp.add_argument("--force", action="store_true", help="replace an existing --output file")

    exp = sub.add_parser("export", help="write Galileo Protect JSON for a stage of a registry")
    exp.add_argument("kind", choices=("galileo",))
    exp.add_argument("stage", metavar="STAGE", help="stage name, or PROJECT/STAGE")
    exp.add_argument("--registry", required=True, metavar="DIR")
    exp.add_argument("--version", type=int, metavar="N", help="a version (default: latest)")
    exp.add_argument("--project-id", metavar="UUID", help="include Galileo's project id")
    exp.add_argument("--no-names", action="store_true", help="leave out stageguard's ruleset "
                     "names (Galileo's models ignore them; import derives names from "
                     "descriptions)")
    exp.add_argument("--output", metavar="FILE.json",
                     help="write here; an existing file is kept unless --force")
    exp.add_argument("--force", action="store_true", help="replace an existing --output file")


def run(args: argparse.Namespace) -> int:
    if args.output and Path(args.output).exists() and not args.force:
        # A user's file is never replaced by surprise (a policy written by hand, say).
        print(f"error: {args.output} exists; pass --force to replace it", file=sys.stderr)
        return 2
    return _import(args) if args.command == "import" else _export(args)


def _write(text: str, output: str | None) -> None:
    if output:
        atomic_write(Path(output), text.encode("utf-8"), 0o644)
    else:
        sys.stdout.write(text)


def _import(args: argparse.Namespace) -> int:
    if args.file == "-":
        source: Source | None = Source("<stdin>", sys.stdin.read())
        problems: list[diag.Diagnostic] = []
    else:
        path = Path(args.file)
        if not path.is_file():
            print(f"error: `{args.file}` does not exist", file=sys.stderr)
            return EXIT_FAIL
        source, problems = read(path)
    if source is None:
        print(diag.render_all(problems, {}), file=sys.stderr)
        return EXIT_FAIL
    result = import_galileo(source.text, source.path, stage=args.stage, project=args.project,
                            kind=args.type)
    if result.diagnostics:
        print(diag.render_all(result.diagnostics, {source.path: source.text}), file=sys.stderr)
    if not result.ok or result.source is None:
        return EXIT_FAIL
    _write(result.source, args.output)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    project, _, name = args.stage.rpartition("/")
    registry = Registry(args.registry)
    index = registry.read_index()
    project = project or registry.project_of(name, index)
    if args.project_id is not None:
        try:
            uuid.UUID(args.project_id)
        except ValueError:
            print(f"error: --project-id {args.project_id!r} is not a UUID", file=sys.stderr)
            return 2
    artifact = registry.load(project, name, args.version)
    entry = index.projects.get(project, {}).get(name)
    data, notes = export_galileo(artifact, paused=bool(entry and entry.paused),
                                 names=not args.no_names, project_id=args.project_id)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    _write(json.dumps(data, indent=2, ensure_ascii=False) + "\n", args.output)
    return EXIT_OK
