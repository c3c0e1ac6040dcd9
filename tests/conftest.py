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


def pytest_collection_finish(session):
    """Unit tests import whatever `aifa_workbench` the interpreter finds: `make dev`'s editable
    install is this checkout as it is. Every other test starts hubs and jobs from the venv at
    /opt/aifa-workbench (jobs on the sites run from there too): make sure it holds this checkout's
    code, not an older one."""
    if all(item.get_closest_marker("unit") for item in session.items) and imports_this_checkout():
        return
    import runpy

    digest = runpy.run_path(str(ROOT / "ansible/roles/workbench_hub/files/source_digest.py"))["source_digest"](ROOT)
    installed = VENV_MARKER.read_text().strip() if VENV_MARKER.exists() else "(none)"
    if installed != digest:
        raise pytest.UsageError(
            "The venv at /opt/aifa-workbench/venv holds another copy of the code than this checkout: "
            "run `make install` (or `make test`, which does it) first; `make test-unit` needs neither."
        )


def imports_this_checkout() -> bool:
    import aifa_workbench.model

    return pathlib.Path(aifa_workbench.model.__file__).resolve().parent == ROOT / "model"
