"""The walltime guard, with a real short job and a real browser: JupyterLab warns before the time
limit, and an edit typed after the last warning, never saved by the person, is on disk after
Slurm has ended the job.

A drill that waits about five minutes on a clock (Slurm's time limits are whole minutes): it runs
beside the workshop drill, which waits as long on a course's window, in
test_courses.test_a_workshop_and_the_walltime_guard_each_to_the_end_of_its_clock_side_by_side."""

import json
import re
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from playwright.sync_api import expect

from .hubs import wait_ready
from .slurm_helpers import job_fields, wait_for_job_end
from .test_browser_login import logged_in_page

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def end_job_in_about_five_minutes(job_id: str) -> None:
    """Shorten the running job's time limit (as a Slurm admin would): it ends 4-5 minutes from now,
    so the guard knows the new end well before its 2-minute warning, however slowly the page loads."""
    run_time = job_fields(job_id)["RunTime"]  # [D-]HH:MM:SS
    hours, minutes, _ = (int(v) for v in re.split("[:-]", run_time)[-3:])
    limit = hours * 60 + minutes + 5
    subprocess.run(["scontrol", "update", f"jobid={job_id}", f"timelimit={limit}"], check=True)


def an_unsaved_edit_after_the_last_warning_is_on_disk_after_the_job_ends(
    start_hub, browser, once_open: Callable[[], None] = lambda: None
) -> None:
    """The drill; once_open is called when the notebook is open in the page, the guard's clock set."""
    hub = start_hub("guard", settings_overrides={"walltime_warnings_minutes": [2, 1]})
    token = hub.user_token("bob")
    hub.api("POST", "users/bob/server", token=token, json={"partition": "cpu"})
    job_id = wait_ready(hub, "bob")["state"]["job_id"]
    server, name = hub.server_url("bob"), f"guard-{uuid.uuid4().hex[:8]}.ipynb"
    notebook = {
        "cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": None}],
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    }
    r = requests.put(
        server + f"api/contents/{name}",
        json={"type": "notebook", "content": notebook},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    end_job_in_about_five_minutes(job_id)

    page = logged_in_page(browser, hub, "bob")
    page.goto(server + f"lab/tree/{name}?reset")  # a fresh workspace: only this notebook open
    editor = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first
    editor.wait_for(timeout=120_000)
    accept_kernel = page.locator(".jp-Dialog .jp-mod-accept")
    if accept_kernel.is_visible():
        accept_kernel.click()
    once_open()
    toasts = page.locator(".Toastify__toast")
    expect(toasts.filter(has_text="session ends in 2 minutes")).to_be_visible(timeout=240_000)
    expect(toasts.filter(has_text="session ends in about 1 minute")).to_be_visible(timeout=90_000)
    if accept_kernel.is_visible():
        accept_kernel.click()
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\nedited_after_the_last_warning = True")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "walltime-guard.png"))

    assert wait_for_job_end(job_id, timeout=180) not in ("RUNNING", "COMPLETING"), job_fields(job_id)
    saved = json.loads((Path("/home/bob") / name).read_text())
    assert "edited_after_the_last_warning = True" in "".join(saved["cells"][0]["source"])
    (Path("/home/bob") / name).unlink()
