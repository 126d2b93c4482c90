"""The project configuration: `stageguard.toml`, or `[tool.stageguard]` in `pyproject.toml`,
found by walking up from where the policies are (as ruff and black find theirs).

```toml
[tool.stageguard]
select = ["ALL"]            # codes or prefixes shown (errors always are)
ignore = ["SG0706"]
strict = true               # warnings fail check and lint
max-errors = 20
[tool.stageguard.severity]
SG0703 = "info"
```

In `stageguard.toml` the same keys sit at the top level. A command-line flag wins over the
file; `--config FILE` names one, `--isolated` reads none.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stageguard.compiler.diagnostics import Severity
from stageguard.compiler.lint_control import CODE_PATTERN, Settings

FILENAMES = ("stageguard.toml", "pyproject.toml")
KEYS = ("select", "ignore", "severity", "strict", "max-errors")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None  # None: no file found
    settings: Settings


def find(start: Path) -> Path | None:
    """The nearest configuration at or above `start`: a `stageguard.toml`, or a
    `pyproject.toml` that has a `[tool.stageguard]` table."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        own = folder / "stageguard.toml"
        if own.is_file():
            return own
        project = folder / "pyproject.toml"
        if project.is_file() and "stageguard" in _read(project).get("tool", {}):
            return project
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load(path: Path) -> Settings:
    data = _read(path)
    table = data.get("tool", {}).get("stageguard", {}) if path.name == "pyproject.toml" \
        else data
    where = f"{path}: [tool.stageguard]" if path.name == "pyproject.toml" else str(path)
    return parse(table, where)


def parse(table: Mapping[str, Any], where: str) -> Settings:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of settings")
    settings = Settings()
    for key, value in table.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else \
                f" (known: {', '.join(KEYS)})"
            raise ConfigError(f"{where}: unknown key `{key}`{hint}")
        if key == "select":
            settings = replace(settings, select=codes(value, f"{where}: `select`"))
        elif key == "ignore":
            settings = replace(settings, ignore=codes(value, f"{where}: `ignore`"))
        elif key == "severity":
            settings = replace(settings, severity=severities(value, f"{where}: `severity`"))
        elif key == "strict":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: `strict` is true or false")
            settings = replace(settings, strict=value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}: `max-errors` is a whole number of at least 1")
            settings = replace(settings, max_errors=value)
    return settings


def codes(value: object, where: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(c, str) for c in items):
        raise ConfigError(f"{where} is a list of codes such as \"SG0706\" or \"SG07\"")
    out = []
    for raw in items:
        code = raw.strip().upper()
        if not CODE_PATTERN.match(code):
            raise ConfigError(f"{where}: `{raw}` is not a code or code prefix (SG0706, SG07, "
                              "ALL)")
        out.append(code)
    return tuple(out)


def severities(value: object, where: str) -> dict[str, Severity]:
    if isinstance(value, list | tuple):  # the command line's CODE=LEVEL form
        pairs = []
        for item in value:
            code, eq, level = str(item).partition("=")
            if not eq:
                raise ConfigError(f"{where}: `{item}` is not CODE=LEVEL")
            pairs.append((code, level))
        value = dict(pairs)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} is a table of code = \"warning\" (or error, info)")
    out: dict[str, Severity] = {}
    for code, level in value.items():
        (pattern,) = codes([code], where)
        try:
            out[pattern] = Severity(str(level).strip().lower())
        except ValueError:
            raise ConfigError(f"{where}: `{code}` = `{level}`: a severity is error, warning "
                              "or info") from None
    return out


def resolve(start: Path, explicit: Path | None = None, isolated: bool = False) -> Config:
    """The configuration that applies to policies at `start`."""
    if isolated:
        return Config(None, Settings())
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: no such configuration file")
        return Config(explicit, load(explicit))
    path = find(start)
    return Config(path, load(path) if path else Settings())
