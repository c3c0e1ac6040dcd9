"""One installable distribution whose code imports as aifa_workbench.*, as a wheel and editable."""

import pathlib
import subprocess
import sys
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.packaging


def test_wheel_holds_the_product_package_the_notebook_facade_and_their_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("aifa_workbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("aifa_workbench-")}
    assert top_level == {"aifa_workbench", "workbench"}  # `import workbench` in users' notebooks
    for expected in [
        "aifa_workbench/spawners/slurm.py",
        "aifa_workbench/spawners/reach/reverse.py",
        "aifa_workbench/hub_config/courses/templates/courses.html",
        "aifa_workbench/hub_config/site_keys/templates/site_keys.html",
        "aifa_workbench/hub_config/templates/page.html",
        "aifa_workbench/hub_config/jupyterhub_config.py",
        "aifa_workbench/model/catalogue.py",
        "aifa_workbench/sites/control.py",
        "aifa_workbench/spawners/templates/lumi.sh.j2",
        "aifa_workbench/spawners/templates/spawn_form.html.j2",
        "aifa_workbench/model/sites/lumi.yaml",
        "aifa_workbench/extensions/__init__.py",
        "workbench/__init__.py",
        "aifa_workbench/notebooks/01-welcome.ipynb",
    ]:
        assert expected in names


def test_editable_install_imports_from_the_checkout(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)], check=True, capture_output=True
    )
    code = (
        "import aifa_workbench.sites.commands as r, importlib.util as u; print(r.__file__); "
        "print(u.find_spec('spawners') is None)"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    module_file, no_generic_name = out.split()
    assert module_file == str(ROOT / "sites" / "commands.py")
    assert no_generic_name == "True"
