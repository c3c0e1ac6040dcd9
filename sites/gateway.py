"""Reverse reach (LUMI): the job dials out to the hub's tunnel gateway and listens there, on the
gateway host's loopback, on one port the hub granted it; the proxy routes to that port.

A grant is a file `<grants_dir>/<port>` holding the key id of the job's certificate; it is written
whole and never over another's (model.files.write_atomically, replace=False), so two spawns (or
two hubs sharing a gateway) never get one port, and is readable by the hub's and the gateway's
accounts only (role tunnel_gateway: a user who saw a new grant could bind its port before the
job's tunnel). The gateway's principals command (ansible role tunnel_gateway) lets a certificate
listen on its port only while that file names its key id: deleting the grant revokes it for every
later login, and the certificate's own validity ends it at the walltime at the latest."""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aifa_workbench.model.files import write_atomically

from .ssh_library import asyncssh

from . import socket_owner

KEY_ID = re.compile(r"aifa-([0-9]{4,5})-[0-9a-f]{16}")
# a certificate is valid from a little before it is made (clock skew between hub and gateway)
NOT_BEFORE_SECONDS = 300


class NoFreePort(RuntimeError):
    """Every port of the gateway's range is granted."""


@dataclass(frozen=True)
class Grant:
    port: int
    key_id: str

    def as_state(self) -> dict:
        return {"port": self.port, "key_id": self.key_id}

    @classmethod
    def from_state(cls, state) -> "Grant | None":
        if not isinstance(state, dict):
            return None
        port, key_id = state.get("port"), state.get("key_id")
        match = KEY_ID.fullmatch(key_id) if isinstance(key_id, str) else None
        if not match or not isinstance(port, int) or int(match.group(1)) != port:
            return None
        return cls(port, key_id)


def grant_port(grants_dir: str, ports: tuple[int, int]) -> Grant:
    """A port of the range nobody holds, granted to a new key id."""
    first, last = ports
    span = last - first + 1
    start = secrets.randbelow(span)  # spread the grants: a port just freed is not the next one
    for i in range(span):
        port = first + (start + i) % span
        key_id = f"aifa-{port}-{secrets.token_hex(8)}"
        path = Path(grants_dir) / str(port)
        try:
            write_atomically(path, key_id + "\n", mode=0o640, replace=False)
        except FileExistsError:
            continue
        if socket_owner.owners("127.0.0.1", port):  # an ended job's session not yet gone, or anyone's
            path.unlink(missing_ok=True)  # socket: never hand that port on
            continue
        return Grant(port, key_id)
    raise NoFreePort(f"all {span} ports of the tunnel gateway ({first}-{last}) are granted")


def revoke(grants_dir: str, grant: Grant) -> bool:
    """Delete the grant if it is still this one's (the port may since be another server's)."""
    path = Path(grants_dir) / str(grant.port)
    try:
        if path.read_text(encoding="ascii").strip() != grant.key_id:
            return False
        path.unlink()
        return True
    except (OSError, UnicodeDecodeError):
        return False


def mark_expiry(grants_dir: str, grant: Grant, expires_at: float) -> None:
    """The grant's file keeps, as its modification time, when the job's certificate expires: the
    reconciler (spawners.tunnel_reconcile) deletes grants past it, whichever hub made them."""
    os.utime(Path(grants_dir) / str(grant.port), (expires_at, expires_at))


def granted_ports(grants_dir: str) -> dict[int, str]:
    """{port: key id} of every grant (what an admin or a test sees of the gateway)."""
    found = {}
    for path in Path(grants_dir).iterdir():
        if path.name.isdigit():
            try:
                found[int(path.name)] = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                continue
    return found


@dataclass(frozen=True)
class JobCredential:
    """What the job needs to dial the gateway: a fresh key and its certificate (secrets: they
    travel only in the job's 0600 environment file)."""

    private_key: str
    certificate: str


def job_credential(ca_key_file: str, grant: Grant, valid_seconds: int) -> JobCredential:
    """A new key pair for this job, certified by the hub's CA for the grant's key id only: port
    forwarding and nothing else (no pty, agent, X11 or user rc), valid for `valid_seconds`."""
    ca_key = asyncssh.read_private_key(ca_key_file)
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca_key.generate_user_certificate(
        key,
        grant.key_id,
        principals=[grant.key_id],
        valid_after=now - NOT_BEFORE_SECONDS,
        valid_before=now + valid_seconds,
        permit_port_forwarding=True,
        permit_pty=False,
        permit_agent_forwarding=False,
        permit_x11_forwarding=False,
        permit_user_rc=False,
        touch_required=False,
    )
    return JobCredential(key.export_private_key().decode(), cert.export_certificate().decode())


def known_hosts_line(host: str, port: int, host_key_file: str) -> str:
    """The gateway's host key as the job's ssh pins it (StrictHostKeyChecking=yes)."""
    kind, blob = Path(host_key_file).read_text().split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {kind} {blob}"
