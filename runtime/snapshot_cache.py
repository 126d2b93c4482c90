"""The last good snapshot on local disk, so a replica starts serving while its store is down.

One file: the registry index the runtime last read and the artifact bytes of every latest
version it served, with a sha256 over both. It is written by temp + fsync + rename after each
successful reload; read only at start, when the store cannot be; refused whole when its
digest does not match (a tampered or torn file never serves), and each artifact inside is
checked again as any store's would be when it loads.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from stageguard.runtime.fsutil import atomic_write
from stageguard.runtime.registry import Index, RegistryError

FORMAT = "stageguard.snapshot-cache"
FILE = "snapshot.json"

Key = tuple[str, str]


def _digest(index: str, artifacts: list[list[str]]) -> str:
    body = json.dumps([index, artifacts], separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def write(directory: Path, index: Index, artifacts: dict[Key, bytes]) -> None:
    """Replace the cache with this snapshot."""
    index_text = index.model_dump_json()
    rows = [[project, stage, base64.b64encode(raw).decode("ascii")]
            for (project, stage), raw in sorted(artifacts.items())]
    data = {"format": FORMAT, "index": index_text, "artifacts": rows,
            "digest": _digest(index_text, rows)}
    atomic_write(directory / FILE, json.dumps(data).encode("utf-8"), mode=0o600)


def read(directory: Path) -> tuple[Index, dict[Key, bytes]] | None:
    """The cached snapshot; None when there is none; RegistryError when it does not check."""
    path = directory / FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read the snapshot cache {path}: {exc}") from exc
    try:
        data = json.loads(raw)
        index_text, rows = data["index"], data["artifacts"]
        if data.get("format") != FORMAT or data.get("digest") != _digest(index_text, rows):
            raise RegistryError(f"the snapshot cache {path} does not match its digest: "
                                "refused")
        index = Index.model_validate_json(index_text)
        artifacts = {(project, stage): base64.b64decode(text, validate=True)
                     for project, stage, text in rows}
    except RegistryError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"the snapshot cache {path} is damaged: {exc}") from exc
    return index, artifacts
