"""The README's module map says which package may import which; this holds it, read from the source
(every import, lazy ones, relative ones and `from aifa_workbench import x` too), not from what got
loaded. No module imports, however indirectly, itself: no cycle between packages or inside one.
Beside our own packages: the model imports no framework (the job on any site uses it), and
neither site control nor the code inside a job imports anything of the hub's side."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUB_SIDE = ("jupyterhub", "batchspawner", "oauthenticator")
FRAMEWORKS_NOT_IN = {
    "model": (*HUB_SIDE, "tornado", "traitlets", "asyncssh"),
    "sites": HUB_SIDE,
    "extensions": HUB_SIDE,
    "workbench": HUB_SIDE,
}


def module_map() -> dict[str, set[str]]:
    """{folder: the folders it may import}, from the README's table under "## Module map"."""
    text = (ROOT / "README.md").read_text()
    table = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    rules = {}
    for row in re.findall(r"^\| `([\w/]+)/` \| `[\w.]+` \| ([^|]*) \|", table, flags=re.M):
        folder, may = row
        rules[folder] = {m.strip(" `/") for m in may.split(",") if m.strip() not in ("", "nothing")}
    return rules


def package_of(folder: str) -> str:
    return "workbench" if folder == "extensions/workbench" else "aifa_workbench." + folder


def modules() -> dict[str, tuple[str, Path]]:
    """{dotted module name: (its folder in the map, its file)} of every module of ours."""
    found = {}
    for folder in module_map():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder)
            if folder == "extensions" and rel.parts[0] in ("workbench", "labextension"):
                continue
            parts = [*package_of(folder).split("."), *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = (folder, path)
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name `path` imports (for `from a import b`: a, and a.b in case b is a module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def our_imports(name: str, path: Path, ours: dict) -> set[str]:
    """The modules of ours that `name` imports (a package's own __init__ excepted: it imports nothing)."""
    return {m for m in imported_names(name, path) if m in ours and m != name and not name.startswith(m + ".")}


def test_the_map_names_every_package_and_only_what_exists():
    rules = module_map()
    installed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert set(installed.values()) == set(rules), "the README's module map and the installed packages differ"
    assert all(package_of(folder) == name for name, folder in installed.items())
    for folder, may in rules.items():
        assert may <= set(rules), f"{folder}: the map lets it import what is not a package: {may - set(rules)}"


def test_the_wheel_lists_every_package_of_ours():
    """setuptools installs the packages pyproject lists, no more: a subpackage left out is missing
    from the hub's venv (and from every site's runtime), though the checkout's tests import it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, (_, path) in modules().items() if path.name == "__init__.py"}
    assert found == listed


@pytest.mark.parametrize("folder", sorted(module_map()))
def test_a_package_imports_only_what_the_map_lets_it(folder):
    may, ours = module_map()[folder], modules()
    wrong = set()
    for name, (home, path) in ours.items():
        if home != folder:
            continue
        for target in our_imports(name, path, ours):
            if ours[target][0] not in (folder, *may):
                wrong.add(f"{path.relative_to(ROOT)}: {target}")
        for other in imported_names(name, path):
            if any(other == f or other.startswith(f + ".") for f in FRAMEWORKS_NOT_IN.get(folder, ())):
                wrong.add(f"{path.relative_to(ROOT)}: {other}")
    assert not wrong, f"{folder}/ imports what the module map does not let it: {sorted(wrong)}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_cycle():
    ours = modules()
    graph = {name: our_imports(name, path, ours) for name, (_, path) in ours.items()}
    assert not cycles(graph)


def test_the_rule_sees_relative_package_and_lazy_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from . import b\nfrom ..sites import ssh\nfrom aifa_workbench import hub_config\n"
        "def f():\n    from .c import d\n"
    )
    names = imported_names("aifa_workbench.spawners.mod", source)
    assert {
        "aifa_workbench.spawners.b",
        "aifa_workbench.sites.ssh",
        "aifa_workbench.hub_config",
        "aifa_workbench.spawners.c",
    } <= names
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
