"""A person with a real browser (Debian's chromium): logs in, fills the spawn form, sees the cost
line follow the GPU count, starts the server and lands in JupyterLab; another submits a bad value
and reads the sentence. The hub runs under a hostile base URL."""

import re
import shutil
import subprocess
import time

import pytest
from playwright.sync_api import expect

from .hubs import server_model
from .slurm_helpers import job_fields, wait_for_job_end
from .test_profiles import reservation  # noqa: F401  (the fixture: alice's reservation on gpu)

pytestmark = [pytest.mark.browser, pytest.mark.slurm]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def logged_in_page(browser, hub, username, password=None):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(hub.url + "hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", hub.passwords[username] if password is None else password)
    page.click("input[type=submit], button[type=submit]")
    return page


def choose_custom(page, partition, gpus):
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    page.check("#aifa-profile input[value=custom]")
    page.select_option("#aifa-site", "local")
    page.select_option("#aifa-partition", partition)
    if gpus is not None:
        page.fill("#aifa-gpus", str(gpus))


@pytest.fixture
def hub_under_hostile_base_url(start_hub):
    return start_hub("browser", "/@/space%20word/")


def test_fill_the_form_see_the_cost_start_and_land_in_jupyterlab(hub_under_hostile_base_url, browser, tmp_path):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "carol")
    choose_custom(page, "small-g", 1)
    expect(page.locator("#aifa-cost")).to_have_text(
        "Cost: Local cluster small-g, 1 GPU, 2 h ≈ 1.0 GPU-hours, charged to proj_training"
    )
    page.fill("#aifa-gpus", "2")
    expect(page.locator("#aifa-cost")).to_have_text(
        "Cost: Local cluster small-g, 2 GPUs, 2 h ≈ 2.0 GPU-hours, charged to proj_training"
    )
    expect(page.locator("#aifa-limits")).to_contain_text("up to 7 cores and 60 GB per GPU, at most 72 h")
    expect(page.locator("#aifa-load")).to_contain_text("small-g now:")
    page.screenshot(path=str(tmp_path / "spawn-form.png"))
    page.click("button[type=submit]")
    page.wait_for_url("**/user/carol/lab**", timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    model = server_model(hub, "carol")
    assert model["ready"] and model["user_options"]["gpus"] == 2


def test_the_gpu_count_chosen_survives_whole_node_and_cpu_partitions(hub_under_hostile_base_url, browser):
    """Passing through a whole-node partition (4 or 8 GPUs) or a CPU one (0) must not change
    the count the person chose on a shared GPU partition (it once asked for 4 where 1 was meant)."""
    page = logged_in_page(browser, hub_under_hostile_base_url, "bob")
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    page.check("#aifa-profile input[value=custom]")
    page.select_option("#aifa-site", "local")
    page.select_option("#aifa-partition", "booster")
    expect(page.locator("#aifa-gpus")).to_have_value("4")
    expect(page.locator("#aifa-gpus")).to_be_disabled()
    page.select_option("#aifa-partition", "gpu")
    expect(page.locator("#aifa-gpus")).to_have_value("1")
    expect(page.locator("#aifa-cost")).to_contain_text("gpu, 1 GPU, 2 h")
    page.fill("#aifa-gpus", "2")
    for passing_through in ("standard-g", "cpu"):
        page.select_option("#aifa-partition", passing_through)
        page.select_option("#aifa-partition", "small-g")
        expect(page.locator("#aifa-gpus")).to_have_value("2")
        expect(page.locator("#aifa-cost")).to_contain_text("small-g, 2 GPUs, 2 h")
    expect(page.locator("#aifa-cost-hint")).to_contain_text("one GPU is 0.5 GPU-hour per hour")  # LUMI's rule
    page.select_option("#aifa-partition", "booster")
    expect(page.locator("#aifa-cost")).to_contain_text("booster, 1 node, 2 h ≈ 2.0 node-hours")
    expect(page.locator("#aifa-cost-hint")).to_have_text(
        "Whole nodes are charged by the node-hour, whatever of the node you use."
    )
    page.select_option("#aifa-partition", "cpu")
    expect(page.locator("#aifa-gpus")).to_have_value("0")
    expect(page.locator("#aifa-gpus")).to_be_disabled()
    page.select_option("#aifa-partition", "small-g")
    page.fill("#aifa-gpus", "8")
    page.select_option("#aifa-partition", "gpu")  # 4 GPUs a node: as many as it has
    expect(page.locator("#aifa-gpus")).to_have_value("4")


def submit_past_the_forms_checks(page):
    """As a crafted post would: the form's own checks (its submit event) do not run."""
    page.evaluate("document.querySelector('#aifa-profile').closest('form').submit()")


def test_a_bad_value_is_named_as_it_is_typed_and_start_sends_nothing(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "small-g", 99)
    expect(page.locator("#aifa-check")).to_contain_text("GPUs must be a whole number from 1 to 8 on ")
    expect(page.locator("#aifa-gpus")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#aifa-cost")).to_have_text("")  # no cost for what cannot be asked
    page.fill("#aifa-hours", "9999")
    expect(page.locator("#aifa-check")).to_contain_text("Hours must be from 0.25 to 72 on ")
    page.fill("#aifa-hours", "1.3")
    expect(page.locator("#aifa-check")).to_contain_text("in quarter hours (0.25, 0.5, 1.5, …)")
    for _ in range(2):  # Start stays there to be pressed again once it is right
        page.click("button[type=submit]")
        page.wait_for_timeout(500)
        expect(page.locator("button[type=submit]")).to_be_visible()
    assert "/hub/spawn" in page.url and not server_model(hub, "bob")
    page.fill("#aifa-gpus", "2")
    page.fill("#aifa-hours", "1.5")
    expect(page.locator("#aifa-check")).to_be_hidden()
    expect(page.locator("#aifa-cost")).to_contain_text("small-g, 2 GPUs, 1.5 h ≈ 1.5 GPU-hours")


def test_a_refusal_from_the_hub_keeps_every_value_and_marks_the_field_in_the_forms_words(
    hub_under_hostile_base_url, browser
):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "small-g", 99)
    page.fill("#aifa-hours", "3")
    submit_past_the_forms_checks(page)
    expect(page.locator(".spawn-error-msg")).to_have_text("Error: GPUs must be from 1 to 8; 99 is out of range.")
    assert not server_model(hub, "bob")
    # the form comes back as it was sent: Custom, small-g, 99 GPUs, 3 h; the field is marked
    expect(page.locator("#aifa-profile input[value=custom]")).to_be_checked()
    expect(page.locator("#aifa-partition")).to_have_value("small-g")
    expect(page.locator("#aifa-gpus")).to_have_value("99")
    expect(page.locator("#aifa-hours")).to_have_value("3")
    expect(page.locator("#aifa-gpus")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#aifa-gpus")).to_be_focused()
    # a choice the hub refuses that the form could not know (a project taken away meanwhile)
    page.fill("#aifa-gpus", "1")
    page.evaluate(
        "const s = document.querySelector('#aifa-account'); s.add(new Option('proj_gone', 'proj_gone'));"
        " s.value = 'proj_gone'"
    )
    page.click("button[type=submit]")
    expect(page.locator(".spawn-error-msg")).to_contain_text("Error: Project (account) must be one of:")
    expect(page.locator("#aifa-account")).to_have_value("proj_gone")
    expect(page.locator("#aifa-account")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#aifa-gpus")).to_have_value("1")
    # the page is now /hub/spawn?_xsrf=…: its load refresh (every 20 s) must not be taken for a spawn
    page.wait_for_timeout(21_000)
    expect(page.locator("#aifa-load")).to_contain_text("now:")
    assert not server_model(hub, "bob")


def test_a_form_number_such_as_superscript_two_gets_a_sentence(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "small-g", 1)
    page.evaluate("document.querySelector('#aifa-gpus').type = 'text'")  # as a crafted form post could
    page.fill("#aifa-gpus", "²")  # str.isdigit() says yes, int() no
    submit_past_the_forms_checks(page)
    expect(page.locator(".spawn-error-msg")).to_have_text("Error: GPUs must be a whole number from 1 to 8.")
    assert not server_model(hub, "bob")


def test_a_quick_start_profile_runs_in_the_users_reservation_charged_to_the_project_chosen(
    hub_under_hostile_base_url, browser, reservation
):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "alice")
    page.wait_for_url("**/hub/spawn**", timeout=30_000)
    # the page opens on the card of the user's reservation, which takes the reservation with it
    card = page.locator("#aifa-reserved label.aifa-card").first
    expect(card.locator("input")).to_be_checked()
    expect(card).to_contain_text(f"Your reservation {reservation}: Fine-tune a model on an A100")
    expect(card.locator("time.aifa-when").first).to_have_text(re.compile(r"[0-9]{2}:[0-9]{2}"))  # its window
    expect(page.locator("#aifa-custom")).to_be_hidden()
    expect(page.locator("#aifa-reservation")).to_have_value(reservation)
    expect(page.locator("#aifa-reservation option:checked")).to_contain_text(f"{reservation} (gpu, ")
    page.select_option("#aifa-account", "proj_training")
    expect(card.locator(".aifa-card-payer")).to_have_text("Charged to proj_training")
    expect(page.locator("#aifa-cost")).to_have_text(
        "Cost: Local cluster gpu, 1 GPU, 2 h ≈ 2.0 GPU-hours, charged to proj_training"
    )
    page.click("button[type=submit]")
    page.wait_for_url("**/user/alice/lab**", timeout=120_000)
    job_id = server_model(hub, "alice")["state"]["job_id"]
    job = job_fields(job_id)
    assert (job["Partition"], job["Account"], job["Reservation"], job["TresPerNode"]) == (
        "gpu",
        "proj_training",
        reservation,
        "gres:gpu:1",
    )
    hub.api("DELETE", "users/alice/server", token=hub.user_token("alice"))
    wait_for_job_end(job_id)


def test_the_partitions_load_counts_cores_on_a_cpu_partition_and_follows_the_cluster(
    hub_under_hostile_base_url, browser
):
    page = logged_in_page(browser, hub_under_hostile_base_url, "bob")
    choose_custom(page, "cpu", None)
    expect(page.locator("#aifa-load")).to_have_text(re.compile(r"cpu now: [0-9]+ of [0-9]+ cores idle, "))
    page.select_option("#aifa-partition", "gpu")
    expect(page.locator("#aifa-load")).to_have_text(re.compile(r"gpu now: [0-9]+ of [0-9]+ GPUs idle, "))

    def idle_gpus() -> int:
        return int(re.match(r"gpu now: ([0-9]+) of", page.locator("#aifa-load").text_content()).group(1))

    before = idle_gpus()
    assert before >= 1, "no idle GPU to take"
    holder = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--account=aifa",
            "-p",
            "gpu",
            "--gpus-per-node=1",
            "-t",
            "5",
            "-o",
            "/dev/null",
            "-J",
            "aifa-test-gpu-holder",
            "--wrap",
            "sleep 300",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:  # the form asks again every 20 s (Slurm's answers are kept 10 s)
        deadline = time.monotonic() + 60
        while idle_gpus() >= before:
            assert time.monotonic() < deadline, f"the load line still says {before} idle GPUs"
            page.wait_for_timeout(1000)
    finally:
        subprocess.run(["scancel", holder])


def test_the_form_opens_on_the_last_choice(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "gpu", 2)
    page.fill("#aifa-hours", "1.5")
    page.click("button[type=submit]")
    page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    job_id = server_model(hub, "bob")["state"]["job_id"]
    assert job_fields(job_id)["TimeLimit"] == "01:30:00"  # quarter hours reach Slurm as minutes
    hub.api("DELETE", "users/bob/server", token=hub.user_token("bob"))
    wait_for_job_end(job_id)
    deadline = time.monotonic() + 60
    while server_model(hub, "bob").get("pending") or server_model(hub, "bob").get("ready"):
        assert time.monotonic() < deadline, server_model(hub, "bob")
        time.sleep(0.3)
    page.goto(hub.url + "hub/spawn")
    expect(page.locator("#aifa-profile input[value=custom]")).to_be_checked()
    expect(page.locator("#aifa-partition")).to_have_value("gpu")
    expect(page.locator("#aifa-gpus")).to_have_value("2")
    expect(page.locator("#aifa-hours")).to_have_value("1.5")
    expect(page.locator("#aifa-gpus")).not_to_be_focused()  # nothing refused: nothing marked
    expect(page.locator("#aifa-gpus")).to_have_attribute("aria-invalid", "false")


def test_a_wrong_password_gets_a_sentence(hub_under_hostile_base_url, browser):
    page = logged_in_page(browser, hub_under_hostile_base_url, "carol", password="wrong-password")
    expect(page.locator(".login_error")).to_contain_text("Invalid username or password")
