"""`stageguard lsp`: the language server (pygls over stdio).

Diagnostics follow the keystrokes: after a pause (`debounce`, 150 ms) the document's policy
directory is parsed and checked in the event loop and published at once; the exact
analysis's findings (lint) follow from a worker process, which the next edit kills.
Everything else (hover, completion, navigation, rename, formatting, fixes, lenses) answers
from the last analysis of the directory.

Initialization options: `{"debounce": ms, "lint": true|false, "registry": DIR}`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from stageguard.compiler.artifacts import compiler_version
from stageguard.compiler.diagnostics import DOCS_URL, Diagnostic, Severity, Span, from_json
from stageguard.compiler.formatter import format_text
from stageguard.lsp import commands, features
from stageguard.lsp.analysis import Analysis, analyse
from stageguard.lsp.positions import Lines

_SEVERITY = {Severity.ERROR: lsp.DiagnosticSeverity.Error,
             Severity.WARNING: lsp.DiagnosticSeverity.Warning,
             Severity.INFO: lsp.DiagnosticSeverity.Information}
_SYMBOL = {"project": lsp.SymbolKind.Namespace, "metric": lsp.SymbolKind.Field,
           "stage": lsp.SymbolKind.Class, "ruleset": lsp.SymbolKind.Method}
_COMPLETION = {"keyword": lsp.CompletionItemKind.Keyword,
               "metric": lsp.CompletionItemKind.Field,
               "operator": lsp.CompletionItemKind.Operator,
               "label": lsp.CompletionItemKind.EnumMember,
               "status": lsp.CompletionItemKind.EnumMember,
               "value": lsp.CompletionItemKind.Value}


class StageguardServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("stageguard", compiler_version())
        self.analyses: dict[Path, Analysis] = {}
        self.timers: dict[Path, asyncio.TimerHandle] = {}
        self.linters: dict[Path, asyncio.subprocess.Process] = {}
        self._lines: dict[str, Lines] = {}
        self.lint_tasks: dict[Path, asyncio.Task[None]] = {}
        self.generation: dict[Path, int] = {}
        self.debounce = 0.15
        self.lint_enabled = True
        self.registry: str | None = None

    # -- documents and folders

    def buffers(self) -> dict[str, str]:
        out = {}
        for doc in self.workspace.text_documents.values():
            if doc.path:
                out[str(Path(doc.path))] = doc.source
        return out

    def uri(self, file: str) -> str:
        for doc in self.workspace.text_documents.values():
            if doc.path and str(Path(doc.path)) == file:
                return str(doc.uri)
        return str(from_fs_path(file) or file)

    def lines(self, file: str, text: str | None = None) -> Lines:
        """The file's line table for position conversions, built once per text: a
        request converts many spans of one file (references, rename, publishing)."""
        if text is None:
            found = self.analysis_of(file)
            text = (found.text(file) if found else None) or ""
        encoding = str(self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16)
        cached = self._lines.get(file)
        if cached is None or cached.text is not text or cached.encoding != encoding:
            cached = self._lines[file] = Lines(text, encoding)
        return cached

    def location(self, span: Span) -> lsp.Location:
        return lsp.Location(self.uri(span.file), self.lines(span.file).range(span))

    def analysis_of(self, file: str) -> Analysis | None:
        return self.analyses.get(Path(file).parent)

    def of_folder(self, folder: str) -> Analysis:
        return self.analyses.get(Path(folder)) or self.refresh(Path(folder), publish=False)

    def ensure(self, file: str) -> Analysis:
        folder = Path(file).parent
        found = self.analyses.get(folder)
        if found is None or file not in found.compilation.sources:
            found = self.refresh(folder, publish=False)
        return found

    # -- analysis

    def refresh(self, folder: Path, publish: bool = True) -> Analysis:
        self.generation[folder] = self.generation.get(folder, 0) + 1
        analysis = analyse(folder, self.buffers())
        self.analyses[folder] = analysis
        if publish:
            self.publish(analysis)
            if self.lint_enabled and analysis.compilation.ok:
                self.start_lint(folder, analysis)
        return analysis

    def start_lint(self, folder: Path, analysis: Analysis) -> None:
        self.stop_lint(folder)
        generation = self.generation[folder]
        self.lint_tasks[folder] = asyncio.get_running_loop().create_task(
            self.run_lint(folder, generation, analysis))

    async def run_lint(self, folder: Path, generation: int, analysis: Analysis) -> None:
        """The analysis in its own process (lint_worker.py); its findings are published
        unless the text changed meanwhile (then this process was killed)."""
        request = json.dumps({"sources": list(analysis.compilation.sources.items())})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stageguard.lsp.lint_worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        self.linters[folder] = proc
        try:
            out, _ = await proc.communicate(request.encode("utf-8"))
        finally:
            if self.linters.get(folder) is proc:
                del self.linters[folder]
        if proc.returncode != 0 or self.generation.get(folder) != generation:
            return
        analysis.lint = [from_json(d) for d in json.loads(out)]
        self.publish(analysis)

    def stop_lint(self, folder: Path) -> None:
        proc = self.linters.pop(folder, None)
        if proc is not None and proc.returncode is None:
            proc.kill()

    def stop_all(self) -> None:
        for folder in list(self.linters):
            self.stop_lint(folder)

    def schedule(self, folder: Path) -> None:
        self.stop_lint(folder)  # its text is about to change
        old = self.timers.pop(folder, None)
        if old is not None:
            old.cancel()
        self.generation[folder] = self.generation.get(folder, 0) + 1  # stale lint is dropped
        loop = asyncio.get_running_loop()
        self.timers[folder] = loop.call_later(self.debounce, self.refresh, folder)

    def publish(self, analysis: Analysis) -> None:
        for file, found in analysis.diagnostics().items():
            lines = self.lines(file, analysis.text(file))
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
                uri=self.uri(file), diagnostics=[self.diagnostic(d, lines) for d in found]))

    def diagnostic(self, d: Diagnostic, lines: Lines) -> lsp.Diagnostic:
        message = d.message + (f" ({d.label})" if d.label else "")
        extra = [*d.notes, *([f"help: {d.help}"] if d.help else [])]
        related = [lsp.DiagnosticRelatedInformation(self.location(r.span), r.message)
                   for r in d.related]
        return lsp.Diagnostic(
            range=lines.range(d.span), message="\n".join([message, *extra]),
            severity=_SEVERITY[d.severity], code=d.code,
            code_description=lsp.CodeDescription(href=DOCS_URL), source="stageguard",
            related_information=related or None,
            data={"help": d.help} if d.help else None)


server = StageguardServer()


def _file(uri: str) -> str:
    path = to_fs_path(uri)
    return str(Path(path)) if path else uri


@server.feature(lsp.INITIALIZE)
def initialize(ls: StageguardServer, params: lsp.InitializeParams) -> None:
    options = params.initialization_options or {}
    if isinstance(options, dict):
        if isinstance(options.get("debounce"), int | float):
            ls.debounce = max(0.0, float(options["debounce"]) / 1000)
        if isinstance(options.get("lint"), bool):
            ls.lint_enabled = options["lint"]
        if isinstance(options.get("registry"), str):
            ls.registry = options["registry"]


@server.feature(lsp.SHUTDOWN)
def shutdown(ls: StageguardServer, params: None) -> None:
    ls.stop_all()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: StageguardServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.refresh(Path(_file(params.text_document.uri)).parent)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: StageguardServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.schedule(Path(_file(params.text_document.uri)).parent)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: StageguardServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.refresh(Path(_file(params.text_document.uri)).parent)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
async def did_close(ls: StageguardServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.refresh(Path(_file(params.text_document.uri)).parent)


def _offset(ls: StageguardServer, uri: str, position: lsp.Position) -> tuple[str, Analysis,
                                                                            int]:
    file = _file(uri)
    analysis = ls.ensure(file)
    return file, analysis, ls.lines(file).offset(position)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: StageguardServer, params: lsp.HoverParams) -> lsp.Hover | None:
    file, analysis, offset = _offset(ls, params.text_document.uri, params.position)
    found = features.hover(analysis, file, offset)
    if found is None:
        return None
    text, span = found
    return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text),
                     ls.lines(file).range(span))


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[" ", '"', "[", ","]))
def completion(ls: StageguardServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    file = _file(params.text_document.uri)
    doc = ls.workspace.get_text_document(params.text_document.uri)
    analysis = ls.ensure(file)
    lines = ls.lines(file, doc.source)
    items = features.complete(analysis, file, doc.source, lines.offset(params.position))
    return lsp.CompletionList(is_incomplete=False, items=[
        lsp.CompletionItem(label=c.label, kind=_COMPLETION[c.kind], detail=c.detail or None,
                           insert_text=c.insert) for c in items])


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: StageguardServer, params: lsp.DefinitionParams) -> list[lsp.Location]:
    file, analysis, offset = _offset(ls, params.text_document.uri, params.position)
    return [ls.location(s) for s in features.definition(analysis, file, offset)]


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def references(ls: StageguardServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
    file, analysis, offset = _offset(ls, params.text_document.uri, params.position)
    return [ls.location(s) for s in features.references(
        analysis, file, offset, params.context.include_declaration)]


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: StageguardServer,
                     params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    file = _file(params.text_document.uri)
    analysis = ls.ensure(file)
    lines = ls.lines(file)

    def convert(o: features.Outline) -> lsp.DocumentSymbol:
        return lsp.DocumentSymbol(name=o.name, kind=_SYMBOL[o.kind], range=lines.range(o.span),
                                  selection_range=lines.range(o.selection),
                                  detail=o.detail or o.kind,
                                  children=[convert(c) for c in o.children] or None)

    return [convert(o) for o in features.outline(analysis, file)]


@server.feature(lsp.WORKSPACE_SYMBOL)
def workspace_symbols(ls: StageguardServer,
                      params: lsp.WorkspaceSymbolParams) -> list[lsp.SymbolInformation]:
    roots = [Path(p) for f in ls.workspace.folders.values() if (p := to_fs_path(f.uri))]
    if not roots and ls.workspace.root_path:
        roots = [Path(ls.workspace.root_path)]
    folders = sorted({p.parent for r in roots for p in r.rglob("*.sg")
                      if ".venv" not in p.parts and not p.name.startswith(".")})
    query = params.query.lower()
    out = []
    for folder in folders:
        analysis = ls.analyses.get(folder) or ls.refresh(folder, publish=False)
        for sym in analysis.index.symbols:
            if sym.declaration and sym.kind in _SYMBOL and query in sym.name.lower():
                out.append(lsp.SymbolInformation(
                    name=sym.name, kind=_SYMBOL[sym.kind], location=ls.location(sym.span),
                    container_name=sym.stage))
    return out


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
def prepare_rename(ls: StageguardServer,
                   params: lsp.PrepareRenameParams) -> lsp.PrepareRenamePlaceholder | None:
    file, analysis, offset = _offset(ls, params.text_document.uri, params.position)
    try:
        sym = features.rename_target(analysis, file, offset)
    except features.RenameError as exc:
        ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, str(exc)))
        return None
    return lsp.PrepareRenamePlaceholder(ls.lines(file).range(sym.span), sym.name)


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
def rename(ls: StageguardServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
    file, analysis, offset = _offset(ls, params.text_document.uri, params.position)
    try:
        spans = features.rename(analysis, file, offset, params.new_name)
    except features.RenameError as exc:
        ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Error, str(exc)))
        return None
    changes: dict[str, list[lsp.TextEdit]] = {}
    for span in spans:
        changes.setdefault(ls.uri(span.file), []).append(
            lsp.TextEdit(ls.lines(span.file).range(span), params.new_name))
    return lsp.WorkspaceEdit(changes=changes)


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: StageguardServer,
               params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    file = _file(params.text_document.uri)
    doc = ls.workspace.get_text_document(params.text_document.uri)
    result = format_text(doc.source, file)
    if not result.ok or result.text is None:
        why = result.diagnostics[0].message if result.diagnostics else "it does not parse"
        ls.window_show_message(lsp.ShowMessageParams(
            lsp.MessageType.Warning, f"stageguard: not formatted: {why}"))
        return None
    if result.text == doc.source:
        return []
    lines = ls.lines(file, doc.source)
    whole = lsp.Range(lsp.Position(0, 0), lines.position(len(doc.source)))
    return [lsp.TextEdit(whole, result.text)]


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix,
                                                         lsp.CodeActionKind.RefactorRewrite]))
def code_actions(ls: StageguardServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    file = _file(params.text_document.uri)
    analysis = ls.ensure(file)
    lines = ls.lines(file)
    start, end = lines.offset(params.range.start), lines.offset(params.range.end)
    out = []
    for fix in features.fixes(analysis, file, start, end):
        edit = lsp.WorkspaceEdit(changes={params.text_document.uri: [
            lsp.TextEdit(lines.range(fix.span), fix.text)]})
        out.append(lsp.CodeAction(
            title=fix.title, kind=lsp.CodeActionKind.QuickFix, edit=edit,
            diagnostics=[ls.diagnostic(fix.diagnostic, lines)] if fix.diagnostic else None,
            is_preferred=fix.title.startswith("replace")))
    cases = features.threshold_cases(analysis, file, start)
    if cases is not None:
        target = cases.test_file
        turi = ls.uri(str(target))
        if target.exists():
            existing = target.read_text(encoding="utf-8")
            tail = Lines(existing, ls.lines(file).encoding).position(len(existing))
            text = ("" if existing.endswith("\n") else "\n") + "\n" + cases.text
            changes: list[Any] = [lsp.TextDocumentEdit(
                lsp.OptionalVersionedTextDocumentIdentifier(turi, None),
                [lsp.TextEdit(lsp.Range(tail, tail), text)])]
        else:
            stage = target.name.removesuffix(".test.toml")
            changes = [lsp.CreateFile(uri=turi), lsp.TextDocumentEdit(
                lsp.OptionalVersionedTextDocumentIdentifier(turi, None),
                [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)),
                              f'stage = "{stage}"\n\n' + cases.text)])]
        out.append(lsp.CodeAction(title=cases.title, kind=lsp.CodeActionKind.RefactorRewrite,
                                  edit=lsp.WorkspaceEdit(document_changes=changes)))
    return out


@server.feature(lsp.TEXT_DOCUMENT_CODE_LENS)
def code_lens(ls: StageguardServer, params: lsp.CodeLensParams) -> list[lsp.CodeLens]:
    file = _file(params.text_document.uri)
    analysis = ls.ensure(file)
    lines = ls.lines(file)
    out = []
    for lens in commands.lenses(analysis, file, ls.registry):
        out.append(lsp.CodeLens(range=lines.range(lens.span), command=lsp.Command(
            title=lens.title, command=lens.command, arguments=lens.arguments)))
    return out


@server.command(commands.RUN_TESTS)
def run_tests(ls: StageguardServer, folder: str, stage: str) -> dict[str, Any]:
    result = commands.run_tests(folder, stage)
    ls.window_show_message(lsp.ShowMessageParams(
        lsp.MessageType.Info if not result["failed"] else lsp.MessageType.Warning,
        result["summary"]))
    return result


@server.command(commands.EVALUATE)
def evaluate(ls: StageguardServer, folder: str, project: str, stage: str,
             metrics: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the lens gives them; a client may send other metric values."""
    result = commands.evaluate(ls.of_folder(folder), project, stage, metrics)
    ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, result["summary"]))
    return result


@server.command(commands.DIFF_REGISTRY)
def diff_registry(ls: StageguardServer, folder: str, project: str, stage: str,
                  registry: str) -> dict[str, Any]:
    result = commands.diff_registry(ls.of_folder(folder), project, stage, registry)
    ls.window_show_message(lsp.ShowMessageParams(lsp.MessageType.Info, result["summary"]))
    return result


def run() -> int:
    server.start_io()
    return 0


__all__ = ["run", "server"]
