"""The language server's analysis, in a process of its own: the exact analysis of a large
stage can run for minutes, and in a thread it would hold the interpreter's lock against the
keystrokes' checks and could not be stopped when the text changes. The server sends the
sources as JSON on standard input ({"sources": [[path, text], …]}) and reads the findings
(`Diagnostic.to_json` each) from standard output; a newer edit kills the process."""

from __future__ import annotations

import json
import sys

from stageguard.compiler.lint import lint
from stageguard.compiler.pipeline import compile_sources
from stageguard.compiler.sources import Source


def main() -> int:
    request = json.load(sys.stdin)
    compilation = compile_sources([Source(str(p), str(t)) for p, t in request["sources"]])
    found = lint(compilation) if compilation.ok else []
    json.dump([d.to_json() for d in found], sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
