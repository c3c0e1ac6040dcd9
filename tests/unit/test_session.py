"""A session as the hub's pages show it: its card while the job lives, and what ended, why and
what it cost (pure: model/session.py)."""

import copy

import pytest
import yaml

from aifa_workbench.model import session
from aifa_workbench.model.catalogue import CatalogueError, bundled_sites_dir, load_catalogue, site_from_dict
from aifa_workbench.model.request import JobRequest
from aifa_workbench.sites.slurm_cli import JobInfo

SITES = load_catalogue()
LUMI = SITES["lumi"]
SMALL_G = JobRequest("lumi", "small-g", 1, 7, 60, 2, "project_465000123", "lumi-stack")
NOW = 1_800_000_000.0


def test_a_queued_job_says_why_and_when_slurm_expects_it_in_epoch_seconds():
    info = JobInfo("41", "PENDING", "Resources", "", "2027-01-15T10:00:00")
    card = session.live_card(LUMI, SMALL_G, "41", info, NOW, ready=False, pending="spawn", started_at=None)
    assert card["state"] == "queued" and card["job_id"] == "41" and card["node"] == ""
    assert card["reason"] == "Resources"  # in words by the spawner (describe_reason)
    # read in LUMI's zone: Helsinki is UTC+2 in January
    assert card["expected_start"] == session.site_time_to_epoch("2027-01-15T08:00:00", "UTC")
    assert card["cost_so_far"] == "0.00 GPU-hours" and card["cost_planned"] == "1.00 GPU-hours"
    assert card["resources"] == "1 GCD (AMD MI250X (GCD, 64 GB)), 7 cores, 60 GB"


def test_a_running_job_shows_time_left_and_cost_so_far_from_slurms_time_left():
    info = JobInfo("41", "RUNNING", "None", "nid005001", "2027-01-15T10:00:00", time_left=5400)
    card = session.live_card(LUMI, SMALL_G, "41", info, NOW, ready=True, pending=None, started_at=None)
    assert card["state"] == "running" and card["node"] == "nid005001"
    assert card["seconds_left"] == 5400 and card["ends_at"] == int(NOW) + 5400
    assert card["cost_so_far"] == "0.25 GPU-hours"  # half an hour of one GCD: a quarter GPU-hour
    starting = session.live_card(LUMI, SMALL_G, "41", info, NOW, ready=False, pending="spawn", started_at=None)
    assert starting["state"] == "starting"
    assert (
        session.live_card(LUMI, SMALL_G, "", None, NOW, ready=False, pending="spawn", started_at=None)["state"]
        == "submitting"
    )
    assert (
        session.live_card(LUMI, SMALL_G, "41", info, NOW, ready=False, pending="stop", started_at=None)["state"]
        == "stopping"
    )


def test_whole_nodes_are_described_and_costed_as_nodes():
    jupiter = SITES["jupiter"]
    request = JobRequest("jupiter", "booster", 4, 72, 480, 2, "training2601", "jupiter-stack", whole_node=True)
    info = JobInfo("7", "RUNNING", "None", "jpbo-001-01", "", time_left=3600)
    card = session.live_card(jupiter, request, "7", info, NOW, ready=True, pending=None, started_at=None)
    assert card["resources"].startswith("1 whole node (4 GPUs")
    assert card["cost_so_far"] == "288.00 core-hours"  # an hour of a node: JSC counts its 288 cores


@pytest.mark.parametrize(
    "final_state, ran, ending",
    [
        ("TIMEOUT", 7200, "walltime"),
        ("COMPLETED", 7000, "walltime"),
        ("COMPLETED", 600, "shut down"),
        ("NODE_FAIL", 100, "node failure"),
        ("OUT_OF_MEMORY", 100, "out of memory"),
        ("CANCELLED by 1001", 100, "cancelled on the site"),
        ("GONE", 100, "gone"),
        ("", 0, "gone"),
    ],
)
def test_why_a_job_ended(final_state, ran, ending):
    assert session.ending_of(final_state, ran, 7200) == ending
    assert session.WHY[ending]


def test_what_ended_says_why_how_long_and_what_it_cost():
    summary = session.ended_summary(LUMI, SMALL_G, "41", "walltime", NOW - 7200, NOW)
    assert summary["why"].startswith("Its time ran out") and summary["ran"] == "2 h 00 min"
    assert summary["cost"] == "1.00 GPU-hours" and summary["account"] == "project_465000123"
    never_ran = session.ended_summary(LUMI, SMALL_G, "41", "stopped", None, NOW)
    assert never_ran["ending"] == "cancelled" and never_ran["cost"] == "0.00 GPU-hours"


def test_slurm_times_are_read_in_the_sites_zone():
    assert session.site_time_to_epoch("2027-07-01T12:00:00", "Europe/Helsinki") == session.site_time_to_epoch(
        "2027-07-01T09:00:00", "UTC"
    )
    assert session.site_time_to_epoch("Unknown", "UTC") is None
    assert session.duration_text(59) == "59 s" and session.duration_text(3660) == "1 h 01 min"


def test_a_site_zone_this_host_does_not_know_stops_the_hub_with_file_and_key():
    data = copy.deepcopy(yaml.safe_load((bundled_sites_dir() / "lumi.yaml").read_text()))
    data["timezone"] = "Europe/Atlantis"
    with pytest.raises(CatalogueError, match=r"lumi.yaml: timezone: 'Europe/Atlantis' is not a time zone"):
        site_from_dict(data, bundled_sites_dir() / "lumi.yaml")


def test_a_start_that_failed_or_timed_out_says_so_and_a_late_end_costs_no_more_than_the_walltime():
    assert session.ended_summary(LUMI, SMALL_G, "41", "start failed", None, NOW)["why"].startswith(
        "JupyterLab could not be started"
    )
    assert session.ended_summary(LUMI, SMALL_G, "41", "start timeout", None, NOW)["why"].startswith(
        "It did not start within the time the hub waits"
    )
    late = session.ended_summary(LUMI, SMALL_G, "41", "walltime", NOW - 30 * 3600, NOW)  # the hub was down
    assert late["ran"] == "2 h 00 min" and late["cost"] == "1.00 GPU-hours"


def test_time_left_counts_from_the_start_the_hub_knows_not_from_an_old_poll():
    info = JobInfo("41", "RUNNING", "None", "nid005001", "", time_left=7200)  # seen at its first second
    card = session.live_card(LUMI, SMALL_G, "41", info, NOW, ready=True, pending=None, started_at=NOW - 3600)
    assert card["seconds_left"] == 3600 and card["cost_so_far"] == "0.50 GPU-hours"


def test_a_job_waiting_for_its_reservation_is_expected_when_the_reservation_begins():
    waiting = JobInfo("41", "PENDING", "Reservation", "", "")  # Slurm: StartTime=Unknown
    assert session.expected_start(waiting, "UTC", NOW + 3600) == NOW + 3600
    assert session.expected_start(JobInfo("41", "PENDING", "Priority", "", ""), "UTC", NOW + 3600) is None
    card = session.live_card(
        LUMI, SMALL_G, "41", waiting, NOW, ready=False, pending="spawn", started_at=None, reservation_start=NOW + 3600
    )
    assert card["expected_start"] == NOW + 3600
