"""The hub's checks before it starts: a check whose command fails or hangs is a sentence, never a pass."""

import os
from types import SimpleNamespace

import pytest

from aifa_workbench.hub_config.preflight import PreflightError, check_local_partitions, check_slurm

SITES = {"local": SimpleNamespace(transport="local", partitions=("cpu",), path="/etc/sites/local.yaml")}


def slurm_bin(tmp_path, name: str, body: str) -> str:
    """A directory holding a Slurm command `name` that runs the shell `body`."""
    command = tmp_path / name
    command.write_text(f"#!/bin/sh\n{body}\n")
    os.chmod(command, 0o755)
    return str(tmp_path)


def test_partitions_sinfo_cannot_list_is_slurm_failing_not_a_missing_partition(tmp_path):
    bin_dir = slurm_bin(
        tmp_path, "sinfo", "echo 'slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1"
    )
    with pytest.raises(PreflightError) as failed:
        check_local_partitions(SITES, bin_dir)
    message = str(failed.value)
    assert "could not list its partitions" in message and "Unable to contact slurm controller" in message
    assert "make cluster-status" in message and "has no partition" not in message


def test_a_failing_sinfo_does_not_pass_the_partition_check(tmp_path):
    """Its exit code counts, whatever it printed."""
    bin_dir = slurm_bin(tmp_path, "sinfo", "echo cpu; exit 2")
    with pytest.raises(PreflightError, match="exit 2"):
        check_local_partitions(SITES, bin_dir)


def test_a_hanging_or_missing_sinfo_is_a_sentence_not_a_traceback(tmp_path):
    bin_dir = slurm_bin(tmp_path, "sinfo", "exec sleep 10")
    with pytest.raises(PreflightError, match=r"Slurm did not answer `sinfo .*` within 0.5 s: check that slurmctld"):
        check_local_partitions(SITES, bin_dir, timeout=0.5)
    with pytest.raises(PreflightError, match="Slurm is not installed here"):
        check_local_partitions(SITES, str(tmp_path / "nowhere"))


def test_scontrol_ping_failing_or_hanging_is_a_sentence(tmp_path):
    bin_dir = slurm_bin(tmp_path, "scontrol", "echo 'Slurmctld(primary) at vm is DOWN'; exit 1")
    with pytest.raises(PreflightError, match="Slurm is not answering .*is DOWN"):
        check_slurm(bin_dir)
    slurm_bin(tmp_path, "scontrol", "exec sleep 10")
    with pytest.raises(PreflightError, match="Slurm did not answer `scontrol ping` within 0.5 s"):
        check_slurm(bin_dir, timeout=0.5)


def test_partitions_slurm_lists_pass(tmp_path):
    check_local_partitions(SITES, slurm_bin(tmp_path, "sinfo", "echo cpu; echo gpu"))
