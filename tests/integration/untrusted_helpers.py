"""What a user who attacks others can do on the demo without any privilege: submit Slurm jobs of
their own, and put a Jupyter config in their own home that their own server then runs."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests


def sbatch_as(user: str, name: str, seconds: int = 600) -> str:
    out = subprocess.run(
        [
            "sudo",
            "-u",
            user,
            "sbatch",
            "--parsable",
            f"--job-name={name}",
            "-p",
            "cpu",
            "-t",
            "15",
            "-o",
            "/dev/null",
            "--chdir=/tmp",
            "--wrap",
            f"sleep {seconds}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().split(";")[0]


@contextlib.contextmanager
def own_jupyter_config(user: str, source: str, extra_files: dict[str, str] | None = None):
    """Write ~user/.jupyter/jupyter_server_config.py (and files beside it), owned by the user, as
    the user could; removed afterwards."""
    entry = pwd.getpwnam(user)
    config_dir = Path(entry.pw_dir) / ".jupyter"
    created = [] if config_dir.exists() else [config_dir]
    config_dir.mkdir(exist_ok=True)
    files = {
        config_dir / "jupyter_server_config.py": source,
        **{Path(entry.pw_dir) / rel: text for rel, text in (extra_files or {}).items()},
    }
    kept = {path: path.read_bytes() for path in files if path.is_file()}  # the user's own, put back after
    for path, text in files.items():
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            created.append(path.parent)
        path.write_text(text)
    for path in [*created, *files]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield files
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        for path, content in kept.items():
            path.write_bytes(content)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def proxy_api(hub) -> tuple[str, dict]:
    settings = (hub.home / "workbench.yaml").read_text()
    api_port = int(next(line.split(":")[1] for line in settings.splitlines() if line.startswith("proxy_api_port")))
    token = (hub.home / "secrets" / "proxy-auth-token").read_text().strip()
    return f"http://127.0.0.1:{api_port}/api/routes", {"Authorization": f"token {token}"}


def proxy_routes(hub) -> dict:
    url, headers = proxy_api(hub)
    return requests.get(url, headers=headers, timeout=10).json()


def route_target(hub, username: str) -> str:
    """Where the proxy sends <user>.localhost/user/<user>/ (http://node:port)."""
    for spec, route in proxy_routes(hub).items():
        if spec.rstrip("/") == f"/{username}.localhost/user/{username}":
            return route["target"]
    return ""


def spawn_outcome(hub, username: str, token: str, options: dict, timeout: float = 90) -> tuple[bool, str, list]:
    """Ask for a server; (failed, the last message the user saw, every progress event). A spawn
    that fails within the hub's slow_spawn_timeout answers the POST itself with its message."""
    from .hubs import progress_events

    r = hub.api("POST", f"users/{username}/server", token=token, json=options, timeout=timeout)
    if r.status_code >= 400:
        return True, r.json().get("message", ""), []
    events = progress_events(hub, username, token, timeout=timeout)
    if events and events[-1].get("failed"):
        return True, events[-1].get("message", ""), events
    # it failed between the POST's answer and the progress stream (which then ends without a
    # failure event, or answers "not starting"): the hub logged why
    said = re.findall(rf"error starting {username}'s server: (.*)", hub.log_path.read_text())
    if said:
        return True, said[-1], events
    return False, events[-1].get("message", "") if events else "", events


class HostileProgram:
    """A test program (its source text) run by argv_prefix (runuser, ip netns exec...), as a hostile
    user would run it; what it prints is read as it comes. It prints "ready" once in place."""

    def __init__(self, argv_prefix: list[str], source: Path, *args: str, python: str = sys.executable):
        self.proc = subprocess.Popen(
            [*argv_prefix, python, "-I", "-c", source.read_text(), *args], stdout=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while "ready" not in self.lines:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> list[str]:
        """SIGTERM; the lines it printed besides "ready"."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        return [line for line in self.lines if line != "ready"]
