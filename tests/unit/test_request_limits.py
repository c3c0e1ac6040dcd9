"""The hub's HTTP server: request size and idle time bounded (hub_config/limits.py), tried on a real
tornado server on the loopback with the limits shortened."""

import asyncio
import socket

import pytest
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from aifa_workbench.hub_config import limits

pytestmark = pytest.mark.unit
REQUEST = b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n"


class Hello(RequestHandler):
    def get(self):
        self.write("hello")


@pytest.fixture
def capped(monkeypatch):
    before = HTTPServer.initialize, HTTPServer.start_request
    monkeypatch.setattr(limits, "FIRST_REQUEST_SECONDS", 0.5)
    monkeypatch.setattr(limits, "KEPT_ALIVE_SECONDS", 5)
    limits.cap_requests(65536)
    yield
    HTTPServer.initialize, HTTPServer.start_request = before


def test_the_caps_replace_looser_limits_and_keep_stricter_ones(capped):
    loose = HTTPServer(Application(), idle_connection_timeout=3600, body_timeout=600, max_body_size=10**9).conn_params
    assert (loose.header_timeout, loose.body_timeout, loose.max_body_size) == (0.5, 30, 65536)
    strict_server = HTTPServer(Application(), idle_connection_timeout=0.2, body_timeout=2, max_body_size=1024)
    strict = strict_server.conn_params
    assert (strict.header_timeout, strict.body_timeout, strict.max_body_size) == (0.2, 2, 1024)
    assert strict_server.kept_alive_params.header_timeout == 0.2  # not loosened after the first request
    limits.cap_requests(4096)  # twice: tornado's own methods wrapped once
    assert HTTPServer(Application()).conn_params.max_body_size == 4096


async def _reads_until_closed(sock: socket.socket, seconds: float) -> bytes:
    loop, got = asyncio.get_running_loop(), b""
    async with asyncio.timeout(seconds):
        while chunk := await loop.sock_recv(sock, 4096):
            got += chunk
    return got


def test_half_a_request_is_closed_in_seconds_but_a_kept_alive_connection_may_idle(capped):
    async def scenario():
        server = HTTPServer(Application([("/", Hello)]))
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        server.add_sockets([listener])
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()
        half, kept = socket.socket(), socket.socket()
        for sock in (half, kept):
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(half, b"GET / HTTP/1.1\r\nHost: hub\r\n")  # and nothing more
        await loop.sock_sendall(kept, REQUEST)
        assert b"hello" in await loop.sock_recv(kept, 4096)
        assert await _reads_until_closed(half, 3) == b""  # closed after 0.5 s, not an hour
        await asyncio.sleep(1)  # kept alive longer than 0.5 s
        await loop.sock_sendall(kept, REQUEST)
        assert b"hello" in await loop.sock_recv(kept, 4096)
        for sock in (half, kept):
            sock.close()
        server.stop()

    asyncio.run(scenario())
