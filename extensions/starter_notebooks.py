"""Copy the bundled starter notebooks into the user's home, never over their edits.

Run by the batch script, as the user, before JupyterLab starts:

    python -m aifa_workbench.extensions.starter_notebooks

A notebook is copied once: the names copied are remembered in ~/.aifa-workbench/, so a notebook
the user edited is left as it is, one they deleted stays deleted, and one added to the workbench
later arrives on their next start.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

TARGET_DIR = "starter-notebooks"
MANIFEST = ".aifa-workbench/starter-notebooks.json"


def bundled_notebooks() -> dict[str, Path]:
    root = resources.files("aifa_workbench.notebooks")
    return {entry.name: Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".ipynb")}


def copy_starter_notebooks(home: Path, bundled: dict[str, Path]) -> list[str]:
    """Copy each bundled notebook not copied before and not present; return the names copied."""
    manifest_path = home / MANIFEST
    try:
        copied_before = set(json.loads(manifest_path.read_text()))
    except (OSError, ValueError):
        copied_before = set()
    target = home / TARGET_DIR
    copied = []
    for name, source in sorted(bundled.items()):
        destination = target / name
        if name in copied_before or destination.exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        copied.append(name)
    if copied:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(sorted(copied_before | set(copied)), indent=1))
    return copied


if __name__ == "__main__":
    names = copy_starter_notebooks(Path.home(), bundled_notebooks())
    if names:
        print(f"AIFA Workbench: copied starter notebooks to ~/{TARGET_DIR}: {', '.join(names)}", file=sys.stderr)
