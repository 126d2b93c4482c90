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

import base64
import binascii
import hashlib
import hmac
import json
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
        """The principal of a token, or of a session token made from one (`session`)."""
        if token.count(".") == 2:
            return self._session(token)
        wanted = digest(token)
        found = None
        for known, principal in self._by_digest.items():
            # Every entry is compared, so timing does not tell how many matched where.
            if hmac.compare_digest(known, wanted):
                found = principal
        return found

    def session(self, token: str, now: float | None = None) -> str | None:
        """A session token for a valid token: what Galileo's SDK gets from `/login/api_key`
        and sends afterwards. It is a JWT (the SDK reads its `exp`) signed with HMAC-SHA256
        under the token's digest, so every replica with the same tokens accepts it and a
        removed token ends its sessions; None when the token is not valid."""
        principal = self.find(token)
        if principal is None or token.count(".") == 2:
            return None
        issued = int(time.time() if now is None else now)
        key = digest(token)
        claims = {"sub": principal.name, "kid": key[:16], "iat": issued,
                  "exp": issued + SESSION_SECONDS}
        signed = f"{_JWT_HEADER}.{_b64(_json(claims))}"
        return f"{signed}.{_b64(_sign(key, signed))}"

    def _session(self, token: str) -> Principal | None:
        signed, _, signature = token.rpartition(".")
        try:
            claims = json.loads(_unb64(signed.partition(".")[2]))
            given = _unb64(signature)
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int) \
                or claims["exp"] <= time.time() or not isinstance(claims.get("kid"), str):
            return None
        found = None
        for known, principal in self._by_digest.items():
            if known.startswith(claims["kid"]) and hmac.compare_digest(
                    _sign(known, signed), given):
                found = principal
        return found


SESSION_SECONDS = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_JWT_HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(str(exc)) from None


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _sign(key: str, signed: str) -> bytes:
    return hmac.new(key.encode("ascii"), signed.encode("ascii"), hashlib.sha256).digest()


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

    def session(self, token: str, now: float | None = None) -> str | None:
        self.find(token)  # a changed file is read first
        return self._tokens.session(token, now)


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
