"""CPython's ssl module leaves OpenSSL's per-thread error queue as it is before a TLS read
(python/cpython#148594): in the simulated LUMI image's Python 3.13, a notebook's Dask Client lost
its scheduler in the same process as soon as a worker with a nanny joined. The drill runs there,
in the image, from the runtime install-runtime made for it, with the workbench's guard and
without it (extensions/tls_error_queue.py)."""

import re
from pathlib import Path

import pytest

from aifa_workbench.model.catalogue import load_catalogue

from .sim_sites import SITE_USERS, SITES_ROOT, site_argv, site_is_up

pytestmark = pytest.mark.sites
DRILL = (Path(__file__).parent / "tls_queue_drill.py").read_text()


def drill_in_the_image(guard: bool, rounds: int = 3) -> tuple[int, str]:
    """(rounds that computed, what the drill printed), as alice on LUMI's login node."""
    import subprocess

    site = load_catalogue(SITES_ROOT / "catalogue", ["lumi"])["lumi"]
    image = site.environments["pytorch-container"].container
    runtime = f"{site.paths.runtime}/envs/pytorch-container/current"
    argv = [
        *site_argv("lumi", SITE_USERS["lumi"]["alice"]),
        "singularity", "exec", "--bind", site.paths.runtime, image,
        "env", f"AIFA_GUARD={int(guard)}", f"ROUNDS={rounds}", f"{runtime}/bin/python", "-",
    ]  # fmt: skip
    done = subprocess.run(argv, input=DRILL, capture_output=True, text=True, timeout=300)
    result = re.search(r"^RESULT (\d+)/(\d+)$", done.stdout, re.M)
    assert result, f"the drill did not finish (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return int(result.group(1)), done.stdout


def test_in_the_images_python_a_client_keeps_its_scheduler_with_the_guard_and_loses_it_without():
    if not site_is_up("lumi"):
        pytest.fail("the simulated site lumi is not up: run `make sites`")
    ok, said = drill_in_the_image(guard=True)
    assert "guard installed: True" in said and ok == 3, said
    ok, said = drill_in_the_image(guard=False)
    # if this starts to pass, CPython empties the queue itself and the guard may go
    assert ok < 3, f"without the guard every round computed: is python/cpython#148594 fixed? {said}"
