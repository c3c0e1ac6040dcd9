"""The job's side of reverse reach (LUMI): once JupyterLab listens, hold a remote forward from the
hub's tunnel gateway to it, and dial again whenever the connection drops. Standard library and
the node's OpenSSH client only.

    python -m aifa_workbench.extensions.reverse_tunnel PRIVATE_DIR

The batch script starts it before the server, with the job's credential in AIFA_TUNNEL_* (from
the hub's 0600 environment file), and unsets those before JupyterLab starts. The key and its
certificate are written into PRIVATE_DIR (0700, the job's own), never onto a command line.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

CREDENTIAL_NAMES = ("AIFA_TUNNEL_KEY", "AIFA_TUNNEL_CERT", "AIFA_TUNNEL_KNOWN_HOSTS")
# sshd on the gateway gives up on a vanished client after about (count + 1) x interval; the
# job's ssh notices a dead gateway after ServerAliveInterval x ServerAliveCountMax.
ALIVE_INTERVAL, ALIVE_COUNT = 2, 3
# Short connect timeout and retry delays: once a partition heals, the next attempt is at most
# about three seconds away (a connect in flight would wait for its next SYN retransmission). Each
# delay is jittered (half to one and a half times it): jobs that lost the gateway together (a
# restart, a flood the gateway shed) do not all dial again in the same instant.
CONNECT_TIMEOUT = 3
RETRY_DELAYS = (0.2, 0.5, 1, 2)


def retry_delay(attempt: int, uniform=random.uniform) -> float:
    """Seconds to wait before dialling again after `attempt` quick failures in a row."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)] * uniform(0.5, 1.5)


def write_private(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def ssh_argv(directory: Path, env: dict, local_port: int) -> list[str]:
    user_host, ssh_port, granted = env["AIFA_TUNNEL_GATEWAY"], env["AIFA_TUNNEL_GATEWAY_PORT"], env["AIFA_TUNNEL_PORT"]
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-N",
        "-T",
        "-p",
        str(int(ssh_port)),
        "-i",
        str(directory / "key"),
        "-o",
        f"CertificateFile={directory / 'key-cert.pub'}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={directory / 'known_hosts'}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o",
        f"ServerAliveInterval={ALIVE_INTERVAL}",
        "-o",
        f"ServerAliveCountMax={ALIVE_COUNT}",
        "-R",
        f"127.0.0.1:{int(granted)}:127.0.0.1:{int(local_port)}",
        user_host,
    ]


def wait_for_port(port_file: Path) -> int:
    while True:
        try:
            return int(port_file.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)


def end_on_term(*_) -> None:
    raise SystemExit(0)  # subprocess.run kills its ssh on the way out


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, end_on_term)
    directory = Path(argv[1])
    env = dict(os.environ)
    missing = [
        n
        for n in (*CREDENTIAL_NAMES, "AIFA_TUNNEL_GATEWAY", "AIFA_TUNNEL_GATEWAY_PORT", "AIFA_TUNNEL_PORT")
        if not env.get(n)
    ]
    if missing:
        print(f"AIFA Workbench tunnel: not started, {', '.join(missing)} missing", file=sys.stderr)
        return 2
    write_private(directory, "key", env["AIFA_TUNNEL_KEY"])
    write_private(directory, "key-cert.pub", env["AIFA_TUNNEL_CERT"])
    write_private(directory, "known_hosts", env["AIFA_TUNNEL_KNOWN_HOSTS"])
    child_env = {n: v for n, v in env.items() if not n.startswith(("AIFA_TUNNEL_", "JUPYTERHUB_"))}
    local_port = wait_for_port(directory / "port")
    argv_ssh = ssh_argv(directory, env, local_port)
    attempt = 0
    while True:
        started = time.monotonic()
        code = subprocess.run(argv_ssh, env=child_env, stdin=subprocess.DEVNULL).returncode
        attempt = 0 if time.monotonic() - started > 30 else attempt + 1
        delay = retry_delay(attempt)
        print(
            f"AIFA Workbench tunnel: ssh to the gateway ended ({code}); again in {delay:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(delay)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
