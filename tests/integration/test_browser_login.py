"""A person logs in with a real browser (Debian's chromium), starts a server and lands in JupyterLab."""
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


def new_page(browser):
    return browser.new_context(viewport={"width": 1280, "height": 800}).new_page()


def test_login_start_server_and_see_jupyterlab(start_hub, browser, tmp_path):
    hub = start_hub("browser", "/@/space%20word/")
    page = new_page(browser)
    page.goto(hub.url + "hub/login")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", hub.password)
    page.click("input[type=submit], button[type=submit]")
    # with no options form, logging in starts the server: spawn page with progress, then JupyterLab
    page.wait_for_url("**/user/carol/lab**", timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    page.screenshot(path=str(tmp_path / "jupyterlab.png"))
    assert server_model(hub, "carol")["ready"]

    page = new_page(browser)   # a second person, not logged in
    page.goto(hub.url + "hub/login")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", "wrong-password")
    page.click("input[type=submit], button[type=submit]")
    expect(page.locator(".login_error")).to_contain_text("Invalid username or password")
