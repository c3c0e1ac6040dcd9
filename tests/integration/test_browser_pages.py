"""The pages around the form, as a newcomer sees them in chromium: the spawn page says what this
is and whom to ask and offers cards; the home page shows a card per session (where, what, time
left, cost so far, Open / Stop) and what ended, why and what it cost; the waiting page sums up
the request, shows Slurm's expected start in the reader's zone and cancels the request; the
admins' page shows everyone's. With AIFA_SCREENSHOTS=<dir> (make screenshots), each test also
writes the README's screenshots there."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .hubs import server_model
from .jupyter_client_helpers import Kernel
from .slurm_helpers import job_fields, wait_for_job_end
from .test_browser_login import browser, hub_under_hostile_base_url, logged_in_page  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def snap(page, name: str) -> None:
    """The README's screenshot `name`, when asked for (make screenshots)."""
    directory = os.environ.get("AIFA_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


def snap_element(locator, name: str) -> None:
    directory = os.environ.get("AIFA_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(Path(directory) / f"{name}.png"))


def wait_until_stopped(hub, username, timeout=60):
    deadline = time.monotonic() + timeout
    while (model := server_model(hub, username)) and (model.get("pending") or model.get("ready")):
        assert time.monotonic() < deadline, model
        time.sleep(0.3)


def test_the_spawn_page_says_what_this_is_whom_to_ask_and_offers_cards(hub_under_hostile_base_url, browser):
    page = logged_in_page(browser, hub_under_hostile_base_url, "bob")
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    expect(page.locator("#aifa-brand")).to_contain_text("AIFA Workbench")
    expect(page.locator("#jupyterhub-logo")).to_have_count(0)
    expect(page.locator("#aifa-intro h1")).to_have_text("Start a session")
    expect(page.locator("#aifa-intro")).to_contain_text("EuroHPC AI supercomputer")
    expect(page.locator("#aifa-intro")).to_contain_text("Ask your trainer, or the BE-AIFA support desk")
    # a card per partition: what it is for, the hardware, what the job gets and its cost, who pays
    card = page.locator("label.aifa-card", has=page.locator("input[value='local-small-g-1gpu-2h']"))
    expect(card.locator("input")).to_be_checked()  # opens on one GPU, not on the CPU profile
    expect(card).to_contain_text("Try a model on one GPU")
    expect(card).to_contain_text("stand-in GCD, 8 GPUs per node")
    expect(card).to_contain_text("1 GPU, 7 cores, 60 GB, 2 h · ≈ 1.0 GPU-hours")
    expect(card.locator(".aifa-card-payer")).to_have_text("Charged to proj_research")
    snap(page, "spawn-page")
    whole_node = page.locator("label.aifa-card", has=page.locator("input[value='local-standard-g-1node-2h']"))
    expect(whole_node).to_contain_text("a whole node, 56 cores, 480 GB, 2 h · ≈ 8.0 GPU-hours")
    whole_node.click()
    expect(page.locator("#aifa-cost-hint")).to_contain_text("one node-hour is 4 GPU-hours")


def test_a_session_card_shows_the_job_and_after_stop_what_ended_and_what_it_cost(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    page.click("button[type=submit]")  # the card it opened on: one GPU on small-g
    page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    job_id = server_model(hub, "bob")["state"]["job_id"]
    node = job_fields(job_id)["NodeList"]
    # inside JupyterLab, the status bar says how long the session has left and what it cost so far
    status = page.locator("#aifa-workbench-session")
    expect(status).to_have_text(
        re.compile(r"^Session: (1 h 5[0-9]|2 h 00) min left · 0\.[0-9]{2} GPU-hours so far$"), timeout=60_000
    )
    snap_element(status.locator("xpath=ancestor::*[contains(@class, 'jp-StatusBar-Widget')][1]"), "lab-status-bar")
    # a cluster made in a notebook is in JupyterLab's Dask tab, named after its preset and partition
    with Kernel(hub.server_url("bob"), hub.user_token("bob"), timeout=120) as kernel:
        kernel.run("import workbench\ncluster = workbench.dask_cluster('cpu-workers', workers=0)")
        tab = page.locator("li[data-id='dask-dashboard-launcher']")
        expect(tab).to_be_visible()
        if tab.get_attribute("aria-selected") != "true":  # the user's saved layout may have it open already
            tab.click()
        expect(page.locator(".dask-DaskClusterManager")).to_be_visible()
        item = page.locator(".dask-ClusterListingItem", has=page.get_by_text("cpu-workers on cpu", exact=True))
        expect(item).to_be_visible(timeout=30_000)
        snap_element(page.locator(".dask-DaskClusterManager"), "dask-tab")
        item.locator(".dask-ClusterListingItem-title").click()  # its dashboard, through the hub
        expect(page.locator(".dask-URLInput-wrapper input")).to_have_value(re.compile(r"/proxy/[0-9]+/[^/]+/status$"))
        kernel.run("cluster.close()")
        expect(item).to_have_count(0, timeout=30_000)
    page.goto(hub.url + "hub/home")
    card = page.locator(".aifa-session")
    expect(card).to_have_attribute("data-state", "running")
    expect(card.locator(".aifa-state")).to_have_text("Running")
    expect(card).to_contain_text("small-g — Like LUMI small-g (per GCD)")
    expect(card.locator(".aifa-job")).to_have_text(job_id)
    expect(card.locator(".aifa-node")).to_have_text(node)
    expect(card).to_contain_text("1 GPU (stand-in GCD), 7 cores, 60 GB, 2 h")
    expect(card.locator(".aifa-left")).to_have_text(re.compile(r"^1 h 5[0-9] min$|^2 h 00 min$"))
    expect(card.locator(".aifa-cost")).to_have_text(re.compile(r"^0\.0[0-9] GPU-hours \(at most ≈ 1\.00 GPU-hours\)$"))
    expect(card.locator("a.aifa-open")).to_have_attribute("href", re.compile(r"/user/bob/$"))
    snap(page, "session-card")
    # the admins' page shows the same card, with whose it is
    admin = logged_in_page(browser, hub, "alice")
    admin.goto(hub.url + "hub/sessions")
    theirs = admin.locator(".aifa-session", has_text="bob · ")
    expect(theirs.locator(".aifa-job")).to_have_text(job_id)
    expect(theirs.locator(".aifa-node")).to_have_text(node)
    admin.context.close()
    # Stop says what is lost first; then the card says what ended, why and what it cost
    card.locator(".aifa-stop").click()
    expect(card.locator(".aifa-confirm")).to_contain_text("Save your notebooks first")
    card.locator(".aifa-keep").click()
    expect(card.locator(".aifa-confirm")).to_be_hidden()
    assert server_model(hub, "bob").get("ready")
    card.locator(".aifa-stop").click()
    card.locator(".aifa-stop-now").click()
    ended = page.locator(".aifa-ended")
    expect(ended).to_be_visible(timeout=30_000)
    expect(ended.locator(".aifa-why")).to_have_text("You stopped it from the hub (or an administrator did).")
    expect(ended).to_contain_text(f"{job_id} on small-g")
    expect(ended.locator(".aifa-cost")).to_have_text(re.compile(r"^0\.[0-9]{2} GPU-hours, charged to proj_research$"))
    expect(ended).to_contain_text("Your files are kept")
    expect(page.locator("#start")).to_have_text("Start a session")
    snap(page, "session-ended")
    wait_for_job_end(job_id)


@pytest.fixture
def later_reservation():
    """alice's reservation on gpu, starting in an hour: a job in it waits, with Slurm's estimate."""
    name = "workshop-later"
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)
    subprocess.run(
        [
            "scontrol",
            "create",
            "reservation",
            f"reservationname={name}",
            "users=alice",
            "starttime=now+3600",
            "duration=60",
            "nodecnt=1",
            "partitionname=gpu",
        ],
        check=True,
        capture_output=True,
    )
    yield name
    # a job still waiting in it keeps Slurm from deleting it (the hub's servers stop after this)
    waiting = subprocess.run(["squeue", "-h", "-R", name, "-o", "%i"], capture_output=True, text=True).stdout.split()
    if waiting:
        subprocess.run(["scancel", *waiting], capture_output=True)
        for job_id in waiting:
            wait_for_job_end(job_id)
    subprocess.run(["scontrol", "delete", f"reservationname={name}"], capture_output=True)


def test_the_waiting_page_sums_up_shows_the_expected_start_in_the_readers_zone_and_cancels(
    hub_under_hostile_base_url, browser, later_reservation
):
    hub = hub_under_hostile_base_url
    page = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo").new_page()
    page.goto(hub.url + "hub/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", hub.passwords["alice"])
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    card = page.locator("#aifa-reserved label.aifa-card").first
    expect(card).to_contain_text(f"Your reservation {later_reservation}")
    expect(card).to_contain_text("(not started yet)")
    expect(card.locator("time.aifa-when").first).to_contain_text("GMT+9")  # the reader's zone
    expect(card.locator("input")).not_to_be_checked()  # not chosen for you before it starts
    card.click()
    expect(page.locator("#aifa-reservation")).to_have_value(later_reservation)
    page.locator("label.aifa-card", has=page.locator("input[value='local-cpu-1core-2h']")).click()
    expect(page.locator("#aifa-reservation")).to_have_value("")  # another card: no reservation
    card.click()
    page.click("button[type=submit]")
    page.wait_for_url("**/spawn-pending/alice**", timeout=30_000)
    summary = page.locator("#aifa-pending-summary .aifa-session")
    expect(summary.locator(".aifa-cancel")).to_have_text("Cancel request")
    expect(page.locator("#stop-server-btn")).to_be_hidden()  # it would stop the reader's default server
    expect(summary).to_contain_text(f"in reservation {later_reservation}")
    expect(summary).to_contain_text("≈ 2.00 GPU-hours")
    # Slurm's estimate (the reservation's start) in Tokyo time, and how far away it is
    when = page.locator("#progress-message time.aifa-when")
    expect(when).to_have_text(re.compile(r"GMT\+9 \(in about (5[0-9] min|1 h 00 min)\)"), timeout=90_000)
    expect(page.locator("#progress-message")).to_contain_text("waiting for the reservation to start")
    snap(page, "waiting-page")
    job_id = server_model(hub, "alice")["state"]["job_id"]
    summary.locator(".aifa-cancel").click()
    wait_for_job_end(job_id)
    wait_until_stopped(hub, "alice")
    page.goto(hub.url + "hub/home")
    ended = page.locator(".aifa-ended")
    expect(ended.locator(".aifa-why")).to_have_text("You cancelled the request before it started.")
    expect(ended.locator(".aifa-cost")).to_contain_text("0.00 GPU-hours")


def test_a_site_named_like_an_object_property_is_refused_and_the_form_still_works(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    page.check("#aifa-profile input[value=custom]")
    page.evaluate(
        "const s = document.querySelector('#aifa-site'); s.add(new Option('__proto__', '__proto__'));"
        " s.value = '__proto__'; document.querySelector('#aifa-profile').closest('form').submit()"
    )
    expect(page.locator(".spawn-error-msg")).to_contain_text("Error: Site must be one of: local")
    expect(page.locator("#aifa-site")).to_have_value("local")  # the form's own sites only
    expect(page.locator("#aifa-cost")).to_contain_text("Cost: Local cluster")
    assert not errors and not server_model(hub, "bob")
