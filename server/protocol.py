"""uvicorn's httptools protocol with deadlines for slow clients.

uvicorn closes idle keep-alive connections but has no deadline for a request that arrives
slowly: a client can hold a connection open forever by sending one header byte at a time
(slowloris), or stall the body it announced. Here the request line and headers must arrive
within `header_timeout` of the request's first byte (of the connection, for the first
request), and the body within `body_timeout` after the headers; past either, the connection
is closed. An application still running when its body has fully arrived is not affected.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0


class TimedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(header_timeout: float = HEADER_TIMEOUT,
             body_timeout: float = BODY_TIMEOUT) -> type[TimedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` with these deadlines."""
    return type("TimedHttpToolsProtocol", (TimedHttpToolsProtocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})
