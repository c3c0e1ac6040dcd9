"""JupyterLab's Dask tab and the workbench's clusters (extensions/dask_listing.py): a notebook's
cluster leaves a private note the server's cluster manager lists while its kernel runs; the tab
cannot change it; its New button names the preset and partition."""
import asyncio
import os
import re
import stat
import subprocess
from types import SimpleNamespace

import pytest

from aifa_workbench.extensions import dask_listing as dl


def fake_cluster(workers=0):
    return SimpleNamespace(scheduler_address="tls://10.0.0.7:40001", dashboard_link="/user/a/proxy/1/s3cret/status",
                           worker_spec={f"w{i}": {} for i in range(workers)})


def test_a_notebook_cluster_is_listed_privately_while_its_kernel_runs_and_follows_its_scale(tmp_path):
    note = dl.NotebookClusterNote(fake_cluster(), str(tmp_path), "gpu-workers on small-g", 7, "60GB")
    folder = tmp_path / dl.NOTES_DIRECTORY
    assert re.fullmatch(r"\w+-\w+-\w+-\w+-\w+", note.id)     # dask-labextension's routes take no other ids
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{note.id}.json").stat().st_mode) == 0o600
    [model] = [dl.note_model(n) for n in dl.read_notes(str(tmp_path))]
    assert model["name"] == "gpu-workers on small-g" and model["workers"] == 0 and model["id"] == note.id
    note.update(fake_cluster(workers=3))
    [model] = [dl.note_model(n) for n in dl.read_notes(str(tmp_path))]
    assert (model["workers"], model["cores"], model["memory"]) == (3, 21, "167.64 GiB")
    note.remove()
    assert dl.read_notes(str(tmp_path)) == []


def test_the_note_of_a_kernel_that_ended_is_dropped(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    dl.write_note(str(tmp_path), {"id": "0d8e6f0a-1111-4a4a-9b9b-000000000001", "pid": ended.pid, "name": "x"})
    dl.write_note(str(tmp_path), {"id": "0d8e6f0a-1111-4a4a-9b9b-000000000002", "pid": "1; rm -rf", "name": "x"})
    assert dl.read_notes(str(tmp_path)) == []
    assert not os.listdir(tmp_path / dl.NOTES_DIRECTORY)


class FakeManager:
    """dask_labextension.manager.DaskClusterManager's surface, one server cluster held."""

    def __init__(self):
        self._n_clusters, self.started = 1, []

    def list_clusters(self):
        return [{"id": "server-1", "name": "cpu-workers on cpu #1"}]

    def get_cluster(self, cluster_id):
        return self.list_clusters()[0] if cluster_id == "server-1" else None

    async def start_cluster(self, cluster_id="", configuration={}):
        self.started.append(configuration)
        return {"id": "server-2", "name": configuration.get("name")}

    async def close_cluster(self, cluster_id):
        return {"id": cluster_id}

    async def scale_cluster(self, cluster_id, n):
        return {"id": cluster_id, "workers": n}

    def adapt_cluster(self, cluster_id, minimum, maximum):
        return {"id": cluster_id}


def test_the_tab_lists_both_refuses_to_change_a_notebooks_and_names_what_new_makes(tmp_path, monkeypatch):
    manager = FakeManager()
    dl.list_notebook_clusters(manager, str(tmp_path))
    note = dl.NotebookClusterNote(fake_cluster(2), str(tmp_path), "cpu-workers on cpu", 1, "2GB")
    assert [m["name"] for m in manager.list_clusters()] == ["cpu-workers on cpu #1", "cpu-workers on cpu"]
    assert manager.get_cluster(note.id)["workers"] == 2
    for change in (manager.scale_cluster(note.id, 5), manager.close_cluster(note.id)):
        with pytest.raises(RuntimeError, match="made in a notebook"):
            asyncio.run(change)
    with pytest.raises(RuntimeError, match="cluster.scale"):
        manager.adapt_cluster(note.id, 1, 4)
    assert asyncio.run(manager.scale_cluster("server-1", 5)) == {"id": "server-1", "workers": 5}
    from aifa_workbench.extensions import dask_presets
    monkeypatch.setattr(dask_presets, "default_cluster_name", lambda: "gpu-workers on small-g")
    assert asyncio.run(manager.start_cluster())["name"] == "gpu-workers on small-g #2"
    note.remove()
