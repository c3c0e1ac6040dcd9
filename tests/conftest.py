"""Shared test set-up. Markers: unit (no Slurm), slurm (local cluster), browser, ansible."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items):
    for item in items:
        path = pathlib.Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)

VENV_MARKER = pathlib.Path("/opt/aifa-workbench/venv/.aifa-workbench-source")


def pytest_sessionstart(session):
    """The tests import the copy installed in the venv (jobs run from there too): make sure it is
    this checkout's code, not an older one."""
    import runpy

    digest = runpy.run_path(str(ROOT / "ansible/roles/workbench_hub/files/source_digest.py"))["source_digest"](ROOT)
    installed = VENV_MARKER.read_text().strip() if VENV_MARKER.exists() else "(none)"
    if installed != digest:
        raise pytest.UsageError(
            "The venv at /opt/aifa-workbench/venv holds another copy of the code than this checkout: "
            "run `make install` (or `make test`, which does it) first.")
