"""Every starter notebook runs top to bottom in every environment a site offers: what it uses
beyond the job runtime is named at its top (workbench.check_environment), and each cell that
imports it starts with %%needs, which skips it with a sentence where the environment lacks it."""

import json
import re
from pathlib import Path

import pytest

from aifa_workbench.extensions import needs

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_what_an_environment_lacks_is_one_sentence_that_says_what_to_do():
    assert needs.lacking(["json", "no_such_module_aifa"]) == ["no_such_module_aifa"]
    assert needs.environment_sentence(["json"], "LUMI software stack") == (
        "This environment (LUMI software stack) has json: every cell of this notebook runs."
    )
    said = needs.environment_sentence(["no_such_module_aifa"], "LUMI software stack")
    assert said.startswith("This environment (LUMI software stack) has no no_such_module_aifa: the cells")
    assert "start your next session with an environment that has it" in said
    assert needs.skipped_sentence(["torch", "sklearn"]) == (
        "Skipped: this cell needs PyTorch and scikit-learn, which this environment lacks."
    )


def test_the_cell_magic_runs_a_cell_only_where_its_modules_are(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    needs.register()
    shell.run_cell("%%needs no_such_module_aifa\nran = True\n")
    assert "Skipped: this cell needs no_such_module_aifa" in capsys.readouterr().out
    assert "ran" not in shell.user_ns
    shell.run_cell("%%needs json\nimport json\nran = json.dumps(1)\n")
    assert shell.user_ns["ran"] == "1"
    failed = shell.run_cell("%%needs json\nraise ValueError('a real error')\n")
    assert isinstance(failed.error_in_exec, ValueError)  # the notebook stops there, as without the magic
    shell.run_cell("%%needs no_such_package_aifa.sub\nran = 2\n")  # a dotted name whose parent is missing
    assert "Skipped" in capsys.readouterr().out and shell.user_ns["ran"] == "1"


def test_an_environment_without_slurms_commands_lacks_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFA_WORKBENCH_SLURM_BIN", str(tmp_path))  # a container's image: no sbatch
    assert needs.lacking(["slurm", "json"]) == ["slurm"]
    assert needs.environment_sentence(["slurm"], "LUMI AI container").startswith(
        "This environment (LUMI AI container) has no Slurm (sbatch): the cells that need it say so"
    )
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    assert needs.lacking(["slurm"]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_starter_notebook_names_what_it_uses_beyond_the_runtime_and_guards_each_cell_using_it(path):
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    used = set()
    for source in cells:
        imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", source, re.M)) & set(needs.NAMES)
        if re.search(r"\bdask_cluster\(|\b(client|cluster)\.", source):  # Dask workers: Slurm jobs
            imported.add("slurm")
        guarded = set(source.splitlines()[0].split()[1:]) if source.startswith("%%needs") else set()
        assert imported <= guarded, f"{path.name}: a cell imports {sorted(imported - guarded)} unguarded"
        used |= imported
    if used:
        checks = [s for s in cells if "workbench.check_environment(" in s]
        assert checks and cells.index(checks[0]) == 0, f"{path.name}: the first cell must say what it uses"
        for module in used:
            assert f'"{module}"' in checks[0], f"{path.name}: check_environment does not name {module}"
