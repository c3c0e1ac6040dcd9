"""A hub service tied to the hub's process (hub_config.tied): it ends when the hub ends, kill -9
included, and does not start at all when the hub is already gone."""

import os
import subprocess
import sys
import time

from aifa_workbench.hub_config import idle_culler

CHILD = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "aifa_workbench.hub_config.tied", str(os.getpid()), "--",
                          "sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_tied_command_ends_when_its_parent_is_killed_outright():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    tied = int(parent.stdout.readline())
    time.sleep(0.5)
    assert alive(tied)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(tied):
        assert time.monotonic() < deadline, "the tied command outlived its parent"
        time.sleep(0.05)


def test_a_tied_command_whose_parent_is_not_the_one_named_does_not_start(tmp_path):
    marker = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-m", "aifa_workbench.hub_config.tied", "1", "--", "touch", str(marker)])
    assert done.returncode == 0 and not marker.exists()


def test_the_culler_is_tied_to_the_process_that_reads_the_config():
    argv = idle_culler.command({"timeout_seconds": 3600, "every_seconds": 60, "max_age_seconds": 0})
    assert argv[1:5] == ["-m", "aifa_workbench.hub_config.tied", str(os.getpid()), "--"]
    assert argv[5:8] == [sys.executable, "-m", "jupyterhub_idle_culler"]
