"""Is the server at an address the user's own? Asked before the hub routes to it.

A job reports its port; anything on the node may listen on a port, another user's JupyterLab
among them. The hub asks the address for `<base_url>api/me` with the server's own API token:
only the user's own server, under its own base URL, answers with that user's name (another
user's server answers 404 for a base URL that is not its own, or refuses the token).
"""

from __future__ import annotations

import asyncio
import json

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

CONNECT_TRIES = 3
MAX_ANSWER_BYTES = 64 * 1024


def identity_name(body: bytes) -> str | None:
    """The username in jupyter-server's /api/me answer, or None."""
    if len(body) > MAX_ANSWER_BYTES:
        return None
    try:
        identity = json.loads(body).get("identity", {})
    except (ValueError, AttributeError):
        return None
    name = identity.get("username") if isinstance(identity, dict) else None
    return name if isinstance(name, str) else None


async def own_server_identity(url: str, token: str, timeout: float = 30) -> str | None:
    """The username the server at `url` (…/api/me) answers with, or None if it does not."""
    for attempt in range(CONNECT_TRIES):
        body = bytearray()

        def keep(chunk: bytes, body=body) -> None:  # whatever answers may send gigabytes: keep the start only
            if len(body) <= MAX_ANSWER_BYTES:
                body.extend(chunk[: MAX_ANSWER_BYTES + 1 - len(body)])

        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {token}"},
            request_timeout=timeout,
            follow_redirects=False,
            streaming_callback=keep,
        )
        # a client of its own: a server holding its answer back must not take the hub's connections
        client = SimpleAsyncHTTPClient(force_instance=True)
        try:
            await client.fetch(request)
        except HTTPClientError:
            return None  # it answered, but not as the user's server (404, 403, redirect…)
        except OSError:
            await asyncio.sleep(0.5 * (attempt + 1))  # reported after listening: rare, but retry
            continue
        finally:
            client.close()
        return identity_name(bytes(body))
    return None
