"""The editors' highlighting: the TextMate grammar of the VS Code extension (editors/vscode),
tested with vscode-tmgrammar-test (hand-written scope assertions, and reviewed snapshots of
real policies), and the keywords every highlighter knows against the language's grammar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from pygments.token import Name, Text

from stageguard.integrations.pygments import StageguardLexer

ROOT = Path(__file__).parent.parent
VSCODE = ROOT / "editors" / "vscode"
BIN = VSCODE / "node_modules" / ".bin"
GRAMMAR = VSCODE / "syntaxes" / "stageguard.tmLanguage.json"

needs_node = pytest.mark.skipif(not (BIN / "vscode-tmgrammar-test").exists()
                                or shutil.which("node") is None,
                                reason="no node/npm: scripts/setup.sh installs the grammar "
                                "tests with npm when it is there")


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), "-g", str(GRAMMAR), *args], cwd=VSCODE,
                          capture_output=True, text=True, timeout=120)


@needs_node
def test_scope_assertions(tmp_path: Path) -> None:
    p = tool("vscode-tmgrammar-test", "test/grammar.test.sg")
    assert p.returncode == 0, p.stdout + p.stderr
    # The assertions can fail: one wrong scope is reported.
    wrong = (VSCODE / "test" / "grammar.test.sg").read_text().replace(
        "#                           ^^^ constant.numeric.stageguard",
        "#                           ^^^ string.quoted.double.stageguard", 1)
    (tmp_path / "wrong.test.sg").write_text(wrong)
    p = tool("vscode-tmgrammar-test", str(tmp_path / "wrong.test.sg"))
    assert p.returncode != 0 and "constant.numeric.stageguard" in p.stdout


@needs_node
def test_snapshots_of_real_policies() -> None:
    p = tool("vscode-tmgrammar-snap", "test/snap/*.sg")
    assert p.returncode == 0, p.stdout + p.stderr


EVERY_KEYWORD = """project p
metric m {
  type labels
  description "d"
  labels ["a"]
}
metric n {
  type number
  min 0
  max 9
  timeout 200ms
  fail closed
  scorer "http://models.internal/score"
  field "scores.n"
}
stage s {
  type central
  fail open
  id "3f2b8c1e-5d4a-4e7b-9c2d-1a6f0e8b7c5d"
  ruleset r {
    when m contains "a"
    when m any ["a"]
    when m all ["a"]
    when m is not empty
    when n > 1
    override {
      choice "c"
    }
    notify "https://h.example/x" on triggered
  }
  ruleset q {
    when m is empty
    passthrough
  }
}
"""


def _terminals() -> set[str]:
    text = (ROOT / "grammar" / "stageguard.lark").read_text()
    return set(re.findall(r'^[A-Z]+: "([a-z]+)"$', text, re.M))


def test_every_keyword_is_highlighted() -> None:
    keywords = _terminals()
    assert {"ruleset", "when", "notify", "passthrough"} <= keywords
    grammar = json.dumps(json.loads(GRAMMAR.read_text()))
    missing = [k for k in keywords if not re.search(rf"\b{k}\b", grammar)]
    assert not missing, f"the TextMate grammar does not know {missing}"
    lexed = {v: t for t, v in StageguardLexer().get_tokens(EVERY_KEYWORD)}
    assert keywords <= set(lexed), keywords - set(lexed)
    plain = [k for k in keywords if lexed[k] in (Name, Text)]
    assert not plain, f"the Pygments lexer shows {plain} as plain names"


def test_the_extension_manifest() -> None:
    manifest = json.loads((VSCODE / "package.json").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert manifest["version"] == version
    [language] = manifest["contributes"]["languages"]
    assert language["id"] == "stageguard" and language["extensions"] == [".sg"]
    assert (VSCODE / language["configuration"]).is_file()
    [grammar] = manifest["contributes"]["grammars"]
    assert grammar["scopeName"] == json.loads(GRAMMAR.read_text())["scopeName"]
    assert (VSCODE / grammar["path"]).resolve() == GRAMMAR.resolve()
    assert json.loads((VSCODE / "language-configuration.json").read_text())["comments"] == {
        "lineComment": "#"}
    if shutil.which("node"):
        p = subprocess.run(["node", "--check", str(VSCODE / "extension.js")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
