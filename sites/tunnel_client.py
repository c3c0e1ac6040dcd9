"""The hub's side of forward reach: asks the tunnel daemon (sites.tunneld) over its unix socket."""

from __future__ import annotations

import asyncio
import json


class TunnelDaemonError(RuntimeError):
    """The tunnel daemon did not answer, or could not do what it was asked; `detail` is for logs."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


async def ask(socket_path: str, request: dict, timeout: float = 20.0) -> dict:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), 5)
    except (OSError, asyncio.TimeoutError) as e:
        raise TunnelDaemonError(f"tunnel daemon at {socket_path} not reached: {e}") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise TunnelDaemonError(f"tunnel daemon did not answer {request.get('op')}: {type(e).__name__}") from None
    finally:
        writer.close()
    try:
        answer = json.loads(line)
    except json.JSONDecodeError:
        raise TunnelDaemonError("tunnel daemon answered no JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise TunnelDaemonError(
            f"tunnel daemon: {str(answer.get('error') if isinstance(answer, dict) else answer)[:500]}"
        )
    return answer
