"""A cap on the size of requests the hub reads.

JupyterHub creates its tornado HTTPServer without a body limit, so tornado's default applies:
100 MiB held in memory per request (a 2 MB `partition` was read, refused, and echoed). No
JupyterHub setting reaches the HTTPServer, so the cap is set on tornado's HTTPServer class
before the hub creates its server. The hub's pages and API take small JSON and forms only;
notebooks and uploads go to users' own servers, not through this limit.
"""
from __future__ import annotations

import functools

from tornado.httpserver import HTTPServer


def cap_request_bodies(max_bytes: int) -> None:
    """Refuse any request body over `max_bytes` in every HTTPServer this process creates."""
    original = getattr(HTTPServer.initialize, "__wrapped__", HTTPServer.initialize)

    @functools.wraps(original)
    def initialize(self, *args, **kwargs):
        kwargs["max_body_size"] = min(kwargs.get("max_body_size") or max_bytes, max_bytes)
        return original(self, *args, **kwargs)

    HTTPServer.initialize = initialize
