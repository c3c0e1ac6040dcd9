"""What a site's jobs need in their environment beyond its modules, as lines of the job's shell:
one rule for the notebook's own job (its batch template) and for its Dask workers' jobs (the
presets' prologue), which run the same software on the same nodes. Sources: ../SITES.md, second
audit (LUMI course notes and AI guide; JSC's GPU page; LUMI's own Jupyter app)."""

from __future__ import annotations

from aifa_workbench.model.site import Environment


def site_job_lines(family: str, environment: Environment, whole_node: bool, gpus: int) -> list[str]:
    """The shell lines for a job on a partition of `family`, running `environment`, holding
    `gpus` GPUs (on a whole node or not)."""
    lines: list[str] = []
    if family == "lumi":
        lines += [
            '# RCCL over the Slingshot interfaces: "always needs to be set on LUMI" (LUMI course notes).',
            "export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3",
            "# MIOpen's caches in a private temporary directory (on compute nodes /tmp is memory, counted",
            "# against the job); LUMI's AI guide names MIOPEN_USER_DB, EasyBuild's PyTorch MIOPEN_USER_DB_PATH.",
            'cache_dir=$(mktemp -d "${TMPDIR:-/tmp}/aifa-cache-XXXXXXXX")',
            'export MIOPEN_USER_DB_PATH="$cache_dir/miopen" MIOPEN_USER_DB="$cache_dir/miopen"'
            ' MIOPEN_CUSTOM_CACHE_DIR="$cache_dir/miopen"',
        ]
    if family == "jupiter" and whole_node and gpus:
        lines += [
            "# One task sees one GPU unless told otherwise (JSC's GPU page): the job's one task, and what",
            "# it starts, get every GPU of the node it holds alone.",
            f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(gpus))}",
        ]
    if environment.container:
        lines += [
            "# The runtime in the image sees the image's site packages, and with them the user's ~/.local,",
            "# where an old jupyter_server or distributed would shadow its own (LUMI's own Jupyter app sets",
            "# it too). Packages installed with pip --user are not seen in this environment.",
            "export PYTHONNOUSERSITE=1",
        ]
    return lines
