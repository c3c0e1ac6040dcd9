"""Copy the bundled starter notebooks into the user's home, never over their edits.

Run by the batch script, as the user, before JupyterLab starts:

    python -m aifa_workbench.extensions.starter_notebooks

A notebook is copied once: what was copied is remembered in ~/.aifa-workbench/ (each name with
the fingerprint of its content), so a notebook the user edited is left as it is, one they deleted
stays deleted, and one added to the workbench later arrives on their next start. A copy the user
never changed is brought up to the workbench's current version (a new guard in its first cell,
say): it is unchanged if it is what was copied, or, for copies made before fingerprints were
kept, one of the versions the workbench shipped (past-versions.json beside the notebooks).
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

from aifa_workbench.model.files import write_atomically

TARGET_DIR = "starter-notebooks"
MANIFEST = ".aifa-workbench/starter-notebooks.json"
PAST_VERSIONS = "past-versions.json"  # {name: [sha256 of each version shipped before]}


def bundled_notebooks() -> dict[str, Path]:
    root = resources.files("aifa_workbench.notebooks")
    return {entry.name: Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".ipynb")}


def past_versions() -> dict[str, list[str]]:
    try:
        return json.loads(resources.files("aifa_workbench.notebooks").joinpath(PAST_VERSIONS).read_text())
    except (OSError, ValueError):
        return {}


def fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def read_manifest(path: Path) -> dict[str, str | None]:
    """{name: fingerprint of what was copied}; the first manifests listed names alone (None)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(data, list):
        return {name: None for name in data if isinstance(name, str)}
    if isinstance(data, dict):
        return {k: v if isinstance(v, str) else None for k, v in data.items() if isinstance(k, str)}
    return {}


def copy_starter_notebooks(
    home: Path, bundled: dict[str, Path], past: dict[str, list[str]] | None = None
) -> tuple[list[str], list[str]]:
    """Copy each bundled notebook not copied before and not present, and bring unchanged copies up
    to date; return (the names copied, the names updated)."""
    manifest_path = home / MANIFEST
    manifest = read_manifest(manifest_path)
    before = dict(manifest)
    target = home / TARGET_DIR
    copied, updated = [], []
    for name, source in sorted(bundled.items()):
        destination, current = target / name, fingerprint(source)
        if current is None:
            continue
        if not destination.exists() and not destination.is_symlink():
            if name in manifest:  # the user deleted it
                continue
            _install(source, destination)
            copied.append(name)
        elif not destination.is_symlink() and destination.is_file():
            theirs = fingerprint(destination)
            if theirs == current:
                pass
            elif theirs is not None and (theirs == manifest.get(name) or theirs in (past or {}).get(name, ())):
                _install(source, destination)
                updated.append(name)
            else:
                continue  # the user's edits
        else:
            continue
        manifest[name] = current
    if manifest != before:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return copied, updated


def _install(source: Path, destination: Path) -> None:
    """Write the notebook whole or not at all (a job may be stopped while it copies; two servers
    of the user may start at once), through a new file that follows no link."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(destination, source.read_bytes(), mode=0o644)


if __name__ == "__main__":
    copied, updated = copy_starter_notebooks(Path.home(), bundled_notebooks(), past_versions())
    if copied:
        print(f"AIFA Workbench: copied starter notebooks to ~/{TARGET_DIR}: {', '.join(copied)}", file=sys.stderr)
    if updated:
        print(f"AIFA Workbench: brought unchanged starter notebooks up to date: {', '.join(updated)}", file=sys.stderr)
