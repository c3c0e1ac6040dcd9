"""Bad input at the hub's level: a broken settings file, Slurm down at start, a spawn while Slurm is down."""

import subprocess
import time
from pathlib import Path

import pytest

from . import hubs
from .conftest import slurm_up

pytestmark = pytest.mark.slurm

SLURMCTLD_PIDFILE = Path("/var/lib/aifa-slurm/run/slurmctld.pid")


def start_expecting_exit(hub: hubs.Hub, timeout: float = 60) -> str:
    proc = hubs.start_hub_process(hub)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        hubs.stop_hub(hub)
        raise AssertionError(f"the hub kept running:\n{hub.log_tail()}") from None
    assert proc.returncode != 0
    return hub.log_path.read_text()


def cannot_start_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("AIFA Workbench cannot start:")]


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"hub_port": "eighty"}, "workbench.yaml: hub_port: 'eighty' is not of type 'integer'."),
        (
            {"sitez": ["local"]},
            "workbench.yaml: (top level): Additional properties are not allowed ('sitez' was unexpected).",
        ),
        ({"default_site": "lumi"}, "workbench.yaml: default_site: 'lumi' is not one of the enabled sites (local)."),
        ({"sites": ["local", "mars"]}, "enabled site(s) mars have no file there."),
    ],
)
def test_broken_settings_stop_the_hub_with_one_sentence(cluster, override, expected):
    hub = hubs.write_hub_files("broken", settings_overrides=override)
    log = start_expecting_exit(hub)
    lines = cannot_start_lines(log)
    assert len(lines) == 1, log
    assert expected in lines[0]
    assert "Traceback" not in log


def custom_catalogue(hub: hubs.Hub, edit) -> Path:
    """A copy of the bundled catalogue in the hub's directory, with `edit` applied to local.yaml."""
    import shutil

    import yaml

    from aifa_workbench.model.catalogue import bundled_sites_dir

    directory = hub.home / "sites"
    shutil.copytree(bundled_sites_dir(), directory)
    data = yaml.safe_load((directory / "local.yaml").read_text())
    edit(data)
    (directory / "local.yaml").write_text(yaml.safe_dump(data))
    settings_path = hub.home / "workbench.yaml"
    settings = yaml.safe_load(settings_path.read_text())
    settings["catalogue_dir"] = str(directory)
    settings_path.write_text(yaml.safe_dump(settings))
    return directory


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda d: d["partitions"]["gpu"].update(gpus_per_node="four"),
            "local.yaml: partitions.gpu.gpus_per_node: 'four' is not of type 'integer'.",
        ),
        (
            lambda d: d["partitions"].update(h100=d["partitions"]["gpu"]),
            "local.yaml: partitions: Slurm here has no partition h100",
        ),
    ],
    ids=["wrong-type", "unknown-partition"],
)
def test_a_bad_catalogue_stops_the_hub_with_file_key_and_reason(cluster, edit, expected):
    hub = hubs.write_hub_files("badcatalogue")
    custom_catalogue(hub, edit)
    lines = cannot_start_lines(start_expecting_exit(hub))
    assert len(lines) == 1 and expected in lines[0], lines


def test_unreadable_secret_names_the_file(cluster):
    hub = hubs.write_hub_files("nosecret")
    (hub.home / "secrets" / "passwords" / "carol").unlink()
    lines = cannot_start_lines(start_expecting_exit(hub))
    assert len(lines) == 1 and "secrets/passwords/carol" in lines[0] and "No such file" in lines[0]


@pytest.fixture
def slurmctld_stopped(cluster):
    """Stop the Slurm controller for the test, and start it again afterwards."""

    def stop():
        pid = int(SLURMCTLD_PIDFILE.read_text())
        subprocess.run(["kill", str(pid)], check=True)
        for _ in range(100):
            if not slurm_up():
                return
            time.sleep(0.1)
        raise AssertionError("slurmctld did not stop")

    yield stop
    if not slurm_up():
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
        for _ in range(100):
            if slurm_up():
                break
            time.sleep(0.2)
    assert slurm_up()


def test_hub_refuses_to_start_while_slurm_is_down(slurmctld_stopped):
    slurmctld_stopped()
    hub = hubs.write_hub_files("noslurm")
    lines = cannot_start_lines(start_expecting_exit(hub))
    assert len(lines) == 1, lines
    assert "Slurm is not answering" in lines[0] and "make cluster" in lines[0]


def test_spawn_while_slurm_is_down_fails_with_a_readable_message(start_hub, slurmctld_stopped):
    hub = start_hub("downspawn")
    slurmctld_stopped()
    token = hub.user_token("bob")
    started = time.monotonic()
    r = hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
    # 202: still trying when the hub's slow-spawn timeout answered; 500: failed before, with the sentence
    assert r.status_code == 202 or (r.status_code == 500 and "is not answering" in r.json()["message"]), r.text
    events = hubs.progress_events(hub, "bob", token, timeout=60)
    assert events and events[-1].get("failed"), events
    assert (
        "The Slurm scheduler of Local cluster" in events[-1]["message"] and "is not answering" in events[-1]["message"]
    )
    assert time.monotonic() - started < 45
    assert not hubs.server_model(hub, "bob")
