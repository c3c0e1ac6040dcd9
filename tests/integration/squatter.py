"""A local user's program that takes a port of this host meant for someone else's server (the
attack of issue 21): `python3 squatter.py HOST PORT`, run as an unprivileged user. It binds the
port as soon as it can (trying every 10 ms), listens, and reports on stdout, one line each:
`ready`, then `accepted` for each connection that completed and `bytes N` for what it received."""

import socket
import sys
import time


def main(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the proxy's TIME_WAITs
        try:
            server.bind((host, port))
            break
        except OSError:
            server.close()
            time.sleep(0.01)
    server.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        print("accepted", flush=True)
        conn.settimeout(2)
        try:
            while data := conn.recv(65536):
                print(f"bytes {len(data)}", flush=True)
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
