"""The artifact's JSON Schema, generated from the pydantic models.

`python -m stageguard.runtime.schema` rewrites the checked-in copy
(runtime/artifact.schema.json, shipped in the package); a test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from stageguard.runtime.model import FORMAT_VERSION, Artifact

SCHEMA_FILE = "artifact.schema.json"
SCHEMA_ID = f"urn:stageguard:artifact:v{FORMAT_VERSION}"


def artifact_schema() -> dict[str, Any]:
    schema = Artifact.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema}


def schema_text() -> str:
    return json.dumps(artifact_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def shipped_schema_text() -> str:
    return files("stageguard.runtime").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def main() -> int:
    target = Path(__file__).with_name(SCHEMA_FILE)
    target.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
