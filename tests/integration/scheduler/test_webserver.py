"""The dashboard's HTTP server on real sockets: keep-alive, every limit, stopping.

In-process, with limits a few tenths of a second long; the 1,500-connection
attack on a real scheduler is in test_dashboard.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from celeriac.scheduler.webserver import Limits, Request, Response, WebServer
from celeriac.testing import wait_until

LIMITS = Limits(
    connections=5, header_timeout=0.4, idle_timeout=0.4, write_timeout=0.4, header_bytes=1024
)


def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/big":
        return Response(200, b"x" * (16 << 20))
    return Response(200, f"{request.method} {request.path}".encode())


@pytest.fixture
def server() -> Iterator[WebServer]:
    web = WebServer("127.0.0.1", 0, echo, LIMITS)
    web.start()
    yield web
    web.stop()


@pytest.fixture
def connect(server: WebServer) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.create_connection(server.address, timeout=5)
        opened.append(sock)
        return sock

    yield make
    for sock in opened:
        sock.close()


def request(path: str = "/", *headers: str, method: str = "GET") -> bytes:
    return ("\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *headers]) + "\r\n\r\n").encode()


class Reader:
    """Responses from one connection, in order, whatever the reads split them into."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffered = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buffered += chunk

    def response(self, *, head_only: bool = False) -> tuple[int, bytes, bytes]:
        """(status, head, body); for a ``HEAD`` the body stays unread (there is none)."""
        while b"\r\n\r\n" not in self.buffered:
            self._more()
        head, self.buffered = self.buffered.split(b"\r\n\r\n", 1)
        length = 0 if head_only else int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(self.buffered) < length:
            self._more()
        body, self.buffered = self.buffered[:length], self.buffered[length:]
        return int(head.split()[1]), head, body


def responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` responses on a connection no other reader reads: (status, body) each."""
    reader = Reader(sock)
    out = [reader.response()[::2] for _ in range(count)]
    assert not reader.buffered
    return out  # type: ignore[return-value]


def closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_requests_on_one_connection_in_turn_and_pipelined(
    connect: Callable[[], socket.socket],
) -> None:
    sock = connect()
    sock.sendall(request("/a"))
    assert responses(sock, 1) == [(200, b"GET /a")]
    sock.sendall(request("/b") + request("/c", method="HEAD") + request("/d"))
    reader = Reader(sock)
    assert reader.response()[::2] == (200, b"GET /b")
    status, head, body = reader.response(head_only=True)
    assert status == 200 and b"Content-Length: 7" in head and body == b""  # "HEAD /c"
    assert reader.response()[::2] == (200, b"GET /d")
    assert not reader.buffered
    sock.sendall(request("/e", "Connection: close"))
    assert closed(sock).endswith(b"GET /e")


def test_bad_requests_are_answered_and_closed(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(b"BREW /pot HTTP/1.1\r\n\r\n")
    assert responses(sock, 1)[0][0] == 405  # kept: a complete request, only not ours
    sock.sendall(request("/boom"))
    assert responses(sock, 1) == [(500, b"internal error\n")]
    sock.sendall(b"GET / HTTP/3\r\n\r\n")
    assert closed(sock).startswith(b"HTTP/1.1 505 ")


def test_a_head_too_large_is_refused(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 4096)
    assert closed(sock).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"])
def test_a_head_not_sent_in_time_is_dropped(
    connect: Callable[[], socket.socket], server: WebServer, sent: bytes
) -> None:
    sock = connect()
    started = time.monotonic()
    sock.sendall(sent)
    assert closed(sock).startswith(b"HTTP/1.1 408 ")
    assert LIMITS.header_timeout - 0.05 <= time.monotonic() - started < LIMITS.header_timeout + 1


def test_a_slow_head_gets_no_more_time_for_each_byte(
    connect: Callable[[], socket.socket],
) -> None:
    sock = connect()
    started = time.monotonic()
    with pytest.raises(OSError):
        for byte in request():  # one byte every 0.1 s: the deadline does not move
            sock.send(bytes([byte]))
            time.sleep(0.1)
    assert time.monotonic() - started < LIMITS.header_timeout + 1


def test_an_idle_kept_alive_connection_is_closed(connect: Callable[[], socket.socket]) -> None:
    sock = connect()
    sock.sendall(request())
    responses(sock, 1)
    started = time.monotonic()
    assert closed(sock) == b""  # silence between requests is not an error: no answer
    assert LIMITS.idle_timeout - 0.05 <= time.monotonic() - started < LIMITS.idle_timeout + 1


def test_connections_past_the_cap_are_closed_at_once(
    connect: Callable[[], socket.socket], server: WebServer
) -> None:
    held = [connect() for _ in range(LIMITS.connections)]
    wait_until(lambda: server.connections == LIMITS.connections, timeout=5)
    extra = connect()
    started = time.monotonic()
    assert closed(extra).startswith(b"HTTP/1.1 503 ")
    assert time.monotonic() - started < LIMITS.header_timeout  # not after a timeout
    held[0].close()
    wait_until(lambda: server.connections < LIMITS.connections, timeout=5)
    again = connect()
    again.sendall(request("/again"))
    assert responses(again, 1) == [(200, b"GET /again")]


def test_a_client_that_does_not_read_is_dropped(
    connect: Callable[[], socket.socket], server: WebServer
) -> None:
    sock = connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request("/big"))  # 16 MiB it never reads
    wait_until(lambda: server.connections == 0, timeout=LIMITS.write_timeout + 5)
    other = connect()
    other.sendall(request("/x"))
    assert responses(other, 1) == [(200, b"GET /x")]


def test_one_thread_serves_them_all_and_stop_closes_everything() -> None:
    before = threading.active_count()
    web = WebServer("127.0.0.1", 0, echo, Limits(connections=300))
    web.start()
    socks = [socket.create_connection(web.address, timeout=5) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # half-open: never finished
        wait_until(lambda: web.connections == 200, timeout=10)
        assert threading.active_count() == before + 1
        web.stop()
        assert threading.active_count() == before
        for sock in socks[:5]:
            assert closed(sock) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(web.address, timeout=5).close()
    finally:
        web.stop()
        for sock in socks:
            sock.close()


def test_stop_before_start_closes_the_socket() -> None:
    web = WebServer("127.0.0.1", 0, echo, LIMITS)
    address = web.address
    web.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
