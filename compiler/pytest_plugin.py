"""pytest plugin (entry point `pytest11`): `pytest policies/` runs `*.test.toml` policy tests.

Each case, table row and property is one pytest item; policies are compiled once per set of
policy paths for the whole session. A failing item shows the same expected-beside-actual
report as `stageguard test`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Kept free of compiler imports: the plugin loads in every pytest session of a project that
# installs stageguard, and should cost nothing there until a policy test file turns up.
SUFFIX = ".test.toml"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIX):
        return PolicyTestFile.from_parent(parent, path=file_path)
    return None


_SUITES: Any = None  # a policytest.Suites, made when the first policy test runs


def pytest_sessionfinish(session: pytest.Session) -> None:
    global _SUITES
    if _SUITES is not None:
        _SUITES.close()
        _SUITES = None


def _suites() -> Any:
    global _SUITES
    if _SUITES is None:
        from stageguard.compiler.policytest import Suites

        _SUITES = Suites()
    return _SUITES


class PolicyTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from stageguard.compiler.policytest import (
            Case,
            Property,
            TestFileError,
            policies_for,
            read,
        )

        try:
            data, cases, props = read(self.path)
        except TestFileError as exc:
            raise self.CollectError(str(exc)) from None
        policies = policies_for(self.path, data)
        items: list[Case | Property] = [*cases, *props]
        for item in items:
            yield PolicyTestItem.from_parent(self, name=item.name, spec=item,
                                             policies=policies, registry="registry" in data)


class PolicyTestFailure(Exception):
    pass


class PolicyTestItem(pytest.Item):
    def __init__(self, *, spec: Any, policies: list[str], registry: bool = False,
                 **kw: Any) -> None:
        super().__init__(**kw)
        # Plugins that wrap every test's call assume a Function's `funcargs` (pytest-lsp's
        # wrapper returns without yielding when it is absent, failing every other item).
        self.funcargs: dict[str, object] = {}
        self.spec = spec
        self.policies = policies
        self.registry = registry

    def runtest(self) -> None:
        from stageguard.compiler.policytest import (
            Case,
            TestFileError,
            check_property,
            run_case,
        )

        try:
            suite, _ = _suites().get(self.policies, self.registry)
        except TestFileError as exc:
            raise PolicyTestFailure(str(exc)) from None
        if isinstance(self.spec, Case):
            outcome = run_case(suite, self.spec)
        else:
            outcome = check_property(suite, self.spec)
        if not outcome.passed:
            raise PolicyTestFailure(outcome.report)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: str | None = None) -> str:
        if isinstance(excinfo.value, PolicyTestFailure):
            return f"{self.spec.id}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"policy test: {self.name}"
