"""The stageguard runtime: loads artifacts and decides.

Importing it pulls in neither lark nor jinja2 nor hypothesis (tested): applications embed it
next to their model calls. Start with `stageguard.runtime.engine.Runtime`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    try:
        return version("stageguard")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"
