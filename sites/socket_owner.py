"""Who listens on a port of this host, as the kernel says: the owner uid of each listening TCP
socket, from /proc/net/tcp and /proc/net/tcp6 (readable by every process; no privilege needed).

A port number on a shared host is no proof of who answers there: any local user may bind a
free port, the gateway's or the tunnel daemon's included. Before the hub sends a server's token
to an address of this host, it asks here whose socket would take the connection.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

LISTEN = 0x0A
PROC_FILES = (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6))


@dataclass(frozen=True)
class Listener:
    address: str  # as ipaddress writes it: 127.0.0.1, ::1, 0.0.0.0, ::
    port: int
    uid: int


def _address(hex_address: str, family: int) -> str:
    """The kernel prints each 32-bit word of the address in the host's byte order."""
    words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
    raw = b"".join(struct.pack("=I", word) for word in words)
    return str(ipaddress.ip_address(socket.inet_ntop(family, raw)))


def parse_listeners(text: str, family: int) -> list[Listener]:
    """The LISTEN sockets of one /proc/net/tcp{,6} text; lines it cannot read are skipped."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            local, state, uid = fields[1], int(fields[3], 16), int(fields[7])
            hex_address, hex_port = local.split(":")
            if state == LISTEN:
                found.append(Listener(_address(hex_address, family), int(hex_port, 16), uid))
        except (ValueError, OSError, struct.error):
            continue
    return found


def all_listeners() -> list[Listener]:
    """Every listening TCP socket of this network namespace. Reading /proc/net/tcp walks the
    kernel's whole socket table (about 10 ms here): callers checking many ports read it once."""
    found = []
    for path, family in PROC_FILES:
        try:
            text = Path(path).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        found.extend(parse_listeners(text, family))
    return found


def listeners(port: int) -> list[Listener]:
    """Every TCP socket of this network namespace listening on `port`."""
    return [listener for listener in all_listeners() if listener.port == port]


def reaching(ip: str, found: list[Listener]) -> list[Listener]:
    """The listeners a connection to `ip` could land on: the address itself, its IPv4-mapped
    form, or a wildcard of either family."""
    target = ipaddress.ip_address(ip)
    names = {str(target), "0.0.0.0", "::"}
    if target.version == 4:
        names.add(str(ipaddress.IPv6Address(f"::ffff:{target}")))
    return [listener for listener in found if listener.address in names]


def owners(ip: str, port: int, snapshot: list[Listener] | None = None) -> set[int]:
    """The uids of the sockets that could take a connection to ip:port on this host (empty when
    none listens); from `snapshot` (all_listeners()) when given."""
    found = listeners(port) if snapshot is None else [x for x in snapshot if x.port == port]
    return {listener.uid for listener in reaching(ip, found)}


def is_local_address(ip: str) -> bool:
    """Whether `ip` is an address of this host (then its listeners are in /proc/net)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
        return True
    except OSError:
        return False
