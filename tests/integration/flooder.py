"""A hostile user's flood, run as that user (standard library only, read by tests as source text):
hold COUNT connections open to HOST:PORT, from SOURCE (an address of the caller's, "-": any), send
PAYLOAD once connected and nothing after, and open a new one whenever one ends, until SIGTERM.
Prints "ready" once COUNT attempts were made, then at the end one JSON line: what it got.

    python3 flooder.py HOST PORT COUNT SOURCE PAYLOAD
"""

import json
import resource
import selectors
import signal
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
source = None if sys.argv[4] == "-" else sys.argv[4]
payload = sys.argv[5].encode().decode("unicode_escape").encode("latin-1")
CONNECT_WAIT = 3  # a SYN the firewall dropped: give up on it after this
NEW_PER_TICK = 100  # each 10 ms at most: 10,000 a second, as fast as a shared node lets it

stats = {"attempts": 0, "connected": 0, "refused": 0, "unanswered": 0, "closed_by_peer": 0, "most_held": 0}
selector = selectors.DefaultSelector()
started_at: dict = {}
held: set = set()
running = True


def stop(*_):
    global running
    running = False


def open_one():
    stats["attempts"] += 1
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError:  # out of descriptors: hold what is held
        return
    sock.setblocking(False)
    if source:
        sock.bind((source, 0))
    sock.connect_ex((host, port))
    selector.register(sock, selectors.EVENT_WRITE)
    started_at[sock] = time.monotonic()


def forget(sock, outcome):
    selector.unregister(sock)
    started_at.pop(sock, None)
    held.discard(sock)
    sock.close()
    stats[outcome] += 1


def connected(sock):
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        return forget(sock, "refused")
    stats["connected"] += 1
    started_at.pop(sock, None)
    held.add(sock)
    stats["most_held"] = max(stats["most_held"], len(held))
    try:
        sock.send(payload)
    except OSError:
        return forget(sock, "closed_by_peer")
    selector.modify(sock, selectors.EVENT_READ)


def readable(sock):
    try:
        data = sock.recv(65536)
    except OSError:
        data = b""
    if not data:
        forget(sock, "closed_by_peer")


signal.signal(signal.SIGTERM, stop)
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
announced = False
while running:
    for _ in range(min(NEW_PER_TICK, count - len(selector.get_map()))):
        open_one()
    if not announced and stats["attempts"] >= count:
        print("ready", flush=True)
        announced = True
    for key, events in selector.select(timeout=0.05):
        (connected if events & selectors.EVENT_WRITE else readable)(key.fileobj)
    now = time.monotonic()
    for sock in [s for s, t in started_at.items() if now - t > CONNECT_WAIT]:
        forget(sock, "unanswered")
    time.sleep(0.01)
stats["held_at_end"] = len(held)
print(json.dumps(stats), flush=True)
