"""Talk to a running Jupyter server as a person's notebook would: a kernel over a websocket."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import requests
import websocket


def _message(code: str, session: str) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "session": session,
            "username": "test",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
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


class Kernel:
    """One kernel on a running server, for several executions in the same namespace."""

    def __init__(self, server_url: str, token: str, timeout: float = 60):
        self.server_url, self.headers, self.timeout = server_url, {"Authorization": f"token {token}"}, timeout
        self.token = token

    def __enter__(self):
        r = requests.post(self.server_url + "api/kernels", headers=self.headers, json={"name": "python3"}, timeout=30)
        r.raise_for_status()
        self.kernel_id = r.json()["id"]
        ws_url = self.server_url.replace("http://", "ws://", 1) + f"api/kernels/{self.kernel_id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], timeout=self.timeout
        )
        self.session = uuid.uuid4().hex
        return self

    def run(self, code: str):
        """Run `code`; return the last expression's text/plain result (None if there is none)."""
        request = _message(code, self.session)
        self.ws.send(json.dumps(request))
        result, printed = None, []
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                continue
            if reply["msg_type"] == "execute_result":
                result = reply["content"]["data"]["text/plain"]
            elif reply["msg_type"] == "stream":  # what the cell printed and logged, for a failure's message
                printed.append(reply["content"]["text"])
            elif reply["msg_type"] == "error":
                said = "".join(printed)[-4000:]
                raise RuntimeError(
                    f"kernel error: {reply['content']['ename']}: {reply['content']['evalue']}\nthe cell printed:\n{said}"
                )
            elif reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                return result

    def __exit__(self, *exc):
        self.ws.close()
        requests.delete(self.server_url + f"api/kernels/{self.kernel_id}", headers=self.headers, timeout=30)
