"""The `stageguard` command.

Exit codes: 0 success; 1 the input is wrong (policy errors, a broken artifact or registry);
2 the command line is wrong; 3 internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stageguard.cli import findings, style
from stageguard.cli import galileo as cli_galileo
from stageguard.cli import policy_tests as cli_test
from stageguard.cli import pr_comment as cli_pr_comment
from stageguard.cli import replay as cli_replay
from stageguard.cli import review as cli_review
from stageguard.compiler import diagnostics as diag
from stageguard.compiler.artifacts import compiler_version
from stageguard.compiler.pipeline import Compilation, compile_paths
from stageguard.compiler.unparse import rule_source, string_literal
from stageguard.runtime.engine import InvalidRequest, StageInfo
from stageguard.runtime.evaluate import Failure
from stageguard.runtime.galileo import rulesets_of, wire_value
from stageguard.runtime.management import SERVING_NEEDS, serving_change
from stageguard.runtime.model import ActionType, Artifact, Operator, Status
from stageguard.runtime.registry import Registry, RegistryError, load_artifact
from stageguard.runtime.store import open_store

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"stageguard: error: {message}{_suggestion(self, message)}\n")
        raise SystemExit(EXIT_USAGE)


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """ "; did you mean …?" for a typo'd subcommand, choice or flag (else "")."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found:
        choices = re.findall(r"'([^']*)'", found.group(2))
        close = difflib.get_close_matches(found.group(1), choices, n=1)
    else:
        found = re.search(r"unrecognized arguments: (\S+)", message)
        if not found or not found.group(1).startswith("-"):
            return ""
        flags = [o for a in parser._actions for o in a.option_strings]  # noqa: SLF001 (argparse has no public list)
        close = difflib.get_close_matches(found.group(1).split("=")[0], flags, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stageguard", description="Guardrail policies as code: check, build and "
                "inspect stageguard policies.")
    p.add_argument("-V", "--version", action="version",
                   version=f"stageguard {compiler_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour diagnostics (auto: on a terminal, unless NO_COLOR is set; "
                   "FORCE_COLOR forces it)")
    check = sub.add_parser("check", help="report problems in policy files (exit 1 on errors)")
    findings.add_options(check)

    build = sub.add_parser("build", help="check, compile and version stages into a registry")
    build.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    build.add_argument("--registry", required=True, metavar="DIR",
                       help="registry directory (created if missing)")
    build.add_argument("--format", choices=("text", "json"), default="text")
    build.add_argument("--no-activate", action="store_true",
                       help="publish new versions without serving them (candidates for "
                            "`stage shadow` or `stage rollout`)")

    inspect = sub.add_parser("inspect", help="summarise an artifact file or a registry")
    inspect.add_argument("target", metavar="ARTIFACT|DIR")
    inspect.add_argument("--format", choices=("text", "json"), default="text")

    invoke = sub.add_parser("invoke", help="decide one payload with a stage of a registry")
    invoke.add_argument("stage", metavar="STAGE", help="stage name, or PROJECT/STAGE")
    invoke.add_argument("--registry", required=True, metavar="DIR")
    invoke.add_argument("--input", default="", metavar="TEXT")
    invoke.add_argument("--output", default="", metavar="TEXT")
    invoke.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                        help="a precomputed metric value; VALUE is JSON (0.8, \"joy\", "
                        "[\"ssn\"]) or else a plain string")
    invoke.add_argument("--version", type=int, metavar="N", help="pin a stage version")
    invoke.add_argument("--rulesets", metavar="FILE",
                        help="rulesets for a local stage: stageguard source or Galileo JSON")
    invoke.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    invoke.add_argument("--seed", type=int, help="seed the override choice (replayable)")
    invoke.add_argument("--webhooks", action="store_true",
                        help="deliver subscriptions (off by default for one-off calls)")
    invoke.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: the Galileo wire Response")
    invoke.add_argument("--json", dest="format", action="store_const", const="json",
                        help=argparse.SUPPRESS)  # the older spelling of --format json
    invoke.add_argument("--fail-on", nargs="+", metavar="STATUS", default=[],
                        choices=[s.value for s in Status],
                        help="exit 1 when the decision's status is one of these (e.g. "
                        "triggered error timeout), for scripts and CI")

    stage = sub.add_parser("stage", help="pause, resume, show a stage or its history; shadow, "
                           "roll out, promote, roll back a version")
    stage.add_argument("action", choices=("pause", "resume", "show", "history", "shadow",
                                          "rollout", "promote", "rollback", "clear"),
                       help="shadow/rollout --version N: a candidate beside the serving "
                            "version; promote: the candidate serves; rollback --version N: "
                            "N serves again; clear: drop the candidate")
    stage.add_argument("stage", metavar="STAGE", help="stage name, or PROJECT/STAGE")
    stage.add_argument("--registry", required=True, metavar="DIR")
    stage.add_argument("--version", type=int, metavar="N",
                       help="the version to shadow, roll out or roll back to")
    stage.add_argument("--percent", type=float, metavar="P",
                       help="rollout: the share of traffic the candidate serves (0-100)")
    stage.add_argument("--key", metavar="FIELD",
                       help="rollout: the metadata field that splits traffic (sticky per "
                            "value), e.g. user_id")
    stage.add_argument("--format", choices=("text", "json"), default="text")
    stage.add_argument("--json", dest="format", action="store_const", const="json",
                       help=argparse.SUPPRESS)  # the older spelling of --format json

    registry = sub.add_parser("registry", help="manage a registry store")
    registry.add_argument("action", choices=("migrate",),
                          help="migrate: create or upgrade a postgresql:// registry's "
                               "schema, or bring a directory registry to the current format")
    registry.add_argument("target", metavar="REGISTRY",
                          help="a registry directory, or postgresql://user@host:port/db")

    cli_review.add_parsers(sub)
    cli_galileo.add_parsers(sub)
    cli_test.add_parser(sub)
    cli_replay.add_parser(sub)
    cli_pr_comment.add_parser(sub)
    lsp = sub.add_parser("lsp", help="the language server for editors, over standard input and "
                         "output (needs the `editor` extra; docs/editors.md)")
    lsp.add_argument("--stdio", action="store_true", help="accepted for editors that pass it "
                     "(standard input and output is the only transport)")
    _add_serve(sub)
    return p


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    try:
        from stageguard.server.cli import add_parser
    except ImportError:  # the server extra is not installed: say so when asked to serve
        serve = sub.add_parser("serve", help="serve over HTTP (needs the `server` extra)")
        serve.add_argument("rest", nargs=argparse.REMAINDER)
        return
    add_parser(sub)


def _color_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--color` after the subcommand too (`stageguard lint --color always …`)."""
    for action in parser._actions:  # noqa: SLF001 (argparse has no public lookup)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in set(action.choices.values()):
                sub.add_argument("--color", choices=("auto", "always", "never"),
                                 default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    _color_everywhere(parser)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # say it with the subcommand's usage, not the top level's
            _subparser(parser, args.command).error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return int(exc.code or 0)
    style.configure(args.color)
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "build":
            return _build(args.paths, args.registry, args.format, not args.no_activate)
        if args.command == "invoke":
            return _invoke(args)
        if args.command == "stage":
            return _stage(args)
        if args.command == "registry":
            return _registry(args.target)
        if args.command in ("fmt", "lint", "diff"):
            return cli_review.run(args)
        if args.command in ("import", "export"):
            return cli_galileo.run(args)
        if args.command == "test":
            return cli_test.run(args)
        if args.command == "replay":
            return cli_replay.run(args)
        if args.command == "pr-comment":
            return cli_pr_comment.run(args)
        if args.command == "lsp":
            return _lsp()
        if args.command == "serve":
            from stageguard.server.cli import run as serve

            return serve(args)
        return _inspect(args.target, args.format)
    except (RegistryError, InvalidRequest, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_POLICY
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception:
        print("stageguard: internal error; this is a bug, please report it with the details "
              "below", file=sys.stderr)
        if os.environ.get("STAGEGUARD_DEBUG"):
            traceback.print_exc()
        else:
            exc_type, error_value, _ = sys.exc_info()
            print(f"  {exc_type.__name__ if exc_type else 'Exception'}: {error_value}"
                  " (set STAGEGUARD_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _lsp() -> int:
    try:
        from stageguard.lsp.server import run
    except ImportError as exc:
        print(f"error: the language server needs the editor extra: pip install "
              f"'stageguard[editor]' ({exc})", file=sys.stderr)
        return EXIT_USAGE
    return run()


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # noqa: SLF001 (argparse has no public lookup)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            found = action.choices.get(command)
            if isinstance(found, argparse.ArgumentParser):
                return found
    return parser


def _report(result: Compilation) -> None:
    if result.diagnostics:
        print(style.render_all(result.diagnostics, result.sources, sys.stderr), file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    with style.progress("check"):
        result, named = findings.compile_args(args)

    def ok() -> str:
        stages = len(result.artifacts)
        return (f"ok: {len(result.sources)} file{'s' if len(result.sources) != 1 else ''}, "
                f"{stages} stage{'s' if stages != 1 else ''}")

    return findings.report("check", args, result, result.diagnostics, False, ok, named, began,
                           text_to_stderr=True)


def _build(paths: list[str], registry_dir: str, fmt: str, activate: bool = True) -> int:
    with style.progress("build") as shown:
        result = compile_paths(paths)
        published = []
        if result.ok:
            shown.update(f"publishing {len(result.artifacts)} stages")
            published = open_store(registry_dir).publish(result.artifacts, activate=activate)
    if fmt == "json":
        json.dump({
            "ok": result.ok,
            "diagnostics": diag.as_data(result.diagnostics),
            "stages": [{"project": p.project, "stage": p.stage, "version": p.version,
                        "created": p.created} for p in published],
        }, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _report(result)
        if not result.ok:
            print("build failed: nothing was written to the registry", file=sys.stderr)
        for p in published:
            what = f"v{p.version} (new)" if p.created else f"v{p.version} (unchanged)"
            print(f"{p.project}/{p.stage}: {what}")
    return EXIT_OK if result.ok else EXIT_POLICY


def _registry(target: str) -> int:
    from stageguard.runtime.postgres import is_url

    if not is_url(target) and not (Path(target) / "index.json").is_file():
        print(f"error: {target} is not a registry (no index.json); `registry migrate` takes "
              "a registry directory or a postgresql:// url", file=sys.stderr)
        return EXIT_USAGE
    store = open_store(target)
    try:
        before = store.format_version() if isinstance(store, Registry) else None
        version = store.migrate()
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
    if isinstance(store, Registry):
        said = "already" if before == version else f"migrated from {before} to"
        print(f"{target}: registry format {said} {version}")
    else:
        print(f"{getattr(store, 'where', target)}: schema version {version}")
    return EXIT_OK


def _inspect(target: str, fmt: str = "text") -> int:
    path = Path(target)
    if path.is_dir() and not (path / "index.json").is_file():
        print(f"error: {path} is not a registry (no index.json); `stageguard check {path}` "
              "reads policy sources", file=sys.stderr)
        return EXIT_USAGE
    if path.is_dir():
        registry = Registry(path)
        index = registry.read_index()
        problems = registry.verify()
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} version file{'s' if len(problems) > 1 else ''} of "
                  f"{path} cannot be trusted", file=sys.stderr)
            return EXIT_POLICY
        if not index.projects and fmt == "text":
            print(f"{path}: empty registry")
            return EXIT_OK
        found = []
        for _project, stages in sorted(index.projects.items()):
            for _name, entry in sorted(stages.items()):
                latest = entry.latest
                if latest is None:
                    continue
                art = load_artifact(registry.root / latest.file)
                serving = entry.serving
                found.append(_summary_data(art, [v.version for v in entry.versions],
                                           entry.paused, serving.version if serving else None))
                if fmt == "text":
                    history = ", ".join(f"v{v.version}" for v in entry.versions)
                    state = " · PAUSED" if entry.paused else ""
                    print(_summary(art, f"versions {history}{state}"))
                    print()
        if fmt == "json":
            _print_json({"registry": str(path), "revision": index.revision, "stages": found})
        return EXIT_OK
    if not path.exists():
        print(f"error: `{target}` does not exist", file=sys.stderr)
        return EXIT_POLICY
    art = load_artifact(path)
    if fmt == "json":
        _print_json({"artifact": str(path), "stages": [_summary_data(art, [art.version])]})
    else:
        print(_summary(art, f"version {art.version}"))
    return EXIT_OK


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _summary_data(art: Artifact, versions: list[int], paused: bool = False,
                  serving: int | None = None) -> dict[str, object]:
    """`inspect --format json`: what the text summary says, as data."""
    stage = art.stage
    return {
        "project": art.project, "stage": stage.name, "type": stage.type.value,
        "fail_mode": stage.fail_mode.value, "version": art.version, "digest": art.digest,
        "description": stage.description, "versions": versions, "paused": paused,
        "serving": serving or art.version,
        "rulesets": [{"name": rs.name, "action": rs.action.type.value,
                      "choices": len(rs.action.choices or ()),
                      "notify": len(rs.action.subscriptions),
                      "rules": [rule_source(r.metric, r.operator, r.target_value)
                                for r in rs.rules]} for rs in art.rulesets],
        "metrics": [{"name": m.name, "builtin": m.builtin} for m in art.metrics],
    }


def _summary(art: Artifact, versions: str) -> str:
    stage = art.stage
    lines = [f"{art.project}/{stage.name}  ({stage.type.value}, fail {stage.fail_mode.value})"
             f"  v{art.version} · {versions}",
             f"  digest {art.digest}"]
    if stage.description:
        lines.append(f"  {string_literal(stage.description)}")
    if not art.rulesets:
        lines.append("  rulesets arrive with each invocation" if stage.type.value == "local"
                     else "  no rulesets: every invocation is skipped")
    locs = art.source_map.rulesets if art.source_map else [None] * len(art.rulesets)
    for i, (rs, loc) in enumerate(zip(art.rulesets, locs, strict=True), start=1):
        action = rs.action
        if action.type is ActionType.OVERRIDE:
            n = len(action.choices or ())
            what = f"override ({n} choice{'s' if n != 1 else ''})"
        else:
            what = "passthrough"
        subs = f", notify {len(action.subscriptions)}" if action.subscriptions else ""
        where = f"    [{art.source_map.file}:{loc.ruleset[0]}]" if art.source_map and loc else ""
        lines.append(f"  {i}. {rs.name} -> {what}{subs}{where}")
        for rule in rs.rules:
            text = rule_source(rule.metric, rule.operator, rule.target_value)
            lines.append(f"       when {text}")
    if art.metrics:
        custom = [m.name for m in art.metrics if not m.builtin]
        lines.append(f"  metrics: {', '.join(m.name for m in art.metrics)}"
                     + (f" (custom: {', '.join(custom)})" if custom else ""))
    return "\n".join(lines)


def _split_stage(text: str) -> tuple[str | None, str]:
    project, _, name = text.rpartition("/")
    return (project or None), name


def _metric_arg(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise InvalidRequest(f"--metric {text!r}: write NAME=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a label
    return name.strip(), value


def _read_rulesets(path: str) -> str | list[Any]:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"{path} is not JSON: {exc}") from None
        if isinstance(data, dict):
            data = rulesets_of(data)
        if not isinstance(data, list):
            raise InvalidRequest(f"{path} holds no list of rulesets")
        return data
    return text  # stageguard source: `ruleset` blocks


def _invoke(args: argparse.Namespace) -> int:
    import random

    from stageguard.api import PolicyError, Protect

    project, name = _split_stage(args.stage)
    protect = Protect(args.registry, rng=random.Random(args.seed),
                      deliver_webhooks=args.webhooks)
    try:
        try:
            metrics = dict(_metric_arg(m) for m in args.metric)
        except InvalidRequest as exc:  # a command-line mistake
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        rulesets = _read_rulesets(args.rulesets) if args.rulesets else None
        try:
            response = protect.invoke(
                {"input": args.input, "output": args.output, "metrics": metrics},
                stage_name=name, project=project, version=args.version,
                prioritized_rulesets=rulesets, timeout=args.timeout)
        except PolicyError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_POLICY
        protect.runtime.flush(30)
    finally:
        protect.runtime.close()
    failed = EXIT_POLICY if response.status.value in args.fail_on else EXIT_OK
    if args.format == "json":
        print(response.to_json(indent=2))
        return failed
    sm = response.stage_metadata
    print(f"{response.status.value.upper()}  {sm.project}/{sm.stage_name} v{sm.stage_version}")
    print(f"text: {response.text}")
    for i, rs in enumerate(response.ruleset_results, start=1):
        print(f"  {i}. {rs.name:<24} {rs.status.value}")
        for rule in rs.rule_results:
            if isinstance(rule.value, Failure):  # why: the metric lines below
                value = f"  (value: <{rule.value.status.value}>)"
            else:
                shown = json.dumps(wire_value(rule.value))
                value = "" if rule.status == "skipped" else f"  (value: {shown})"
            when = rule_source(rule.metric, Operator(rule.operator), rule.target_value)
            print(f"       {rule.status:<13} when {when}{value}")
    for m in response.metric_results.values():
        if m.error:
            print(f"  metric {m.name}: {m.status}: {m.error}")
    state = "delivered" if args.webhooks else "not delivered (pass --webhooks)"
    for rs in response.ruleset_results:
        for sub in rs.ruleset.action.subscriptions:
            if rs.status in sub.statuses:
                print(f"  notify {sub.url} for {rs.name}: {state}")
    return failed


def _stage(args: argparse.Namespace) -> int:
    from stageguard.runtime.engine import Runtime

    missing = [f"--{o}" for o in SERVING_NEEDS.get(args.action, ()) if getattr(args, o) is None]
    if missing:
        print(f"error: `stage {args.action}` needs {' and '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    project, name = _split_stage(args.stage)
    where = {"project": project, "stage_name": name}
    with Runtime(args.registry, deliver_webhooks=False, poll_interval=None) as rt:
        info: StageInfo | None
        if args.action == "pause":
            info = rt.pause_stage(**where)
        elif args.action == "resume":
            info = rt.resume_stage(**where)
        elif args.action in SERVING_NEEDS:
            info = rt.set_serving(serving_change(args.action, args.version, args.percent,
                                                 args.key), project=project, stage_name=name)
        else:
            info = rt.get_stage(**where)
            if info is None:
                print(f"error: no stage {args.stage!r} in {args.registry}", file=sys.stderr)
                return EXIT_POLICY
        entry = rt.registry.stage_entry(info.project, info.name) if rt.registry else None
        versions = entry.versions if entry is not None else []
        events = rt.stage_history(project=info.project, stage_name=info.name) \
            if args.action == "history" else []
        if args.format == "json":
            json.dump({"id": info.id, "project": info.project, "name": info.name,
                       "type": info.type.value, "description": info.description,
                       "paused": info.paused, "version": info.version,
                       "fail_mode": info.fail_mode.value,
                       "candidate": info.candidate.model_dump() if info.candidate else None,
                       "versions": [v.model_dump() for v in versions],
                       **({"events": [e.model_dump() for e in events]}
                          if args.action == "history" else {})}, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        serving = f"serving v{info.version}" + (
            f", candidate {info.candidate.describe()}" if info.candidate else "")
        if args.action in ("pause", "resume"):
            print(f"{info.project}/{info.name}: {'paused' if info.paused else 'running'}")
        elif args.action in SERVING_NEEDS:
            print(f"{info.project}/{info.name}: {serving}")
        elif args.action == "history":
            for v in versions:
                mark = "  (serving)" if v.version == info.version else ""
                print(f"v{v.version}  {v.created_at}  {v.digest}{mark}")
            if events:
                print()
            for e in events:
                what = f" v{e.version}" if e.version is not None else ""
                note = f"  ({e.note})" if e.note else ""
                print(f"r{e.revision}  {e.at}  {e.kind}{what}{note}")
        else:
            art = rt.artifact(project=info.project, stage_name=info.name)
            state = "PAUSED" if info.paused else "running"
            print(f"id {info.id} · {state} · {serving}")
            print(_summary(art, f"versions {', '.join(f'v{v.version}' for v in versions)}"))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
