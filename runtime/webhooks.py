"""Webhook delivery for subscriptions, off the decision path.

`Notifier.send` only enqueues (never blocks, never raises): a full queue drops the
notification with a log line. Worker threads POST the Response JSON and retry connection
errors and 5xx answers with exponential backoff; 3xx and 4xx answers are final (a redirect
is never followed: its target was never checked, and the receiver refused this body).
Every notification that is finally given up is logged on `stageguard.webhooks` and counted
in `dropped`.

Where a POST may go (`WebhookPolicy`): an http(s) url with a host; the host in the
allowlist when there is one. Without one, any host, but only at a global address: loopback,
private, link-local (cloud metadata at 169.254.169.254 among them), shared, reserved and
multicast addresses are refused unless a network the operator named holds them. The host is
resolved at delivery, every address it has is checked, and the connection goes to the
address that was checked (no second lookup a rebinding DNS could answer differently). Each
attempt has one deadline for connecting, sending and the answer's status line and headers,
enforced by closing the socket; the answer's body is not read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stageguard.runtime import limits
from stageguard.runtime.workers import WorkQueue

log = logging.getLogger("stageguard.webhooks")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allow_list(hosts: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(h.lower() for h in hosts) if hosts else None


def networks(cidrs: Iterable[str] | None) -> tuple[Network, ...]:
    """Networks from CIDR text (`127.0.0.0/8`, `10.1.2.3`); ValueError names a bad one."""
    out = []
    for cidr in cidrs or ():
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {cidr!r} ({exc})") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Which webhook destinations are allowed (see the module's docstring)."""

    allow_hosts: frozenset[str] | None = None
    allow_networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, hosts: Iterable[str] | None = None,
           nets: Iterable[str] | None = None) -> WebhookPolicy:
        return cls(allow_list(hosts), networks(nets))

    def url_problem(self, url: str) -> str | None:
        """Why a subscription to `url` is refused (None when it is accepted). What can be
        told without a lookup: the shape, the allowlist, an address written as the host."""
        if not isinstance(url, str) or len(url) > limits.URL:
            return f"not a url of at most {limits.URL} characters"
        try:
            parts = urlsplit(url)
            host = parts.hostname
            _ = parts.port  # a bad port raises here
        except ValueError:
            return "not a valid url"
        if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
            return "not an http(s) url with a host"
        host = host.lower()
        if self.allow_hosts is not None:
            return None if host in self.allow_hosts else "host not in the allowlist"
        if host == "localhost" or host.endswith(".localhost"):
            return self.address_problem(ipaddress.ip_address("127.0.0.1"))
        address = _ip(host)
        return self.address_problem(address) if address is not None else None

    def address_problem(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                        ) -> str | None:
        if any(address in net for net in self.allow_networks):
            return None
        if address.is_global and not address.is_multicast:
            return None
        return (f"address {address} is not public (loopback, private, link-local or "
                "reserved); allow its network explicitly to post there")

    def host_trusted(self, host: str) -> bool:
        """A host the operator listed by name is posted to at whatever address it has."""
        return self.allow_hosts is not None and host.lower() in self.allow_hosts


# A lookup cannot be cancelled, so it runs here and the delivery waits at most its deadline:
# a resolver that hangs costs a few of these threads, never the delivery workers.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stageguard-resolve")


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError(f"looking up {host} took longer than {timeout:g}s") from None
    return [str(info[4][0]) for info in infos]


class _Refused(Exception):
    """The destination is not allowed: final, never retried."""


class _PinnedConnection(http.client.HTTPSConnection):
    """Connects to an address chosen (and checked) beforehand, keeping the url's host for
    the Host header, SNI and certificate checks."""

    def __init__(self, host: str, port: int, address: str, timeout: float, tls: bool) -> None:
        super().__init__(host, port, timeout=timeout,
                         context=ssl.create_default_context() if tls else None)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls:
            assert self._context is not None  # type: ignore[attr-defined]
            self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
                self.sock, server_hostname=self.host)

    def abort(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# A webhook body: JSON bytes, or a mapping to encode. Built in the worker, not on the
# decision path.
Body = Callable[[], "bytes | Mapping[str, Any]"]


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    body: Body
    trace_id: str


class Notifier:
    def __init__(self, *, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 max_queue: int = 10_000, workers: int = 2,
                 allow_hosts: Iterable[str] | None = None,
                 allow_networks: Iterable[str] | None = None,
                 policy: WebhookPolicy | None = None,
                 user_agent: str = "stageguard-webhooks") -> None:
        self.timeout = timeout  # one attempt: connect, send, status line and headers
        self.retries = retries
        self.backoff = backoff
        self.policy = policy or WebhookPolicy.of(allow_hosts, allow_networks)
        self.user_agent = user_agent
        self._work: WorkQueue[Delivery] = WorkQueue(self._deliver, name="stageguard-webhook",
                                                    workers=workers, max_queue=max_queue)
        self._lock = threading.Lock()
        self.sent = 0
        self.dropped = 0

    def send(self, url: str, body: Body, trace_id: str = "") -> bool:
        """Queue one POST; False (and a log line) when it is refused or the queue is full."""
        if self._work.closed:
            self._drop(url, trace_id, "the notifier is closed")
            return False
        problem = self.policy.url_problem(url)
        if problem:
            self._drop(url, trace_id, f"url not allowed: {problem}")
            return False
        if not self._work.offer(Delivery(url, body, trace_id)):
            self._drop(url, trace_id, "the delivery queue is full")
            return False
        return True

    def _drop(self, url: str, trace_id: str, why: str) -> None:
        with self._lock:
            self.dropped += 1
        log.warning("webhook dropped: url=%s trace_id=%s reason=%s", url, trace_id or "-", why)

    def _deliver(self, item: Delivery) -> None:
        try:
            made = item.body()
            data = made if isinstance(made, bytes) else json.dumps(
                made, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except Exception as exc:
            self._drop(item.url, item.trace_id, f"body could not be serialised: {exc}")
            return
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status = self._post(item.url, data)
            except _Refused as exc:
                self._drop(item.url, item.trace_id, f"destination refused: {exc}")
                return
            except (OSError, http.client.HTTPException, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300:
                with self._lock:
                    self.sent += 1
                return
            last = f"HTTP {status}" + (" (redirects are not followed)"
                                       if 300 <= status < 400 else "")
            if status < 500:
                break
        self._drop(item.url, item.trace_id,
                   f"gave up after {attempt + 1} attempt{'s' if attempt else ''} ({last})")

    def _post(self, url: str, data: bytes) -> int:
        """One attempt; the answer's status code. Raises _Refused for a destination the
        policy refuses, OSError and friends for everything a retry may mend."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        addresses = _resolve(host, port, self.timeout)
        if not self.policy.host_trusted(host):
            for text in addresses:
                address = _ip(str(text))
                problem = (self.policy.address_problem(address) if address is not None
                           else "an address that is not IP")
                if problem:
                    raise _Refused(f"{host} resolves to {text}: {problem}")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn = _PinnedConnection(host, port, str(addresses[0]), self.timeout, tls)
        watchdog = threading.Timer(self.timeout, conn.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", target, body=data, headers={
                "Content-Type": "application/json", "User-Agent": self.user_agent})
            return conn.getresponse().status  # the body is never read, however long
        finally:
            watchdog.cancel()
            conn.close()

    @property
    def pending(self) -> int:
        """Notifications queued or being delivered."""
        return self._work.pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued notification was delivered or dropped; False on timeout."""
        return self._work.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is queued (up to `timeout`), then stop the workers."""
        self._work.close(timeout)
