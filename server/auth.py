"""Bearer tokens with two roles: `invoke` may only call `POST /protect/invoke`; `admin` may
also manage stages.

Tokens come from a TOML file and/or the environment:

    # tokens.toml
    [[token]]
    name = "checkout-service"
    role = "invoke"
    sha256 = "5e884898da28…"   # the token's SHA-256 in hex, so the file holds no secret

    [[token]]
    name = "governance-ci"
    role = "admin"
    token = "…"                # or the token itself

    STAGEGUARD_ADMIN_TOKENS=tok1,tok2  STAGEGUARD_INVOKE_TOKENS=tok3

Only digests are kept in memory and they are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger("stageguard.server")


class Role(StrEnum):
    INVOKE = "invoke"
    ADMIN = "admin"


class TokenError(ValueError):
    """A tokens file or variable that cannot be used."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


MIN_TOKEN_LENGTH = 16


class Tokens:
    def __init__(self, entries: Mapping[str, Principal] | None = None) -> None:
        self._by_digest = dict(entries or {})

    def __len__(self) -> int:
        return len(self._by_digest)

    def add(self, token_digest: str, principal: Principal) -> None:
        if token_digest in self._by_digest:
            raise TokenError(f"token {principal.name!r} is listed twice")
        self._by_digest[token_digest] = principal

    def find(self, token: str) -> Principal | None:
        wanted = digest(token)
        found = None
        for known, principal in self._by_digest.items():
            # Every entry is compared, so timing does not tell how many matched where.
            if hmac.compare_digest(known, wanted):
                found = principal
        return found


class TokenFile:
    """Tokens from a file plus the environment's; the file is read again when it changes
    (looked at no more than once a second), so tokens rotate without a restart. A file that
    no longer reads keeps the previous tokens serving, with an error in the log."""

    def __init__(self, path: str | os.PathLike[str],
                 environ: Mapping[str, str] | None = None, interval: float = 1.0) -> None:
        self.path = Path(path)
        self._environ = environ
        self._interval = interval
        self._signature = self._stat()
        self._tokens = load_tokens(self.path, environ)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __len__(self) -> int:
        return len(self._tokens)

    def find(self, token: str) -> Principal | None:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            with self._lock:
                self._checked = now
                signature = self._stat()
                if signature != self._signature:
                    self._signature = signature
                    try:
                        self._tokens = load_tokens(self.path, self._environ)
                        log.info("tokens reloaded", extra={"tokens": len(self._tokens)})
                    except TokenError as exc:
                        log.error("tokens not reloaded, the previous ones stay valid: %s", exc)
        return self._tokens.find(token)


def load_tokens(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Tokens:
    tokens = Tokens()
    if path is not None:
        _load_file(Path(path), tokens)
    env = os.environ if environ is None else environ
    for role in Role:
        variable = f"STAGEGUARD_{role.name}_TOKENS"
        for i, raw in enumerate(t.strip() for t in env.get(variable, "").split(",")):
            if raw:
                _check_length(raw, f"{variable} entry {i + 1}")
                tokens.add(digest(raw), Principal(f"{variable}[{i + 1}]", role))
    return tokens


def _check_length(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters")


def _load_file(path: Path, tokens: Tokens) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TokenError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TokenError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("token")
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise TokenError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)} (write [[token]] tables)")
    if not isinstance(entries, list) or not entries:
        raise TokenError(f"{path}: no [[token]] tables")
    for i, entry in enumerate(entries, 1):
        where = f"{path}: token {i}"
        if not isinstance(entry, dict):
            raise TokenError(f"{where}: a [[token]] table is expected")
        extra = sorted(set(entry) - {"name", "role", "token", "sha256"})
        if extra:
            raise TokenError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} "
                             f"{', '.join(extra)}")
        name = entry.get("name", f"token {i}")
        try:
            role = Role(str(entry.get("role")))
        except ValueError:
            raise TokenError(f"{where}: role is `invoke` or `admin`") from None
        if ("token" in entry) == ("sha256" in entry):
            raise TokenError(f"{where}: give exactly one of `token` and `sha256`")
        if "token" in entry:
            if not isinstance(entry["token"], str):
                raise TokenError(f"{where}: token is a string")
            _check_length(entry["token"], where)
            value = digest(entry["token"])
        else:
            value = str(entry["sha256"]).lower()
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise TokenError(f"{where}: sha256 is 64 hex digits")
        tokens.add(value, Principal(str(name), role))
