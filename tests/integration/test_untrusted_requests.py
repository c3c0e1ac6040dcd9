"""Carol attacks through what she sends the hub, and what Slurm shows her: another user's
password, huge or refused values, a burst of refused requests, other users'
jobs. And an https hub marks its cookies Secure. Real hubs on the real cluster."""

import concurrent.futures
import re
import subprocess

import pytest
import requests

from . import hubs
from .hubs import login, server_model, wait_ready
from .slurm_helpers import wait_for_job_end
from .untrusted_helpers import sbatch_as

pytestmark = pytest.mark.slurm


def test_each_demo_user_logs_in_with_their_own_password_only(hub):
    with pytest.raises(AssertionError, match="answered 403"):  # refused
        login(hub, "bob", password=hub.passwords["carol"])
    assert "bob" in login(hub, "bob").get(hub.url + "hub/home", timeout=30).text


def log_growth(hub, action) -> int:
    before = hub.log_path.stat().st_size
    action()
    return hub.log_path.stat().st_size - before


def test_huge_and_refused_values_are_capped_echoed_short_and_not_kept(hub):
    token = hub.user_token("carol")
    huge = {"site": "local", "partition": "p" * 2_000_000}
    r = None

    def post_huge():
        nonlocal r
        r = hub.api("POST", "users/carol/server", token=token, json=huge)

    grew = log_growth(hub, post_huge)
    assert r.status_code >= 400 and len(r.content) < 10_000 and grew < 10_000  # not 2 MB, three times

    def post_long():
        nonlocal r
        r = hub.api("POST", "users/carol/server", token=token, json={"partition": "p" * 30_000})

    grew = log_growth(hub, post_long)
    assert r.status_code == 400 and len(r.json()["message"]) < 400 and "…" in r.json()["message"]
    assert grew < 10_000

    # the refused options are not kept: an empty request starts the default server
    r = hub.api("POST", "users/carol/server", token=token)
    assert r.status_code in (201, 202), r.text
    assert wait_ready(hub, "carol")["user_options"] == {}


def sdiag_count(rpc: str) -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    match = re.search(rf"^\s*{rpc}\s+\(\s*\d+\)\s+count:(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_a_burst_of_refused_requests_shares_one_slurm_query(hub):
    token = hub.user_token("carol")
    hub.api("POST", "users/carol/server", token=token, json={"partition": "small-g", "gpus": 99})  # warms the caches
    before = sdiag_count("REQUEST_RESERVATION_INFO")
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(
            pool.map(
                lambda _: hub.api("POST", "users/carol/server", token=token, json={"partition": "small-g", "gpus": 99}),
                range(40),
            )
        )
    # 400, or 202 while another of the burst is being refused ("already starting")
    assert {a.status_code for a in answers} <= {202, 400}, [(a.status_code, a.text[:200]) for a in answers]
    assert not server_model(hub, "carol")
    assert sdiag_count("REQUEST_RESERVATION_INFO") - before <= 2  # not one scontrol per request


def test_a_user_sees_only_their_own_jobs():
    alices = sbatch_as("alice", "aifa-dask-alice")
    try:
        seen = subprocess.run(
            ["sudo", "-u", "carol", "squeue", "-h", "-o", "%i %u %Z %o"], capture_output=True, text=True
        ).stdout
        assert alices not in seen.split() and "alice" not in seen
        shown = subprocess.run(
            ["sudo", "-u", "carol", "scontrol", "show", "job", alices], capture_output=True, text=True
        )
        assert "alice" not in shown.stdout
    finally:
        subprocess.run(["scancel", alices], check=False)
        wait_for_job_end(alices)


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for localhost and *.localhost, readable by the hub's user."""
    cert, key = hubs.TEST_HUBS_DIR / f"tls-{tmp_path.name}.pem", hubs.TEST_HUBS_DIR / f"tls-{tmp_path.name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,DNS:*.localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    for path in (cert, key):
        hubs._own(path, 0o400)
    yield str(cert), str(key)
    cert.unlink()
    key.unlink()


def test_an_https_hub_gives_the_proxy_its_certificate_and_marks_cookies_secure(start_hub, tls_files):
    port = hubs.free_port()
    hub = start_hub(
        "https",
        settings_overrides={
            "bind_url": f"https://127.0.0.1:{port}/",
            "public_host": f"https://localhost:{port}",
            "tls_cert_file": tls_files[0],
            "tls_key_file": tls_files[1],
        },
    )
    assert hub.url.startswith("https://localhost:")
    session = requests.Session()
    page = session.get(hub.url + "hub/login", timeout=30, verify=False)  # self-signed
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = session.post(
        hub.url + "hub/login",
        timeout=30,
        allow_redirects=False,
        verify=False,
        data={"username": "alice", "password": hub.passwords["alice"], "_xsrf": xsrf},
    )
    assert r.status_code == 302
    cookies = [c for c in r.raw.headers.getlist("Set-Cookie")]
    assert cookies and all("Secure" in c for c in cookies), cookies
    assert any(c.startswith("__Host-") for c in cookies), cookies
