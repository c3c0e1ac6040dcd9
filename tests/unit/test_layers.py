"""The layers import in one direction only: the model (catalogue, settings, request rules) imports
nothing of the hub, of site control or of the spawner; site control imports nothing of JupyterHub,
the hub's configuration or the spawner; the code that runs inside a job on a site imports nothing
of the hub's side. Read from the source (every import, lazy ones too), not from what got loaded."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB_SIDE = ("jupyterhub", "batchspawner", "oauthenticator", "aifa_workbench.hub_config",
            "aifa_workbench.spawners")
LAYERS = {
    "model": (*HUB_SIDE, "tornado", "traitlets", "asyncssh", "aifa_workbench.sites", "aifa_workbench.extensions"),
    "sites": (*HUB_SIDE, "aifa_workbench.extensions"),
    "extensions": HUB_SIDE,
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(layer):
    forbidden = LAYERS[layer]
    found = {f"{path.relative_to(ROOT)}: {name}"
             for path in sorted((ROOT / layer).rglob("*.py"))
             for name in imported_modules(path)
             if any(name == f or name.startswith(f + ".") for f in forbidden)}
    assert not found, f"{layer}/ imports what it must not: {sorted(found)}"
