"""What a starter notebook uses beyond the job runtime (PyTorch, scikit-learn, matplotlib, pandas:
an environment's modules or image bring them, or not), said at its top, and the `%%needs` cell
magic, which runs a cell only where the environment has what it names: every starter notebook
runs top to bottom in every environment a site offers, and says what that one lacks instead of
stopping at an ImportError."""

from __future__ import annotations

import importlib.util
import os

# import name -> what a person calls it; "slurm" is no module: Slurm's sbatch, with which Dask
# presets submit their workers (a container's image holds none)
NAMES = {
    "torch": "PyTorch",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "pandas": "pandas",
    "slurm": "Slurm (sbatch)",
}


def has_slurm(environ=None) -> bool:
    """Whether this job can submit jobs: sbatch where the job script says the site keeps it."""
    environ = os.environ if environ is None else environ
    return os.access(os.path.join(environ.get("AIFA_WORKBENCH_SLURM_BIN", "/usr/bin"), "sbatch"), os.X_OK)


def lacking(modules) -> list[str]:
    """The modules of `modules` this Python cannot import (looked up; a dotted name's parents are
    imported to look it up)."""

    def missing(module: str) -> bool:
        if module == "slurm":
            return not has_slurm()
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a parent package missing; an odd name
            return True

    return [module for module in modules if missing(module)]


def _names(modules) -> str:
    names = [NAMES.get(module, module) for module in modules]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def environment_sentence(modules, environment_title: str = "") -> str:
    """What this environment lacks of `modules`, and what to do about it, in one sentence."""
    missing = lacking(modules)
    where = f"This environment ({environment_title})" if environment_title else "This environment"
    if not missing:
        return f"{where} has {_names(modules)}: every cell of this notebook runs."
    return (
        f"{where} has no {_names(missing)}: the cells that need {'it' if len(missing) == 1 else 'them'} "
        "say so and are skipped, and the others run. To run them too, start your next session with an "
        "environment that has it (the start form lists this site's environments)."
    )


def skipped_sentence(missing) -> str:
    return f"Skipped: this cell needs {_names(missing)}, which this environment lacks."


def needs(line: str, cell: str) -> None:
    """%%needs torch sklearn — run the cell only if every named module can be imported."""
    from IPython import get_ipython

    missing = lacking(line.split())
    if missing:
        print(skipped_sentence(missing))
        return
    get_ipython().run_cell(cell, store_history=False).raise_error()  # a real error stops "Run All"


def register() -> None:
    """Make %%needs available in the running IPython (a no-op outside one)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.register_magic_function(needs, magic_kind="cell", magic_name="needs")
