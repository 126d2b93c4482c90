"""Helpers shared by the runtime tests: registries built from source, a real HTTP sink."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stageguard.compiler.pipeline import compile_text
from stageguard.runtime.registry import Registry


def build(registry: Path, text: str, path: str = "p.sg") -> None:
    result = compile_text(text, path)
    assert result.ok, [d.message for d in result.diagnostics]
    Registry(registry).publish(result.artifacts)


class Sink:
    """An HTTP server on 127.0.0.1 recording POSTs; `plan` scripts the status codes."""

    def __init__(self, plan: list[int] | None = None, delay: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.plan = list(plan or [])
        self.lock = threading.Lock()
        self.event = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if delay:
                    time.sleep(delay)
                with sink.lock:
                    sink.attempts += 1
                    code = sink.plan.pop(0) if sink.plan else 200
                    if code == 200:
                        sink.bodies.append(json.loads(raw))
                        sink.event.set()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
