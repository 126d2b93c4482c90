"""Checks of the in-process API's arguments: a wrong type or size is an `InvalidRequest`
that names the argument, never an internal error from deep inside a decision. The numbers
come from the limits table; the service's wire models enforce the same ones."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stageguard.runtime import limits
from stageguard.runtime.errors import InvalidRequest
from stageguard.runtime.unicode import unicode_problem


def text(name: str, value: object) -> str:
    if value is None:
        return ""
    if value.__class__ is not str and not isinstance(value, str):
        raise InvalidRequest(f"{name} is a string, not {type(value).__name__}")
    problem = unicode_problem(value)
    if problem:
        raise InvalidRequest(f"{name} {problem}")
    return value


def optional_name(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} is a string, not {type(value).__name__}")
    problem = limits.over("name", len(value)) or unicode_problem(value)
    if problem:
        raise InvalidRequest(f"{name}: {problem}")
    return value


def version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"version is a whole number, not {type(value).__name__}")
    if value < 1:
        raise InvalidRequest(f"version is 1 or more, not {value}")
    return value


def timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"timeout is a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not 0 < seconds <= limits.TIMEOUT:
        raise InvalidRequest(f"timeout is more than 0 and at most {limits.TIMEOUT} seconds, "
                             f"not {value!r}")
    return seconds


def string_map(name: str, value: object) -> Mapping[str, str] | None:
    """`metadata` and `headers`: string keys and values, within the limits."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{name} maps strings to strings, not a {type(value).__name__}")
    problem = limits.over("metadata", len(value))
    if problem:
        raise InvalidRequest(f"{name}: {problem}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidRequest(f"{name} maps strings to strings ({key!r}: {item!r})")
        problem = (limits.over("metadata_key", len(key)) or limits.over("metadata_value",
                                                                          len(item))
                   or unicode_problem(key) or unicode_problem(item))
        if problem:
            raise InvalidRequest(f"{name}.{key[:40]}: {problem}")
    return value


def metrics(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if value.__class__ is dict:  # the usual case, without the ABC checks below
        for key in value:
            if key.__class__ is not str:
                break
        else:
            return value
    if not isinstance(value, Mapping):
        raise InvalidRequest("payload metrics map metric names to values, not a "
                             f"{type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidRequest(f"payload metrics: metric names are strings, not {key!r}")
    return value
