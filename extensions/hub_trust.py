"""Forward reach: start JupyterLab trusting the hub's CA alone (sites/hub_api_tls.py says why).

    python -m aifa_workbench.extensions.hub_trust COMMAND [ARG...]

Run by the batch script as the last step before JupyterLab (inside the container, for a
container environment, after the image's own environment is set): it keeps the node's (or the
image's) SSL_CERT_FILE and SSL_CERT_DIR in AIFA_WORKBENCH_NODE_*, sets SSL_CERT_FILE to the hub's
CA (AIFA_WORKBENCH_HUB_CA) and SSL_CERT_DIR to an empty directory beside it, and becomes
COMMAND. The server extension gives the kept values back before any kernel starts.
"""

from __future__ import annotations

import os
import sys

TRUST_NAMES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def pinned_environment(environ: dict) -> dict:
    ca_file = environ["AIFA_WORKBENCH_HUB_CA"]
    empty_dir = os.path.join(os.path.dirname(ca_file), "no-other-ca")
    os.makedirs(empty_dir, mode=0o700, exist_ok=True)
    env = dict(environ)
    for name in TRUST_NAMES:
        env.pop(f"AIFA_WORKBENCH_NODE_{name}", None)
        if name in environ:
            env[f"AIFA_WORKBENCH_NODE_{name}"] = environ[name]
    env.update(SSL_CERT_FILE=ca_file, SSL_CERT_DIR=empty_dir)
    return env


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not os.environ.get("AIFA_WORKBENCH_HUB_CA"):
        print("AIFA Workbench: hub_trust needs AIFA_WORKBENCH_HUB_CA and a command", file=sys.stderr)
        return 2
    os.execvpe(argv[1], argv[1:], pinned_environment(dict(os.environ)))
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
