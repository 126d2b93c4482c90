"""The `stageguard` command line: every command, over the compiler (check, build, fmt, lint,
diff, test, import/export), the runtime (inspect, invoke, stage) and the server (serve)."""

from __future__ import annotations

from stageguard.cli.main import main

__all__ = ["main"]
