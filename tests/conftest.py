"""Shared test set-up. Markers: unit (no Slurm), slurm (local cluster), browser, ansible."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items):
    for item in items:
        path = pathlib.Path(str(item.fspath))
        if "unit" in path.parts and not any(item.iter_markers()):
            item.add_marker(pytest.mark.unit)
