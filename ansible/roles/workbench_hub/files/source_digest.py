#!/usr/bin/env python3
"""Print a digest of the workbench's installable source (what `pip install .` would ship).

Ansible reinstalls the package into the venv when this changes, and the test suite refuses
to run against a venv whose installed copy is older than the checkout.
"""

import hashlib
import sys
from pathlib import Path

PARTS = ("pyproject.toml", "README.md", "model", "hub_config", "spawners", "sites", "extensions", "notebooks")
SKIPPED = ("__pycache__", "node_modules")  # node_modules: only for `make labextension`, never shipped


def source_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for part in PARTS:
        base = root / part
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if any(skipped in path.parts for skipped in SKIPPED):
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(source_digest(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
