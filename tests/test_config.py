"""The project configuration (compiler/config.py) and how the CLI applies it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stageguard.compiler.config import ConfigError, find, load, resolve
from stageguard.compiler.diagnostics import Severity
from tests.test_cli import no_traceback, run

CORPUS = Path(__file__).parent / "lint" / "findings.sg"


def test_found_by_walking_up_stageguard_toml_first(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[tool.stageguard]\nignore = ['SG0706']\n")
    assert find(deep) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "stageguard.toml").write_text("strict = true\n")
    assert find(deep) == tmp_path / "a" / "stageguard.toml"
    assert load(find(deep)).strict is True  # type: ignore[arg-type]


def test_a_pyproject_without_the_table_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "sub").mkdir()
    assert find(tmp_path / "sub") != tmp_path / "pyproject.toml"


def test_every_key(tmp_path: Path) -> None:
    f = tmp_path / "stageguard.toml"
    f.write_text('select = ["SG07"]\nignore = ["sg0706"]\nstrict = true\nmax-errors = 3\n'
                 '[severity]\nSG0703 = "info"\n')
    s = load(f)
    assert (s.select, s.ignore, s.strict, s.max_errors) == (("SG07",), ("SG0706",), True, 3)
    assert s.severity == {"SG0703": Severity.INFO}


@pytest.mark.parametrize(("text", "says"), [
    ("selct = ['SG07']\n", "unknown key `selct` (did you mean `select`?)"),
    ("ignore = ['SG7x']\n", "`SG7x` is not a code or code prefix"),
    ("strict = 'yes'\n", "`strict` is true or false"),
    ("max-errors = 0\n", "`max-errors` is a whole number of at least 1"),
    ("[severity]\nSG0706 = 'loud'\n", "a severity is error, warning or info"),
    ("select = [\n", "not valid TOML"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "stageguard.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=r"stageguard\.toml") as caught:
        load(f)
    assert says in str(caught.value)


def test_isolated_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "stageguard.toml").write_text("strict = true\n")
    assert resolve(tmp_path, isolated=True).settings.strict is False
    assert resolve(tmp_path).settings.strict is True


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    shutil.copy(CORPUS, tmp_path / "policies" / "findings.sg")
    return tmp_path


def _codes(stdout: str) -> set[str]:
    return {d["code"] for d in json.loads(stdout)["diagnostics"]}


def test_the_cli_applies_the_file_and_flags_win(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.stageguard]\nignore = ['SG0706']\n"
                                            "strict = true\n")
    p = run("lint", "policies", "--format", "json", cwd=project)
    assert p.returncode == 1 and "SG0706" not in _codes(p.stdout)
    p = run("lint", "policies", "--format", "json", "--ignore", "SG07", cwd=project)
    assert p.returncode == 0 and _codes(p.stdout) == set()
    p = run("lint", "policies", "--format", "json", "--isolated", cwd=project)
    assert p.returncode == 0 and "SG0706" in _codes(p.stdout)  # no file: not strict
    p = run("lint", "policies", "--format", "json", "--select", "SG0702", cwd=project)
    assert _codes(p.stdout) == {"SG0702"} and p.returncode == 1  # strict from the file


def test_a_bad_configuration_is_a_usage_error(project: Path) -> None:
    (project / "stageguard.toml").write_text("ignored = ['SG0706']\n")
    p = run("lint", "policies", cwd=project)
    assert p.returncode == 2
    assert "unknown key `ignored` (did you mean `ignore`?)" in p.stderr
    no_traceback(p)
    p = run("check", "policies", "--severity", "SG0706", "--isolated", cwd=project)
    assert p.returncode == 2 and "is not CODE=LEVEL" in p.stderr


def test_max_errors_on_the_command_line(project: Path) -> None:
    p = run("lint", "policies", "--strict", "--max-errors", "2", "--isolated", cwd=project)
    assert p.returncode == 1
    assert p.stdout.count("error[SG07") == 2
    assert "more errors not shown (--max-errors 2)" in p.stdout
