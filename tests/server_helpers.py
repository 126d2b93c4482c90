"""A real `stageguard serve` on 127.0.0.1: uvicorn in a thread (or the CLI in a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from stageguard.server.app import ServerConfig, create_app
from stageguard.server.auth import Principal, Role, Tokens, digest
from stageguard.server.protocol import protocol

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-for-tests-0001"
INVOKER = "invoke-token-for-tests-0001"


def tokens() -> Tokens:
    return Tokens({digest(ADMIN): Principal("admin", Role.ADMIN),
                   digest(INVOKER): Principal("invoker", Role.INVOKE)})


@dataclass
class Served:
    url: str
    app: Any
    server: uvicorn.Server

    def client(self, token: str | None = ADMIN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def serving(registry: Path, header_timeout: float = 10.0, body_timeout: float = 30.0,
            **config: Any) -> Iterator[Served]:
    settings: dict[str, Any] = {"tokens": tokens(), "poll_interval": 0.2}
    settings.update(config)
    app = create_app(ServerConfig(registry=registry, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           access_log=False, lifespan="on",
                                           http=protocol(header_timeout, body_timeout)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(registry: Path | str, *args: str, env: dict[str, str] | None = None,
                  scheme: str = "http", verify: Any = True,
                  ) -> Iterator[tuple[str, subprocess.Popen]]:
    """`stageguard serve` as users run it, in its own process; stderr is the JSON log."""
    port = free_port()
    environment = {**os.environ, "STAGEGUARD_ADMIN_TOKENS": ADMIN,
                   "STAGEGUARD_INVOKE_TOKENS": INVOKER, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stageguard.cli", "serve", "--registry", str(registry),
         "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"serve did not start: {err}")
        time.sleep(0.05)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
