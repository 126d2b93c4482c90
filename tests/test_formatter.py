"""The formatter: canonical layout, comments kept, meaning and fixed point guarded."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given

from stageguard.cli import main
from stageguard.compiler import formatter
from stageguard.compiler.formatter import INTERNAL, format_text, shape
from stageguard.compiler.parser import parse
from stageguard.compiler.pipeline import compile_text
from tests.conftest import POLICIES
from tests.profiles import examples
from tests.strategies import awkward_sources

CORPUS = Path(__file__).parent / "fmt"


def _comments(text: str) -> list[str]:
    parsed = parse(text, "x.sg")
    assert parsed.file is not None
    return [c.text.rstrip() for c in parsed.file.comments]


def assert_formats_safely(text: str) -> str:
    result = format_text(text, "x.sg")
    assert result.ok, result.diagnostics
    out = result.text
    assert out is not None
    before, after = parse(text, "x.sg"), parse(out, "x.sg")
    assert shape(after.file) == shape(before.file)          # same meaning
    assert _comments(out) == _comments(text)                # every comment, in order
    assert format_text(out, "x.sg").text == out              # a fixed point
    assert all(len(line) <= formatter.WIDTH or '"' in line for line in out.splitlines())
    return out


@pytest.mark.parametrize("case", sorted(p.stem for p in CORPUS.glob("*.sg")))
def test_corpus_formats_to_its_reviewed_layout(case: str) -> None:
    text = (CORPUS / f"{case}.sg").read_text(encoding="utf-8")
    out = assert_formats_safely(text)
    assert out == (CORPUS / f"{case}.formatted").read_text(encoding="utf-8")


def test_comments_stay_with_what_they_describe() -> None:
    out = assert_formats_safely((CORPUS / "awkward_comments.sg").read_text(encoding="utf-8"))
    lines = out.splitlines()
    assert "  fail" not in out
    assert '      "ssn",  # social security' in lines          # trailing, inside a list
    assert lines[lines.index("  # before ruleset a") + 2] == "  ruleset a {"  # leads it
    assert "      choice \"no\"  # choice trailing" in lines
    assert lines[-1] == "# end of file" and "}  # after stage" in lines


def test_blank_lines_between_rulesets_are_kept_but_capped_at_one() -> None:
    text = ("project p\nstage s {\n  type central\n  ruleset a {\n    when output_pii is empty\n"
            "    passthrough\n  }\n\n\n\n  ruleset b {\n    when output_pii is empty\n"
            "    passthrough\n  }\n  ruleset c {\n    when output_pii is empty\n"
            "    passthrough\n  }\n}\n")
    out = assert_formats_safely(text)
    assert "  }\n\n  ruleset b {" in out and "  }\n  ruleset c {" in out


def test_example_policies_are_formatted() -> None:
    for path in POLICIES.glob("*.sg"):
        text = path.read_text(encoding="utf-8")
        assert format_text(text, str(path)).text == text, path


@examples(2, suppress_health_check=[HealthCheck.too_slow])
@given(awkward_sources())
def test_generated_policies_format_safely_and_keep_their_digest(text: str) -> None:
    out = assert_formats_safely(text)
    a, b = compile_text(text, "a.sg"), compile_text(out, "b.sg")
    assert a.ok and b.ok, (a.diagnostics, b.diagnostics)
    assert [x.digest for x in a.artifacts] == [x.digest for x in b.artifacts]


def test_a_formatter_bug_is_refused_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a printer that loses a statement: the re-parse check must catch it.
    real = formatter._Printer.parts

    def lossy(self: formatter._Printer, node: object, indent: str) -> object:
        head, lit, tail = real(self, node, indent)
        return (head.replace(">= 0.7", ">= 0.8"), lit, tail)

    monkeypatch.setattr(formatter._Printer, "parts", lossy)
    result = format_text("project p\nstage s {\n  ruleset r {\n    when output_toxicity >= 0.7"
                         "\n    passthrough\n  }\n}\n")
    assert not result.ok and result.diagnostics[0].code == INTERNAL
    assert "change the meaning" in result.diagnostics[0].message


def test_syntax_errors_are_reported_not_formatted() -> None:
    result = format_text("project p\nstage s {\n  ruleset r {\n    when > 1\n", "bad.sg")
    assert not result.ok and result.diagnostics[0].code.startswith("SG00")


# ---- the command ------------------------------------------------------------------------------


def _messy(tmp_path: Path) -> Path:
    path = tmp_path / "p.sg"
    path.write_text("project p\nstage s { ruleset r { when output_pii is empty passthrough } }\n",
                    encoding="utf-8")
    return path


def test_fmt_check_lists_unformatted_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    path = _messy(tmp_path)
    (tmp_path / "ok.sg").write_text("project p\n", encoding="utf-8")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out.split()
    assert out == [path.as_posix()] or out == [os.path.relpath(path)]
    assert main(["fmt", "--check", str(tmp_path / "ok.sg")]) == 0


def test_fmt_write_rewrites_in_place_keeping_permissions(tmp_path: Path) -> None:
    path = _messy(tmp_path)
    path.chmod(0o640)
    assert main(["fmt", "--write", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == format_text(
        "project p\nstage s { ruleset r { when output_pii is empty passthrough } }\n").text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["p.sg"]  # no temp file left behind
    assert main(["fmt", "--check", str(path)]) == 0


def test_fmt_write_leaves_read_only_files_alone(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _messy(tmp_path)
    before = path.read_bytes()
    path.chmod(0o444)
    assert main(["fmt", "--write", str(path)]) == 1
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert "read-only" in capsys.readouterr().err


def test_fmt_write_formats_a_links_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = _messy(tmp_path)
    link = tmp_path / "link.sg"
    link.symlink_to(target.name)
    assert main(["fmt", "--write", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == target.name
    assert main(["fmt", "--check", str(target)]) == 0


def test_fmt_write_reports_a_disk_error_and_keeps_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from stageguard.runtime import fsutil

    path = _messy(tmp_path)
    before = path.read_bytes()

    def full(fd: int) -> None:  # the write reached the page cache; the disk refuses it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "fsync", full)
    assert main(["fmt", "--write", str(path)]) == 1
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert "No space left on device" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["p.sg"]


def test_fmt_diff_prints_a_unified_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    path = _messy(tmp_path)
    assert main(["fmt", "--diff", str(path)]) == 1  # changes: exit 1, as black and ruff
    out = capsys.readouterr().out
    assert out.startswith("---") and "+  ruleset r {" in out
    assert path.read_text(encoding="utf-8").count("\n") == 2  # untouched


def test_fmt_leaves_a_broken_file_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    path = tmp_path / "bad.sg"
    path.write_text("project p\nstage s {\n", encoding="utf-8")
    assert main(["fmt", "--write", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == "project p\nstage s {\n"
    assert "error[SG" in capsys.readouterr().err


def test_fmt_reads_standard_input(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import io

    messy = "project p\nstage s { ruleset r { when output_pii is empty passthrough } }\n"
    for flags in ([], ["--write"]):
        monkeypatch.setattr("sys.stdin", io.StringIO(messy))
        assert main(["fmt", *flags, "-"]) == 0
        assert capsys.readouterr().out == format_text(messy).text
    monkeypatch.setattr("sys.stdin", io.StringIO(messy))
    assert main(["fmt", "--check", "-"]) == 1
