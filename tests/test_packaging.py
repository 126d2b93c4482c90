from __future__ import annotations

import subprocess
import sys


def _python(code: str, cwd: str | None = None) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=cwd).stdout.strip()


def test_runtime_import_stays_light() -> None:
    code = ("import sys, stageguard.runtime, stageguard.runtime.registry, "
            "stageguard.runtime.schema, stageguard.runtime.catalog, stageguard.runtime.engine, "
            "stageguard.runtime.webhooks, stageguard.runtime.galileo; "
            "print(','.join(m for m in ('lark', 'jinja2', 'hypothesis') if m in sys.modules))")
    assert _python(code) == ""


def test_runtime_never_imports_the_compiler() -> None:
    code = ("import sys, stageguard.runtime.registry, stageguard.runtime.schema, "
            "stageguard.runtime.engine; "
            "print([m for m in sys.modules if m.startswith('stageguard.compiler')])")
    assert _python(code) == "[]"


def test_no_generic_top_level_modules_are_installed() -> None:
    code = "import importlib.util as u; print([m for m in ('compiler', 'runtime', 'grammar') " \
           "if u.find_spec(m)])"
    assert _python(code, cwd="/") == "[]"


def test_grammar_is_read_from_the_package() -> None:
    from importlib.resources import files

    from stageguard.compiler.parser import grammar_text
    assert grammar_text() == files("stageguard.grammar").joinpath(
        "stageguard.lark").read_text(encoding="utf-8")
    assert "ruleset_decl" in grammar_text()
