"""The language server end to end: `stageguard lsp` as a real process, driven by a real LSP
client (pytest-lsp) over stdio, with the capabilities VS Code and Neovim announce."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import POLICIES

EXE = Path(sys.executable).with_name("stageguard")

pytestmark = pytest.mark.asyncio(loop_scope="function")
# What "Done when" names (diagnostics, hover, completion) runs with Neovim's capabilities too.
BOTH_EDITORS = pytest.mark.parametrize("client", ["visual-studio-code", "neovim"],
                                       indirect=True)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies")
    return tmp_path


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[str(EXE), "lsp"]),
                    params=["visual-studio-code"])
async def client(lsp_client: LanguageClient, workspace: Path,
                 request: pytest.FixtureRequest) -> AsyncIterator[None]:
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities(request.param),
        root_uri=workspace.as_uri(),
        workspace_folders=[lsp.WorkspaceFolder(workspace.as_uri(), "ws")],
        initialization_options={"debounce": 50, "registry": str(workspace / "registry")}))
    yield
    await lsp_client.shutdown_session()


def uri(workspace: Path, name: str) -> str:
    return (workspace / "policies" / name).as_uri()


def open_doc(c: LanguageClient, workspace: Path, name: str, text: str | None = None) -> str:
    path = workspace / "policies" / name
    u = path.as_uri()
    c.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(
        u, "stageguard", 1, text if text is not None else path.read_text())))
    return u


def change(c: LanguageClient, u: str, version: int, text: str) -> None:
    c.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version, u),
        [lsp.TextDocumentContentChangeWholeDocument(text)]))


async def diagnostics(c: LanguageClient, u: str,
                      until: Callable[[Sequence[lsp.Diagnostic]], bool],
                      timeout: float = 20.0) -> Sequence[lsp.Diagnostic]:
    async def wait() -> Sequence[lsp.Diagnostic]:
        while True:
            found = c.diagnostics.get(u)
            if found is not None and until(found):
                return found
            await c.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return await asyncio.wait_for(wait(), timeout)


def codes(found: Sequence[lsp.Diagnostic]) -> list[str]:
    return sorted(str(d.code) for d in found)


def position_of(text: str, needle: str, delta: int = 0) -> lsp.Position:
    at = text.index(needle) + delta
    line = text.count("\n", 0, at)
    return lsp.Position(line, at - (text.rfind("\n", 0, at) + 1))


TYPO = ("output_toxicity >= 0.7", "output_toxicty >= 0.7")


@BOTH_EDITORS
async def test_diagnostics_are_checks_at_the_same_spans(
        client: LanguageClient, workspace: Path) -> None:
    guard = workspace / "policies" / "output_guard.sg"
    guard.write_text(guard.read_text().replace(*TYPO))
    expected = json.loads(subprocess.run(
        [str(EXE), "check", "policies", "--format", "json", "--isolated"], cwd=workspace,
        capture_output=True, text=True, timeout=60).stdout)["diagnostics"]
    u = open_doc(client, workspace, "output_guard.sg")
    found = await diagnostics(client, u, lambda ds: bool(ds))
    assert [(str(d.code), d.range.start.line + 1, d.range.start.character + 1,
             d.range.end.line + 1, d.range.end.character + 1) for d in found] == [
        (e["code"], e["span"]["line"], e["span"]["column"], e["span"]["end_line"],
         e["span"]["end_column"]) for e in expected]
    [d] = found
    assert d.severity == lsp.DiagnosticSeverity.Error and d.source == "stageguard"
    assert d.code_description and d.code_description.href.endswith("docs/diagnostics.md")
    assert "help: did you mean `output_toxicity`?" in d.message
    # The other files of the directory are published too, clean.
    assert list(client.diagnostics.get(uri(workspace, "metrics.sg"), [None])) == []


async def test_typing_is_debounced_and_lint_follows(
        client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "input_guard.sg").read_text()
    u = open_doc(client, workspace, "input_guard.sg")
    # The analysis's overlap findings (SG0706) follow the check's (none) from a thread.
    found = await diagnostics(client, u, lambda ds: "SG0706" in codes(ds))
    assert set(codes(found)) == {"SG0706"}
    for version, partial in enumerate(["stage x {", "stage x { rules", text + "\nstage {"], 2):
        change(client, u, version, partial)
    found = await diagnostics(client, u, lambda ds: "SG0001" in codes(ds))
    assert found[0].range.start.line == text.count("\n") + 1
    change(client, u, 9, text)
    await diagnostics(client, u, lambda ds: "SG0001" not in codes(ds) and "SG0706" in
                      codes(ds))


async def test_a_metric_declared_in_another_file(client: LanguageClient, workspace: Path) -> None:
    out = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, out, lambda ds: "SG0201" not in codes(ds))
    metrics_text = (workspace / "policies" / "metrics.sg").read_text()
    m = open_doc(client, workspace, "metrics.sg")
    without = metrics_text.replace("metric answer_words", "metric answer_wordz")
    change(client, m, 2, without)
    found = await diagnostics(client, out, lambda ds: "SG0201" in codes(ds))
    assert any("answer_words" in d.message for d in found)


@BOTH_EDITORS
async def test_hover(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    u = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, u, lambda ds: True)

    async def hover(needle: str, delta: int = 0) -> str:
        h = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(u), position_of(text, needle, delta)))
        assert h is not None and isinstance(h.contents, lsp.MarkupContent)
        return h.contents.value

    words = await hover("answer_words", 3)
    assert "**answer_words** · number" in words and "declared at metrics.sg:" in words
    tox = await hover("output_toxicity >= 0.7", 2)
    assert "score in [0, 1]" in tox and "built-in metric" in tox
    assert "operators: `>`" in tox and "`contains`" not in tox
    threshold = await hover("0.7", 1)
    assert "`output_toxicity >= 0.7` holds for values 0.7 or above: 30% of the declared " \
           "range [0, 1]" in threshold
    ruleset = await hover("ruleset pii_leak", 9)
    assert "ruleset **pii_leak** · rank 1 of" in ruleset and "override (1 choice)" in ruleset
    stage = await hover("stage output_guard", 7)
    assert "central, fail closed" in stage


@BOTH_EDITORS
async def test_completion(client: LanguageClient, workspace: Path) -> None:
    base = (workspace / "policies" / "output_guard.sg").read_text()
    u = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, u, lambda ds: True)
    anchor = "  ruleset pii_leak {\n"

    async def complete(line: str) -> list[lsp.CompletionItem]:
        text = base.replace(anchor, anchor + line + "\n", 1)
        change(client, u, len(line) + 2, text)
        result = await client.text_document_completion_async(lsp.CompletionParams(
            lsp.TextDocumentIdentifier(u), position_of(text, anchor + line, len(anchor + line))))
        assert isinstance(result, lsp.CompletionList)
        return result.items

    metrics = {i.label: i for i in await complete("    when ")}
    assert {"output_toxicity", "answer_words", "output_pii"} <= set(metrics)
    assert metrics["output_toxicity"].detail == "score in [0, 1]"
    assert [i.label for i in await complete("    when output_toxicity ")] == [
        ">", "<", ">=", "<=", "==", "!="]
    assert "contains" in [i.label for i in await complete("    when output_pii ")]
    labels = await complete("    when output_pii any [")
    assert '"ssn"' in [i.insert_text for i in labels]
    statuses = [i.label for i in await complete('    notify "https://h.example/x" on ')]
    assert "triggered" in statuses and "timeout" in statuses
    assert [i.label for i in await complete("    ")] == [
        "when", "description", "override", "passthrough", "notify"]


async def test_definition_references_and_symbols(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    u = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, u, lambda ds: True)
    where = lsp.TextDocumentPositionParams(lsp.TextDocumentIdentifier(u),
                                           position_of(text, "answer_words", 2))
    defs = await client.text_document_definition_async(lsp.DefinitionParams(
        where.text_document, where.position))
    assert isinstance(defs, list) and [d.uri for d in defs] == [uri(workspace, "metrics.sg")]
    metrics_text = (workspace / "policies" / "metrics.sg").read_text()
    assert defs[0].range.start == position_of(metrics_text, "answer_words")
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        context=lsp.ReferenceContext(include_declaration=False),
        text_document=where.text_document, position=where.position))
    assert refs is not None
    uses = sum(sum(1 for line in (workspace / "policies" / f).read_text().splitlines()
                   if line.strip().startswith("when answer_words"))
               for f in ("output_guard.sg", "input_guard.sg", "agent_tools.sg"))
    assert len(refs) == uses >= 1
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        lsp.TextDocumentIdentifier(u)))
    assert symbols is not None
    stage = next(s for s in symbols if isinstance(s, lsp.DocumentSymbol)
                 and s.name == "output_guard")
    assert stage.kind == lsp.SymbolKind.Class and stage.children
    assert stage.children[0].name == "pii_leak"
    found = await client.workspace_symbol_async(lsp.WorkspaceSymbolParams(query="question"))
    assert found is not None  # from input_guard.sg, which is not open
    assert {s.name for s in found} == {"abusive_question", "secrets_in_question"}


async def test_rename(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    u = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, u, lambda ds: True)
    doc = lsp.TextDocumentIdentifier(u)
    edit = await client.text_document_rename_async(lsp.RenameParams(
        doc, position_of(text, "answer_words", 1), "answer_length_words"))
    assert edit is not None and edit.changes is not None
    assert set(edit.changes) >= {u, uri(workspace, "metrics.sg")}
    assert all(e.new_text == "answer_length_words" for es in edit.changes.values() for e in es)
    edit = await client.text_document_rename_async(lsp.RenameParams(
        doc, position_of(text, "ruleset pii_leak", 9), "personal_data"))
    assert edit is not None and edit.changes is not None
    assert list(edit.changes) == [u] and len(edit.changes[u]) == 1
    refused = await client.text_document_prepare_rename_async(lsp.PrepareRenameParams(
        doc, position_of(text, "output_toxicity >= 0.7", 2)))
    assert refused is None  # a built-in metric keeps the catalog's name
    clash = await client.text_document_rename_async(lsp.RenameParams(
        doc, position_of(text, "ruleset pii_leak", 9), "toxic_answer"))
    assert clash is None


async def test_formatting_and_fixes(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    messy = text.replace("  ruleset pii_leak {", "  ruleset   pii_leak    {").replace(*TYPO)
    u = open_doc(client, workspace, "output_guard.sg", messy)
    found = await diagnostics(client, u, lambda ds: "SG0201" in codes(ds))
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        lsp.TextDocumentIdentifier(u), lsp.FormattingOptions(2, True)))
    assert edits is not None and len(edits) == 1
    assert edits[0].new_text == text.replace(*TYPO)
    [typo] = [d for d in found if d.code == "SG0201"]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(u), typo.range, lsp.CodeActionContext([typo])))
    assert actions is not None
    [fix] = [a for a in actions if isinstance(a, lsp.CodeAction)
             and a.title == "replace with output_toxicity"]
    assert fix.edit and fix.edit.changes
    [te] = fix.edit.changes[u]
    assert te.new_text == "output_toxicity" and te.range == typo.range


async def test_or_is_split_into_two_rulesets(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    wrong = text.replace("    when output_toxicity >= 0.7",
                         "    when output_toxicity >= 0.7 or output_sexist >= 0.7")
    u = open_doc(client, workspace, "output_guard.sg", wrong)
    found = await diagnostics(client, u, lambda ds: "SG0001" in codes(ds))
    [bad] = [d for d in found if d.code == "SG0001"]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(u), bad.range, lsp.CodeActionContext([bad])))
    assert actions is not None
    [split] = [a for a in actions if isinstance(a, lsp.CodeAction)
               and a.title.startswith("split into two rulesets")]
    assert split.edit and split.edit.changes
    [te] = split.edit.changes[u]
    lines = wrong.splitlines(True)
    start = sum(len(x) for x in lines[:te.range.start.line]) + te.range.start.character
    end = sum(len(x) for x in lines[:te.range.end.line]) + te.range.end.character
    fixed = wrong[:start] + te.new_text + wrong[end:]
    (workspace / "policies" / "output_guard.sg").write_text(fixed)
    p = subprocess.run([str(EXE), "check", "policies"], cwd=workspace, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "ruleset toxic_answer_or {" in fixed and "when output_sexist >= 0.7" in fixed


async def test_code_lenses_run_tests_evaluate_and_diff(
        client: LanguageClient, workspace: Path) -> None:
    subprocess.run([str(EXE), "build", "policies", "--registry", "registry"], cwd=workspace,
                   check=True, capture_output=True, timeout=60)
    text = (workspace / "policies" / "input_guard.sg").read_text()
    u = open_doc(client, workspace, "input_guard.sg")
    await diagnostics(client, u, lambda ds: True)
    lenses = await client.text_document_code_lens_async(lsp.CodeLensParams(
        lsp.TextDocumentIdentifier(u)))
    assert lenses is not None
    titles = {lens.command.title: lens.command for lens in lenses if lens.command}
    assert set(titles) == {"▶ run policy tests", "evaluate a payload",
                           "diff against the registry"}
    expected = json.loads(subprocess.run(
        [str(EXE), "test", "policies/input_guard.test.toml", "--format", "json"],
        cwd=workspace, capture_output=True, text=True, timeout=60).stdout)

    async def run(command: lsp.Command, *extra: object) -> dict[str, object]:
        result = await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command.command, [*(command.arguments or [])[:len(command.arguments or []) -
                                                         len(extra)], *extra]
            if extra else command.arguments))
        assert isinstance(result, dict)
        return result

    tests = await run(titles["▶ run policy tests"])
    assert tests["passed"] == expected["passed"] and tests["failed"] == 0
    ran = await run(titles["evaluate a payload"],
                    {"prompt_injection": ["impersonation"]})
    assert ran["status"] == "triggered" and ran["ruleset"] == "prompt_injection"
    same = await run(titles["diff against the registry"])
    assert same["behaviour_changed"] is False
    change(client, u, 2, text.replace("input_toxicity > 0.85", "input_toxicity > 0.8"))
    await asyncio.sleep(0.3)  # past the debounce: the edit is analysed
    moved = await run(titles["diff against the registry"])
    assert moved["behaviour_changed"] is True and moved["regions"] == 9


async def test_a_rulesets_file(client: LanguageClient, workspace: Path) -> None:
    text = "ruleset tools_failing {\n  when tool_eror_rate >= 0.5\n  passthrough\n}\n"
    u = open_doc(client, workspace, "agent_tools.rulesets.sg", text)
    found = await diagnostics(client, u, lambda ds: bool(ds))
    assert codes(found) == ["SG0201"] and found[0].range.start == lsp.Position(1, 7)
    change(client, u, 2, text.replace("tool_eror_rate", "answer_words") + "\n")
    await diagnostics(client, u, lambda ds: not ds)  # a metric of metrics.sg, beside it
    result = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(u), lsp.Position(5, 0)))
    assert isinstance(result, lsp.CompletionList)
    assert [i.label for i in result.items] == ["ruleset"]


async def test_add_cases_around_a_threshold(client: LanguageClient, workspace: Path) -> None:
    text = (workspace / "policies" / "output_guard.sg").read_text()
    u = open_doc(client, workspace, "output_guard.sg")
    await diagnostics(client, u, lambda ds: True)
    at = position_of(text, "output_toxicity >= 0.7", 20)
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(u), lsp.Range(at, at), lsp.CodeActionContext([])))
    assert actions is not None
    [add] = [a for a in actions if isinstance(a, lsp.CodeAction)
             and a.title.startswith("add policy test cases around `output_toxicity >= 0.7`")]
    assert add.edit and add.edit.document_changes
    [change_] = add.edit.document_changes
    assert isinstance(change_, lsp.TextDocumentEdit)
    tests = workspace / "policies" / "output_guard.test.toml"
    assert change_.text_document.uri == tests.as_uri()
    [te] = change_.edits
    before = tests.read_text()
    assert te.range.start.line == before.count("\n")  # appended at the end
    tests.write_text(before + te.new_text)
    assert te.new_text.count("[[case]]") == 3
    p = subprocess.run([str(EXE), "test", str(tests), "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    result = json.loads(p.stdout)
    added = [r for r in result["results"] if "output_toxicity >= 0.7, " in r["id"]]
    assert len(added) == 3 and all(r["passed"] for r in added), p.stdout

