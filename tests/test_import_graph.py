"""The packages import one another in one direction only, as the README's layout table says:
read from the source (every `import stageguard.X` and `from stageguard.X…`, at any depth,
lazy imports included), so a cycle or a new edge fails here before it ships."""

from __future__ import annotations

import ast
import functools
from graphlib import CycleError, TopologicalSorter

import pytest

from tests.conftest import REPO

PACKAGES = ("runtime", "grammar", "compiler", "testing", "api", "server", "client",
            "integrations", "lsp", "cli")
# What each package may import (the README's layout table). Anything else is a new edge.
ALLOWED = {
    "runtime": set(),
    "grammar": set(),
    "compiler": {"runtime"},
    "testing": {"compiler", "runtime"},
    "api": {"compiler", "runtime"},
    "server": {"api", "compiler", "runtime"},
    "client": {"api", "runtime"},
    "integrations": {"api", "client", "runtime"},
    "lsp": {"compiler", "runtime"},
    "cli": {"api", "compiler", "lsp", "runtime", "server"},
}


@functools.cache  # read when a test asks, not at collection (which every worker does)
def imports_of(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "stageguard" and len(parts) > 1 and parts[1] != package:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_the_layout_allows(package: str) -> None:
    assert imports_of(package) <= ALLOWED[package], imports_of(package) - ALLOWED[package]


def test_the_package_graph_has_no_cycle() -> None:
    try:
        order = list(TopologicalSorter({p: imports_of(p) for p in PACKAGES}).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"import cycle between packages: {exc.args[1]}")
    assert order.index("runtime") < order.index("compiler") < order.index("api") \
        < order.index("server") < order.index("cli")


def test_every_package_is_in_the_table() -> None:
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert on_disk == set(PACKAGES)
