"""A controllable HTTP server on loopback: the ground truth Traffic and the checkers are measured against.

It answers every request (any method; a body is read by its Content-Length) with its PID as the body (like the guide's ``SleepyPid``), keeps connections alive
as a Serve proxy does, and can be told to misbehave in ways whose truth it records itself:

- ``outage(seconds)``: close the listening socket and every connection, hold the outage window, then
  bind the same port again (SO_REUSEADDR): connections are refused for that long;
- ``fail_every = n``: answer 503 to every n-th request;
- ``stall(window_s, delay_s)``: requests arriving in the next ``window_s`` are answered ``delay_s`` late;
- ``fail_for(seconds)``: answer 503 to every request for that long (blocks the caller for the window).

It serves from an asyncio loop in a thread (``with LoopbackServer() as server: ...``); it binds only
127.0.0.1. Used by the tests and the benchmark; it is test equipment, not part of a run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass

_REASONS = {200: b"OK", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class Window:
    """When a misbehaviour really started and ended, in monotonic seconds."""

    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start


class _Connection(asyncio.Protocol):
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:  # a request is its head and Content-Length bytes
            head = self.buffer[:end].decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")[1:]
                           if line.lower().startswith("content-length:")), 0)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.server.last_request = (head, body)
            assert self.transport is not None
            self.server._answer(self.transport)


class LoopbackServer:
    def __init__(self, *, port: int = 0, fail_every: int = 0, body: bytes | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.fail_every = fail_every
        self.body = body if body is not None else str(os.getpid()).encode()
        self.requests = 0  # requests answered or being answered
        self.last_request: tuple[str, bytes] | None = None  # the last request's head (request line, headers), body
        self.failed_503 = 0
        self.stalled = 0
        self._stall_until = 0.0
        self._stall_delay_s = 0.0
        self._fail_until = 0.0
        self._connections: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-server", daemon=True)
        self._outage_window = threading.Event()  # set only to end an outage early, on close

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        self._outage_window.set()
        if self._thread.is_alive():
            self._call(self._shut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def outage(self, seconds: float) -> Window:
        """Refuse connections for ``seconds``: blocks the caller for that outage window, the fault itself."""
        start = self._call(self._shut())
        self._outage_window.wait(seconds)  # the outage window: the server stays down this long
        end = self._call(self._listen())
        return Window(start, end)

    def stall(self, window_s: float, delay_s: float) -> Window:
        """Answer the requests that arrive within the next ``window_s`` after ``delay_s``; returns at once."""

        async def begin() -> float:
            now = time.monotonic()
            self._stall_until = now + window_s
            self._stall_delay_s = delay_s
            return now

        start = self._call(begin())
        return Window(start, start + window_s)

    def fail_for(self, seconds: float) -> Window:
        """Answer 503 to every request for ``seconds``: blocks the caller for that failure window, the fault."""

        async def begin() -> float:
            now = time.monotonic()
            self._fail_until = now + seconds
            return now

        async def end() -> float:
            self._fail_until = 0.0
            return time.monotonic()

        start = self._call(begin())
        self._outage_window.wait(seconds)  # the failure window: the server answers 503 this long
        return Window(start, self._call(end()))

    # -- on the loop ----------------------------------------------------------------------------

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> float:
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True,
            backlog=1024,  # a traffic child let go after a stall sends its whole backlog at once (asyncio's default: 100)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return time.monotonic()

    async def _shut(self) -> float:
        """Close the listening socket, then every connection (RST): nothing answers any more."""
        if self._server is not None:
            self._server.close()
            self._server = None
        down = time.monotonic()
        for transport in list(self._connections):
            transport.abort()
        return down

    def _answer(self, transport: asyncio.Transport) -> None:
        self.requests += 1
        failing = time.monotonic() < self._fail_until
        status = 503 if failing or (self.fail_every and self.requests % self.fail_every == 0) else 200
        self.failed_503 += status == 503
        body = self.body if status == 200 else b"unavailable"
        response = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (
            status, _REASONS[status], len(body), body,
        )
        if time.monotonic() < self._stall_until:
            self.stalled += 1
            self._loop.call_later(self._stall_delay_s, _write_if_open, transport, response)
        else:
            transport.write(response)


def _write_if_open(transport: asyncio.Transport, data: bytes) -> None:
    if not transport.is_closing():
        transport.write(data)
