"""JupyterLab's Dask tab and the workbench's clusters (extensions/dask_listing.py): a notebook's
cluster leaves a private note, in a folder of its job, that the server's cluster manager lists
while its kernel runs; the tab cannot change it; its New button names the preset and partition."""

import asyncio
import json
import os
import re
import stat
import subprocess
from types import SimpleNamespace

import pytest

from aifa_workbench.extensions import dask_listing as dl


def fake_cluster(workers=0):
    return SimpleNamespace(
        scheduler_address="tls://10.0.0.7:40001",
        dashboard_link="/user/a/proxy/1/s3cret/status",
        worker_spec={f"w{i}": {} for i in range(workers)},
    )


def folder_of(home, job="77"):
    return os.path.join(home, dl.NOTES_DIRECTORY, job)


def test_a_notebook_cluster_is_listed_privately_while_its_kernel_runs_and_follows_its_scale(tmp_path):
    note = dl.NotebookClusterNote(fake_cluster(), str(tmp_path), "77", "gpu-workers on small-g", 7, "60GB")
    folder = folder_of(str(tmp_path))
    assert re.fullmatch(r"\w+-\w+-\w+-\w+-\w+", note.id)  # dask-labextension's routes take no other ids
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(folder, f"{note.id}.json")).st_mode) == 0o600
    [model] = dl.read_notes(folder)
    assert model["name"] == "gpu-workers on small-g" and model["workers"] == 0 and model["id"] == note.id
    note.update(fake_cluster(workers=3))
    [model] = dl.read_notes(folder)
    assert (model["workers"], model["cores"], model["memory"]) == (3, 21, "167.64 GiB")
    assert dl.read_notes(folder_of(str(tmp_path), "78")) == []  # another job's tab lists none of it
    note.remove()
    note.update(fake_cluster(workers=1))  # a late scale (closing) writes nothing
    assert dl.read_notes(folder) == []


def test_notes_of_ended_kernels_reused_pids_or_bad_files_are_not_listed(tmp_path, monkeypatch):
    folder = dl.notes_directory(str(tmp_path), "77")
    ended = subprocess.Popen(["true"])
    ended.wait()
    dl.write_note(folder, {"id": "a-b-c-d-1", "pid": ended.pid, "started": "1", "name": "x"})
    dl.write_note(folder, {"id": "a-b-c-d-2", "pid": os.getpid(), "started": "0", "name": "reused pid"})
    dl.write_note(folder, {"id": "a-b-c-d-3", "pid": 1, "started": dl.process_start(1), "name": "not mine"})
    dl.write_note(folder, {"id": "a-b-c-d-4", "pid": "1; rm -rf", "name": "x"})
    with open(os.path.join(folder, "a-b-c-d-5.json"), "w") as f:
        json.dump({"pid": os.getpid(), "started": dl.process_start(os.getpid()), "workers": "2.5"}, f)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 4242)  # pid 1 is then someone else's
    assert dl.read_notes(folder) == []
    assert dl.read_notes(str(tmp_path / "not-a-folder.json")) == []


def make_manager():
    async def made():  # importing the module makes its own manager, which needs a running loop
        from dask_labextension.manager import DaskClusterManager

        return DaskClusterManager()

    return asyncio.run(made())


def test_the_tab_lists_both_refuses_to_change_a_notebooks_and_names_what_new_makes(tmp_path, monkeypatch):
    manager = make_manager()
    folder = folder_of(str(tmp_path))
    dl.list_notebook_clusters(manager, folder, lambda: "unused")
    dl.list_notebook_clusters(manager, folder, lambda: "unused")  # wrapped once, however often asked
    note = dl.NotebookClusterNote(fake_cluster(2), str(tmp_path), "77", "cpu-workers on cpu", 1, "2GB")
    assert [m["name"] for m in manager.list_clusters()] == ["cpu-workers on cpu"]
    assert manager.get_cluster(note.id)["workers"] == 2 and manager.get_cluster("") is None
    for change in (manager.scale_cluster(note.id, 5), manager.close_cluster(note.id)):
        with pytest.raises(RuntimeError, match="made in a notebook"):
            asyncio.run(change)
    with pytest.raises(RuntimeError, match="cluster.scale"):
        manager.adapt_cluster(note.id, 1, 4)
    with pytest.raises(RuntimeError, match="no longer exists"):
        asyncio.run(manager.scale_cluster("0d8e6f0a-1111-4a4a-9b9b-000000000009", 3))
    note.remove()

    started = []

    async def own_start(cluster_id, configuration):
        started.append(configuration["name"])
        return {"name": configuration["name"]}

    fresh = make_manager()
    fresh.start_cluster = own_start
    dl.list_notebook_clusters(fresh, folder, lambda: "gpu-workers on small-g")

    async def two_clicks():
        return await asyncio.gather(fresh.start_cluster(""), fresh.start_cluster(""))

    asyncio.run(two_clicks())
    assert sorted(started) == ["gpu-workers on small-g #1", "gpu-workers on small-g #2"]
