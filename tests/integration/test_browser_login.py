"""A person with a real browser (Debian's chromium): logs in, fills the spawn form, sees the cost
line follow the GPU count, starts the server and lands in JupyterLab; another submits a bad value
and reads the sentence. The hub runs under a hostile base URL."""
import shutil

import pytest
from playwright.sync_api import expect

from .hubs import server_model

pytestmark = [pytest.mark.browser, pytest.mark.slurm]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    page.select_option("#aifa-profile", "custom")
    page.select_option("#aifa-site", "local")
    page.select_option("#aifa-partition", partition)
    page.fill("#aifa-gpus", str(gpus))


@pytest.fixture
def hub_under_hostile_base_url(start_hub):
    return start_hub("browser", "/@/space%20word/")


def test_fill_the_form_see_the_cost_start_and_land_in_jupyterlab(hub_under_hostile_base_url, browser, tmp_path):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "carol")
    choose_custom(page, "small-g", 1)
    expect(page.locator("#aifa-cost")).to_have_text("Cost: Local cluster small-g, 1 GPU, 2 h ≈ 1.0 GPU-hours")
    page.fill("#aifa-gpus", "2")
    expect(page.locator("#aifa-cost")).to_have_text("Cost: Local cluster small-g, 2 GPUs, 2 h ≈ 2.0 GPU-hours")
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
    page.select_option("#aifa-profile", "custom")
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
    page.select_option("#aifa-partition", "cpu")
    expect(page.locator("#aifa-gpus")).to_have_value("0")
    expect(page.locator("#aifa-gpus")).to_be_disabled()
    page.select_option("#aifa-partition", "small-g")
    page.fill("#aifa-gpus", "8")
    page.select_option("#aifa-partition", "gpu")          # 4 GPUs a node: as many as it has
    expect(page.locator("#aifa-gpus")).to_have_value("4")


def test_a_bad_value_gets_a_sentence_and_no_job(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "small-g", 99)
    page.click("button[type=submit]")
    expect(page.locator(".spawn-error-msg")).to_have_text(
        "Error: 'gpus' must be from 1 to 8; 99 is out of range.")
    assert not server_model(hub, "bob")


def test_a_form_number_such_as_superscript_two_gets_a_sentence(hub_under_hostile_base_url, browser):
    hub = hub_under_hostile_base_url
    page = logged_in_page(browser, hub, "bob")
    choose_custom(page, "small-g", 1)
    page.evaluate("document.querySelector('#aifa-gpus').type = 'text'")   # as a crafted form post could
    page.fill("#aifa-gpus", "²")                                           # str.isdigit() says yes, int() no
    page.click("button[type=submit]")
    expect(page.locator(".spawn-error-msg")).to_have_text("Error: 'gpus' must be a whole number from 1 to 8.")
    assert not server_model(hub, "bob")


def test_a_wrong_password_gets_a_sentence(hub_under_hostile_base_url, browser):
    page = logged_in_page(browser, hub_under_hostile_base_url, "carol", password="wrong-password")
    expect(page.locator(".login_error")).to_contain_text("Invalid username or password")
