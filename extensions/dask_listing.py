"""JupyterLab's Dask tab (dask-labextension) and the workbench's clusters.

The tab lists what the Jupyter server's cluster manager holds: clusters made by its *New*
button, in the server. Clusters made in a notebook with `workbench.dask_cluster(...)` live in the
kernel; the kernel leaves a note of each in a 0600 file of a 0700 folder of the user's home (as
private as the cluster's TLS keys beside it), and the manager lists the notes whose kernel still
runs. *New* makes the site's first preset, named after the preset and its partition.
"""
from __future__ import annotations

import atexit
import json
import os
import tempfile
import uuid

from dask.utils import format_bytes, parse_bytes

NOTES_DIRECTORY = ".aifa-workbench/dask-clusters"
IN_ITS_NOTEBOOK = ("This cluster was made in a notebook with workbench.dask_cluster(...): change it there "
                   "(cluster.scale(n), cluster.adapt(...), cluster.close()).")


def notes_directory(home: str) -> str:
    path = os.path.join(home, NOTES_DIRECTORY)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def cluster_name(preset: str, partition: str) -> str:
    return f"{preset} on {partition}"


def write_note(home: str, note: dict) -> None:
    """The note of one notebook cluster, replaced atomically (0600)."""
    folder = notes_directory(home)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".note-")
    with os.fdopen(fd, "w") as f:
        json.dump(note, f)
    os.replace(temporary, os.path.join(folder, f"{note['id']}.json"))


def remove_note(home: str, note_id: str) -> None:
    try:
        os.unlink(os.path.join(home, NOTES_DIRECTORY, f"{note_id}.json"))
    except FileNotFoundError:
        pass


def _alive(pid) -> bool:
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_notes(home: str) -> list[dict]:
    """The notes whose kernel still runs; the others are removed."""
    folder = os.path.join(home, NOTES_DIRECTORY)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    notes = []
    for name in names:
        try:
            with open(os.path.join(folder, name)) as f:
                note = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(note, dict) or not _alive(note.get("pid")):
            remove_note(home, name[:-5])
            continue
        notes.append(note)
    return notes


def note_model(note: dict) -> dict:
    """A note as dask-labextension's cluster model (the workers asked for, and their size)."""
    workers = int(note.get("workers", 0))
    return {"id": str(note["id"]), "name": str(note.get("name", "")),
            "scheduler_address": str(note.get("scheduler_address", "")),
            "dashboard_link": str(note.get("dashboard_link", "")), "workers": workers,
            "cores": workers * int(note.get("cores_per_worker", 0)),
            "memory": format_bytes(workers * int(note.get("memory_per_worker", 0)))}


class NotebookClusterNote:
    """Kept by a notebook cluster: its note, updated when it is scaled, removed when it closes."""

    def __init__(self, cluster, home: str, name: str, cores: int, memory: str):
        self.home, self.id = home, str(uuid.uuid4())     # the shape of id dask-labextension's routes take
        self.note = {"id": self.id, "name": name, "pid": os.getpid(),
                     "scheduler_address": cluster.scheduler_address, "dashboard_link": cluster.dashboard_link,
                     "workers": 0, "cores_per_worker": cores, "memory_per_worker": parse_bytes(memory)}
        atexit.register(self.remove)
        self.update(cluster)

    def update(self, cluster) -> None:
        self.note["workers"] = len(getattr(cluster, "worker_spec", {}) or {})
        write_note(self.home, self.note)

    def remove(self) -> None:
        remove_note(self.home, self.id)


def list_notebook_clusters(manager, home: str) -> None:
    """Make the server's cluster manager (dask_labextension.manager.manager) list the notebook
    clusters too, refuse to change them (their notebook owns them), and name a cluster made by
    the *New* button after its preset and partition."""
    own_list, own_get = manager.list_clusters, manager.get_cluster
    own_start, own_close = manager.start_cluster, manager.close_cluster
    own_scale, own_adapt = manager.scale_cluster, manager.adapt_cluster

    def notebook_model(cluster_id):
        return next((note_model(n) for n in read_notes(home) if n.get("id") == cluster_id), None)

    def refuse_notebook_cluster(cluster_id):
        if notebook_model(cluster_id):
            raise RuntimeError(IN_ITS_NOTEBOOK)

    async def start_cluster(cluster_id: str = "", configuration: dict | None = None):
        configuration = dict(configuration or {})
        if not configuration.get("name"):
            from .dask_presets import default_cluster_name
            configuration["name"] = f"{default_cluster_name()} #{manager._n_clusters + 1}"
        return await own_start(cluster_id, configuration)

    async def close_cluster(cluster_id):
        refuse_notebook_cluster(cluster_id)
        return await own_close(cluster_id)

    async def scale_cluster(cluster_id, n):
        refuse_notebook_cluster(cluster_id)
        return await own_scale(cluster_id, n)

    def adapt_cluster(cluster_id, minimum, maximum):
        refuse_notebook_cluster(cluster_id)
        return own_adapt(cluster_id, minimum, maximum)

    manager.list_clusters = lambda: own_list() + [note_model(n) for n in read_notes(home)]
    manager.get_cluster = lambda cluster_id: own_get(cluster_id) or notebook_model(cluster_id)
    manager.start_cluster, manager.close_cluster = start_cluster, close_cluster
    manager.scale_cluster, manager.adapt_cluster = scale_cluster, adapt_cluster
