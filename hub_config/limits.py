"""Limits on what the hub reads: the size of a request, and how long a connection may idle.

JupyterHub creates its tornado HTTPServer without a body limit, so tornado's default applies:
100 MiB held in memory per request (a 2 MB `partition` was read, refused, and echoed). Nor does
it bound the time a connection may take to send its request's headers: tornado's default is an
hour, so one user who opened 2,000 connections and sent half a request to each held 2,000 of the
hub's descriptors. No JupyterHub setting reaches the HTTPServer, so the limits are set on
tornado's HTTPServer class before the hub creates its server. The hub's pages and API take small
JSON and forms only; notebooks and uploads go to users' own servers, not through these limits.
The firewall bounds how many connections each address and each local account may hold
(ansible role workbench_hub, hub-api.nft).
"""

from __future__ import annotations

import copy
import functools

from tornado.httpserver import HTTPServer

# A connection's first request: its headers within FIRST_REQUEST_SECONDS of connecting, its body
# within BODY_SECONDS. Once a request came whole, the connection may idle KEPT_ALIVE_SECONDS
# before the next one: the proxy keeps idle connections to the hub without a timeout of its own,
# and closing one under it as it sends a request would fail that request.
FIRST_REQUEST_SECONDS = 20
KEPT_ALIVE_SECONDS = 600
BODY_SECONDS = 30


def _capped(kwargs: dict, name: str, cap: float) -> float:
    return min(kwargs.get(name) or cap, cap)


def cap_requests(max_bytes: int) -> None:
    """In every HTTPServer this process creates: refuse a body over `max_bytes`, close a connection
    whose first request's headers or any body come too slowly, and one kept alive too long."""
    initialize = getattr(HTTPServer.initialize, "__wrapped__", HTTPServer.initialize)
    start_request = getattr(HTTPServer.start_request, "__wrapped__", HTTPServer.start_request)

    @functools.wraps(initialize)
    def capped_initialize(self, *args, **kwargs):
        kept_alive = _capped(kwargs, "idle_connection_timeout", KEPT_ALIVE_SECONDS)
        kwargs["max_body_size"] = _capped(kwargs, "max_body_size", max_bytes)
        kwargs["idle_connection_timeout"] = _capped(kwargs, "idle_connection_timeout", FIRST_REQUEST_SECONDS)
        kwargs["body_timeout"] = _capped(kwargs, "body_timeout", BODY_SECONDS)
        initialize(self, *args, **kwargs)
        self.kept_alive_params = copy.copy(self.conn_params)
        self.kept_alive_params.header_timeout = kept_alive

    @functools.wraps(start_request)
    def kept_alive_after_the_first(self, server_conn, request_conn):
        # Called as each request begins, the first one's reader already made with the short
        # timeout; the readers of the ones after it are made from server_conn.params.
        if getattr(server_conn, "params", None) is self.conn_params and hasattr(self, "kept_alive_params"):
            server_conn.params = self.kept_alive_params
        return start_request(self, server_conn, request_conn)

    HTTPServer.initialize = capped_initialize
    HTTPServer.start_request = kept_alive_after_the_first
