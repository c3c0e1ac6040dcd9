"""Talk to a running Jupyter server as a person's notebook would: a kernel over a websocket."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import requests
import websocket


def _message(code: str, session: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                   "username": "test", "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


def execute(server_url: str, token: str, code: str, timeout: float = 60) -> str:
    """Start a kernel on the server at `server_url`, run `code`, return its text/plain result."""
    headers = {"Authorization": f"token {token}"}
    r = requests.post(server_url + "api/kernels", headers=headers, json={"name": "python3"}, timeout=30)
    r.raise_for_status()
    kernel_id = r.json()["id"]
    ws_url = server_url.replace("http://", "ws://", 1) + f"api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        request = _message(code, uuid.uuid4().hex)
        ws.send(json.dumps(request))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            if reply["msg_type"] == "execute_result":
                return reply["content"]["data"]["text/plain"]
            if reply["msg_type"] == "error":
                raise RuntimeError(f"kernel error: {reply['content']['ename']}: {reply['content']['evalue']}")
    finally:
        ws.close()
        requests.delete(server_url + f"api/kernels/{kernel_id}", headers=headers, timeout=30)
