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
import threading
import uuid
import warnings

from dask.utils import format_bytes, parse_bytes

from aifa_workbench.model.files import write_atomically

NOTES_DIRECTORY = ".aifa-workbench/dask-clusters"
IN_ITS_NOTEBOOK = (
    "This cluster was made in a notebook with workbench.dask_cluster(...): change it there "
    "(cluster.scale(n), cluster.adapt(...), cluster.close())."
)
GONE = "This Dask cluster no longer exists (its notebook closed it, or its kernel ended)."


def notes_directory(home: str, job_id: str) -> str:
    """This job's notes (one folder per Slurm job: homes are shared by jobs on other nodes)."""
    path = os.path.join(home, NOTES_DIRECTORY, job_id or "no-job")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(os.path.join(home, NOTES_DIRECTORY), 0o700)
    os.chmod(path, 0o700)
    return path


def cluster_name(preset: str, partition: str) -> str:
    return f"{preset} on {partition}"


def process_start(pid: int) -> str | None:
    """The start time of `pid` (field 22 of /proc/<pid>/stat) if this user owns it, else None:
    a reused pid, or another user's process, is not the kernel that wrote a note."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def write_note(folder: str, note: dict) -> None:
    """The note of one notebook cluster, replaced atomically (0600)."""
    write_atomically(os.path.join(folder, f"{note['id']}.json"), json.dumps(note))


def remove_note(folder: str, note_id: str) -> None:
    try:
        os.unlink(os.path.join(folder, f"{note_id}.json"))
    except FileNotFoundError:
        pass


def read_notes(folder: str, log=None) -> list[dict]:
    """The notes of this job whose kernel still runs; the others are removed, bad ones skipped."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return []
    notes = []
    for name in names:
        try:
            with open(os.path.join(folder, name)) as f:
                note = json.load(f)
            model = note_model(note)
            started = note.get("started")
            alive = type(note.get("pid")) is int and started is not None and process_start(note["pid"]) == started
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            if log is not None:
                log.warning("AIFA Workbench: skipping the Dask cluster note %s: %s", name, e)
            continue
        if not alive:
            remove_note(folder, name[:-5])
            continue
        notes.append(model)
    return notes


def note_model(note: dict) -> dict:
    """A note as dask-labextension's cluster model (the workers asked for, and their size)."""
    workers = int(note.get("workers", 0))
    return {
        "id": str(note["id"]),
        "name": str(note.get("name", "")),
        "scheduler_address": str(note.get("scheduler_address", "")),
        "dashboard_link": str(note.get("dashboard_link", "")),
        "workers": workers,
        "cores": workers * int(note.get("cores_per_worker", 0)),
        "memory": format_bytes(workers * int(note.get("memory_per_worker", 0))),
    }


class NotebookClusterNote:
    """Kept by a notebook cluster: its note, updated when it is scaled, removed when it closes.
    Best effort: a home that cannot be written leaves the cluster out of the tab, nothing more."""

    def __init__(self, cluster, home: str, job_id: str, name: str, cores: int, memory: str):
        self.home, self.job_id, self.id = home, job_id, str(uuid.uuid4())  # ids as dask-labextension's routes take
        self.lock, self.removed = threading.Lock(), False
        self.note = {
            "id": self.id,
            "name": name,
            "pid": os.getpid(),
            "started": process_start(os.getpid()),
            "scheduler_address": cluster.scheduler_address,
            "dashboard_link": cluster.dashboard_link,
            "workers": 0,
            "cores_per_worker": cores,
            "memory_per_worker": parse_bytes(memory),
        }
        atexit.register(self.remove)
        self.update(cluster)

    def update(self, cluster) -> None:
        with self.lock:
            if self.removed:
                return
            self.note["workers"] = len(getattr(cluster, "worker_spec", {}) or {})
            try:
                write_note(notes_directory(self.home, self.job_id), self.note)
            except OSError as e:
                warnings.warn(f"JupyterLab's Dask tab will not list this cluster: {e}", stacklevel=2)

    def remove(self) -> None:
        with self.lock:
            self.removed = True
            try:
                remove_note(os.path.join(self.home, NOTES_DIRECTORY, self.job_id or "no-job"), self.id)
            except OSError:
                pass


def list_notebook_clusters(manager, folder: str, new_cluster_name, log=None) -> None:
    """Make the server's cluster manager (dask_labextension.manager.manager) list this job's
    notebook clusters too (notes in `folder`), refuse to change them (their notebook owns them),
    and name a cluster made by the *New* button `new_cluster_name()` (its preset and partition)."""
    if getattr(manager, "_aifa_wrapped", False):
        return
    manager._aifa_wrapped = True
    own_list, own_get = manager.list_clusters, manager.get_cluster
    own_start, own_close = manager.start_cluster, manager.close_cluster
    own_scale, own_adapt = manager.scale_cluster, manager.adapt_cluster
    made = [0]

    def notebook_model(cluster_id):
        return next((m for m in read_notes(folder, log) if m["id"] == cluster_id), None)

    def check_change(cluster_id):
        if notebook_model(cluster_id):
            raise RuntimeError(IN_ITS_NOTEBOOK)
        if own_get(cluster_id) is None:
            raise RuntimeError(GONE)

    async def start_cluster(cluster_id: str = "", configuration: dict | None = None):
        configuration = dict(configuration or {})
        if not configuration.get("name"):
            made[0] += 1
            configuration["name"] = f"{new_cluster_name()} #{made[0]}"
        return await own_start(cluster_id, configuration)

    async def close_cluster(cluster_id):
        check_change(cluster_id)
        return await own_close(cluster_id)

    async def scale_cluster(cluster_id, n):
        check_change(cluster_id)
        return await own_scale(cluster_id, n)

    def adapt_cluster(cluster_id, minimum, maximum):
        check_change(cluster_id)
        return own_adapt(cluster_id, minimum, maximum)

    manager.list_clusters = lambda: own_list() + read_notes(folder, log)
    manager.get_cluster = lambda cluster_id: own_get(cluster_id) or notebook_model(cluster_id)
    manager.start_cluster, manager.close_cluster = start_cluster, close_cluster
    manager.scale_cluster, manager.adapt_cluster = scale_cluster, adapt_cluster
