"""AIFA Workbench, from your notebook.

import workbench
workbench.job_panel()                                  # your job: GPUs, time left, cost
cluster = workbench.dask_cluster("cpu-workers", workers=4)   # or dask_cluster(workers=4): the site's first preset
workbench.dask_presets()                               # the presets of this site
workbench.check_environment("torch")                   # says what this environment lacks

A cell whose first line is `%%needs torch` runs only where this environment has PyTorch.
"""

from aifa_workbench.extensions.dask_presets import dask_cluster, default_cluster
from aifa_workbench.extensions import needs
from aifa_workbench.extensions.job_context import NotebookJob, WorkbenchError, current_status
from aifa_workbench.extensions.panel import job_panel

needs.register()  # %%needs in this notebook


def job_status() -> dict:
    """This notebook's job as a dict (what the job panel shows)."""
    return current_status()


def dask_presets() -> dict[str, str]:
    """{preset name: what one worker gets} for the site this notebook runs on."""
    site = NotebookJob.from_environ().catalogue_site()
    return {name: preset.title for name, preset in site.dask_presets.items()}


def check_environment(*modules: str) -> None:
    """Say whether this environment has `modules` (what the notebook uses beyond the workbench)."""
    title = ""
    try:
        job = NotebookJob.from_environ()
        title = job.catalogue_site().environments[job.environment].title
    except Exception:  # outside a workbench job, or a catalogue without it: the sentence without its name
        pass
    print(needs.environment_sentence(modules, title))


__all__ = [
    "check_environment",
    "dask_cluster",
    "default_cluster",
    "dask_presets",
    "job_panel",
    "job_status",
    "WorkbenchError",
]
