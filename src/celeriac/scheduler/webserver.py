"""A small HTTP/1.1 server with bounded cost: one thread, capped connections, timeouts.

What the dashboard is served by.  ``http.server.ThreadingHTTPServer`` gave
every connection a thread and waited on it forever: 1,500 half-open requests
held 1,504 threads of the scheduler, and the descriptors it ran out of were
the ones new workers and clients needed (issue 13, H6).  Here one asyncio
loop on one thread serves every connection, and each costs at most:

* a place among :attr:`Limits.connections`; past that, a new connection is
  answered ``503`` and closed at once;
* :attr:`Limits.header_timeout` seconds to send a request's head
  (``408`` and closed after), :attr:`Limits.header_bytes` of it
  (``431`` and closed past it), and :attr:`Limits.idle_timeout` seconds of
  silence between requests on a kept-alive connection;
* :attr:`Limits.write_timeout` seconds for a client to take a response.

Only ``GET`` and ``HEAD`` without a body: there is nothing to post.  The
handler is a plain function from :class:`Request` to :class:`Response`, called
on the loop's thread (it must be quick: the dashboard's reads a snapshot).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("celeriac.dashboard")

#: How often at most the server warns that it refuses connections.
REFUSAL_WARNING_EVERY = 60.0


@dataclass(frozen=True)
class Limits:
    """What one connection may cost (see the module docstring).

    ``connections``: open at once; ``header_timeout``: seconds to send a
    request's head (the first from connecting, later ones from their first
    byte); ``idle_timeout``: seconds a kept-alive connection may wait for its
    next request; ``write_timeout``: seconds to take a response;
    ``header_bytes``: the largest request head (request line and headers).
    """

    connections: int = 100
    header_timeout: float = 5.0
    idle_timeout: float = 15.0
    write_timeout: float = 10.0
    header_bytes: int = 8192


@dataclass(frozen=True)
class Request:
    """One request's head: ``method``, ``path`` (no query), ``query`` (the last value of
    each name), ``headers`` (names in lower case) and ``version`` (``HTTP/1.1``)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    version: str = "HTTP/1.1"

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept for another request."""
        wanted = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return wanted == "keep-alive"
        return wanted != "close"


@dataclass
class Response:
    """What the handler answers: ``status``, ``body``, its ``content_type`` and more ``headers``."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """A request the server answers with ``status`` and closes the connection after."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def parse_head(data: bytes) -> Request:
    """A request from its head (request line and headers, ending in an empty line).

    Raises :class:`HttpError` for what this server does not take: a malformed
    line, a version other than HTTP/1.0 and 1.1, an absolute or ``*`` target,
    folded or repeated ``Host`` headers, a body.
    """
    lines = data.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, f"{version[:20]!r} is not HTTP/1.0 or HTTP/1.1")
    if not target.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(400, "malformed header line")
        name = name.lower()
        if name in headers and name in ("host", "content-length", "authorization"):
            raise HttpError(400, f"more than one {name} header")
        value = value.strip()
        if name in headers:  # repeated: one list, as RFC 9110 says (cookies: RFC 6265)
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise HttpError(413, "requests with a body are not served")
    parts = urlsplit(target)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    return Request(method, parts.path, query, headers, version)


def encode(response: Response, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The response as bytes on the wire; only its headers for a ``HEAD``."""
    reason = HTTPStatus(response.status).phrase
    headers = {
        "Content-Type": response.content_type,
        "Content-Length": str(len(response.body)),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Connection": "keep-alive" if keep_alive else "close",
        **response.headers,
    }
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _error(status: int, text: str) -> bytes:
    return encode(Response(status, (text + "\n").encode()), keep_alive=False)


#: What a connection past the cap is told before it is closed.
BUSY = encode(
    Response(503, b"too many connections\n", headers={"Retry-After": "1"}), keep_alive=False
)

Handler = Callable[[Request], Response]


class WebServer:
    """Serve ``handler`` on ``host``:``port`` from one thread, within ``limits``.

    The constructor binds (``OSError`` if it cannot); :meth:`start` serves from
    a daemon thread; :meth:`stop` closes the listener and every connection.
    ``address`` is the bound ``(host, port)``.
    """

    def __init__(self, host: str, port: int, handler: Handler, limits: Limits) -> None:
        family, _, _, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._socket = socket.create_server(where[:2], family=family, backlog=128)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self.handler = handler
        self.limits = limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open: set[asyncio.Task[None]] = set()
        self._refused = 0
        self._warned = -REFUSAL_WARNING_EVERY

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    def start(self) -> None:
        """Serve from a daemon thread (``celeriac-dashboard``)."""
        loop = self._loop = asyncio.new_event_loop()
        listening = loop.run_until_complete(self._listen())
        self._thread = threading.Thread(
            target=self._run, args=(loop, listening), name="celeriac-dashboard", daemon=True
        )
        self._thread.start()

    async def _listen(self) -> asyncio.Server:
        # our own socket: no getaddrinfo in asyncio's thread pool (no extra threads)
        return await asyncio.start_server(
            self._connected, sock=self._socket, limit=self.limits.header_bytes
        )

    def _run(self, loop: asyncio.AbstractEventLoop, listening: asyncio.Server) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            listening.close()
            for task in self._open:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*self._open, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # the transports' closing callbacks
            loop.close()

    def stop(self) -> None:
        """Stop serving: close the listener and every connection.  Safe if never started."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        elif loop is not None and not loop.is_closed():
            loop.close()
        self._socket.close()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.limits.connections:
            self._refuse(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or would not take its response
        except asyncio.CancelledError:
            pass  # stopping
        except Exception:
            log.exception("dashboard: internal error on a connection")
        finally:
            self._open.discard(task)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that would not read: drop what it left
            else:
                writer.close()  # the kernel has the rest (a short error at most)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.write(BUSY)
        writer.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._warned >= REFUSAL_WARNING_EVERY:
            log.warning(
                "dashboard: %d connections open, the most it keeps: refusing more "
                "(%d refused since this was last said, at most once a minute)",
                self.limits.connections,
                self._refused,
            )
            self._warned, self._refused = now, 0

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one connection, in turn, until it closes, errs or idles too long."""
        limits, loop = self.limits, asyncio.get_running_loop()
        # The first request's head must be in within header_timeout of connecting,
        # a later one's within header_timeout of its first byte.
        first_request = True
        deadline = loop.time() + limits.header_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    first = await reader.read(1)
            except TimeoutError:
                if first_request:  # silence between kept-alive requests needs no answer
                    writer.write(_error(408, "request head not sent in time"))
                return
            if not first:
                return
            if not first_request:
                deadline = loop.time() + limits.header_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    head = first + await reader.readuntil(b"\r\n\r\n")
                request = parse_head(head)
            except TimeoutError:
                writer.write(_error(408, "request head not sent in time"))
                return
            except asyncio.LimitOverrunError:
                writer.write(_error(431, "request head too large"))
                return
            except HttpError as exc:
                writer.write(_error(exc.status, str(exc)))
                return
            first_request = False
            writer.write(self._answer(request, request.keep_alive))
            async with asyncio.timeout(limits.write_timeout):
                await writer.drain()
            if not request.keep_alive:
                return
            deadline = loop.time() + limits.idle_timeout

    def _answer(self, request: Request, keep_alive: bool) -> bytes:
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            response = Response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        else:
            try:
                response = self.handler(request)
            except Exception:
                log.exception("dashboard: internal error answering %s", request.path[:200])
                response = Response(500, b"internal error\n")
        return encode(response, keep_alive=keep_alive, head_only=head_only)
