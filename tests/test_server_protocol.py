"""Deadlines for slow clients (server/protocol.py), over real sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.server_helpers import serving


def _closed(sock: socket.socket, within: float) -> bool:
    """True when the server closed this connection within `within` seconds."""
    sock.settimeout(0.05)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path: Path) -> None:
    with serving(tmp_path, header_timeout=0.5, body_timeout=0.5) as s:
        host, port = s.url.removeprefix("http://").split(":")
        slow_headers, slow_bodies = [], []
        for _ in range(25):
            c = socket.create_connection((host, int(port)))
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            slow_headers.append(c)
            b = socket.create_connection((host, int(port)))
            b.sendall(b"POST /protect/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: 1000\r\n\r\n{\"payload\"")
            slow_bodies.append(b)
        # The service keeps answering everyone else meanwhile.
        assert httpx.get(f"{s.url}/healthz", timeout=2).status_code == 200
        assert all(_closed(c, 3) for c in slow_headers + slow_bodies)
        for c in slow_headers + slow_bodies:
            c.close()


def test_a_kept_alive_connection_serves_request_after_request(tmp_path: Path) -> None:
    with serving(tmp_path, header_timeout=0.3, body_timeout=0.3) as s, \
            httpx.Client(base_url=s.url) as c:
        for _ in range(3):
            assert c.get("/healthz").status_code == 200
            time.sleep(0.4)  # longer than either deadline, between requests: not cut off
