"""Federated login against a real OpenID Connect provider the suite starts (npm's oidc-provider,
the demo's): through its sign-in and consent forms with an HTTP client and with chromium; the hub
user keyed on `sub`, never on email; groups from entitlements, re-read at refresh; 403 with a
sentence for people outside the allowed groups; a new login once the provider stops honouring
the tokens; the tokens encrypted in the hub's database."""

import os
import re
import sqlite3
import time

import pytest
import requests

from . import hubs
from .oidc_provider import login_through, make_provider, person, start_oidc_hub
from .test_browser_login import browser  # noqa: F401  (the fixture: Debian's chromium)

pytestmark = [pytest.mark.oidc, pytest.mark.slurm]


@pytest.fixture(scope="module")
def federation(cluster):
    """One provider and one hub for the module: alice (admins), bob and carol (workbench), erin
    (signed in, in no allowed group), dave (workbench, a name nobody gave: u-<hex>)."""
    people = [
        person("alice", ["workbench", "admins", "trainers", "ws01:role=instructor", "course-x-instructors"]),
        person("bob", ["workbench"]),
        person("carol", ["workbench"]),
        person("erin", []),
        person("dave", ["workbench"], email="bob@aifa-test.example"),
    ]
    provider = make_provider(people, access_token_seconds=4, clock_tolerance=0)
    hub = start_oidc_hub("oidc", provider, {"alice": "alice", "bob": "bob", "carol": "carol"}, refresh_seconds=2)
    try:
        yield hub, provider
    finally:
        hubs.stop_hub(hub)
        provider.stop()


def who(hub, session) -> dict:
    r = session.get(hub.url + "hub/api/user", timeout=30, headers={"Referer": hub.url + "hub/home"})
    return r.json() if r.ok else {"status": r.status_code}


def test_login_through_the_providers_forms_keys_the_user_on_sub_with_groups_and_encrypted_tokens(federation):
    hub, provider = federation
    session = requests.Session()
    page = login_through(hub.url, provider, "alice", session=session)
    assert page.status_code == 200 and page.url.startswith(hub.url + "hub/"), (page.url, hub.log_tail())
    model = hub.api("GET", "users/alice").json()
    assert model["admin"] is True
    # course-* groups are the hub's own: no entitlement makes anyone a course's instructor
    assert set(model["groups"]) == {"workbench", "admins", "trainers", "ws01", "ws01=instructor"}
    # dave's email is bob's old address: he is still not bob, but u-<hex of his sub>
    before = {u["name"] for u in hub.api("GET", "users").json()}
    login_through(hub.url, provider, "dave")
    [new] = {u["name"] for u in hub.api("GET", "users").json()} - before
    assert new.startswith("u-") and len(new) == 18
    # the scripting token does not read anyone's login tokens
    assert "auth_state" not in hub.api("GET", "users/alice").json()
    # the tokens are in the database only encrypted
    with open(hub.home / "jupyterhub.sqlite", "rb") as f:
        raw = f.read()
    assert b"access_token" not in raw and b"refresh_token" not in raw
    rows = (
        sqlite3.connect(f"file:{hub.home / 'jupyterhub.sqlite'}?mode=ro", uri=True)
        .execute("select encrypted_auth_state from users where name='alice'")
        .fetchall()
    )
    assert rows and rows[0][0]


def test_a_person_outside_the_allowed_groups_gets_a_page_that_says_why_and_whom_to_ask(federation):
    hub, provider = federation
    page = login_through(hub.url, provider, "erin")
    assert page.status_code == 403
    assert "not in a group that may use AIFA Workbench" in page.text and "Traceback" not in page.text
    wrong = login_through(hub.url, provider, "bob", password="not-his")
    assert "do not match" in wrong.text and wrong.url.startswith(provider.url)


def test_a_refresh_reads_the_groups_again_and_a_person_removed_from_them_must_log_in_again(federation):
    hub, provider = federation
    session = requests.Session()
    login_through(hub.url, provider, "carol", session=session)
    provider.set_groups("carol", ["workbench", "ws02"])
    time.sleep(5)  # past the access token's life and the refresh age
    assert who(hub, session).get("name") == "carol"
    assert set(hub.api("GET", "users/carol").json()["groups"]) == {"workbench", "ws02"}
    provider.set_groups("carol", [])
    time.sleep(3)
    home = session.get(hub.url + "hub/home", timeout=30, allow_redirects=False)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]


def test_once_the_provider_no_longer_honours_the_refresh_token_the_person_logs_in_again(federation):
    hub, provider = federation
    session = requests.Session()
    login_through(hub.url, provider, "bob", session=session)
    assert who(hub, session).get("name") == "bob"
    token = hub.api("POST", "users/bob/tokens", json={"expires_in": 600}).json()["token"]
    provider.restart()  # as `make demo` again does: its grants are kept on disk
    time.sleep(5)  # past a refresh
    assert who(hub, session).get("name") == "bob", hub.log_tail()
    assert hub.api("GET", "user", token=token).status_code == 200, "an API token ended with a provider restart"
    assert oct(os.stat(provider.home / "state" / "store.json").st_mode & 0o777) == "0o600"
    provider.forget()  # its grants and refresh tokens gone: all revoked
    time.sleep(5)
    home = session.get(hub.url + "hub/home", timeout=30, allow_redirects=False)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"], hub.log_tail()
    again = login_through(hub.url, provider, "bob", session=session)
    assert again.status_code == 200 and who(hub, session).get("name") == "bob"


def test_a_person_in_no_allowed_group_joins_a_course_by_its_invite_link_and_leaves_with_it(federation):
    """Workshop participants are rarely in the antenna's groups: the invite link lets them sign
    in to join; once the course ends, the next refresh asks them to log in again (and refuses)."""
    hub, provider = federation
    login_through(hub.url, provider, "alice", session=requests.Session())  # a trainer by her groups
    now = time.time()
    r = hub.api(
        "POST",
        "courses",
        token=hub.user_token("alice"),
        timeout=120,
        json={
            "id": "oidc-ws",
            "title": "Federated workshop",
            "site": "local",
            "partition": "cpu",
            "gpus": 0,
            "hours": 0.25,
            "starts_at": now - 60,
            "ends_at": now + 900,
            "size": 2,
            "project": "proj_training",
        },
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"].replace("-", "")
    try:
        erin = requests.Session()
        page = login_through(hub.url, provider, "erin", session=erin, next_path=f"/hub/courses/join/{code}")
        assert page.status_code == 200 and "Join the course" in page.text, (page.status_code, hub.log_tail())
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        joined = erin.post(
            hub.url + "hub/courses",
            data={"_xsrf": xsrf, "action": "join", "code": code},
            headers={"Referer": page.url},
            timeout=60,
        )
        assert joined.url.endswith("hub/spawn") and "Start my course session" in joined.text, joined.text[-400:]
        name = who(hub, erin)["name"]
        assert "course-oidc-ws" in hub.api("GET", f"users/{name}").json()["groups"]
        time.sleep(5)  # past a refresh: still in, as the course's participant
        assert who(hub, erin).get("name") == name
    finally:
        assert hub.api("POST", "courses/oidc-ws/end", token=hub.user_token("alice"), timeout=120).status_code == 200
    time.sleep(5)
    home = erin.get(hub.url + "hub/home", timeout=30, allow_redirects=False)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]


def sign_in_with_chromium(page, provider, login):
    # the provider's sign-in page: a busy machine (the suite's drills) may take its time; if it
    # never comes, say where the browser is instead
    try:
        page.wait_for_selector("#login", timeout=60_000)
    except Exception as error:  # noqa: BLE001 (playwright's TimeoutError, with what the page is)
        raise AssertionError(f"no sign-in form at {page.url}: {page.content()[:600]}") from error
    page.fill("#login", login)
    page.fill("#password", provider.people[login].password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Allow").click()  # the provider's consent page


@pytest.mark.browser
def test_chromium_logs_in_through_the_provider_and_reaches_the_spawn_page(federation, browser):  # noqa: F811
    hub, provider = federation
    page = browser.new_context().new_page()
    page.goto(hub.url + "hub/login")
    page.get_by_role("button", name="Sign in with the test identity provider").click()
    sign_in_with_chromium(page, provider, "bob")
    page.wait_for_url(hub.url + "hub/**", timeout=30_000)
    page.goto(hub.url + "hub/spawn")
    assert page.locator("#aifa-profile").count() == 1
    erin = browser.new_context().new_page()
    erin.goto(hub.url + "hub/oauth_login")
    sign_in_with_chromium(erin, provider, "erin")
    erin.wait_for_url(hub.url + "hub/oauth_callback**", timeout=30_000)
    assert "not in a group that may use AIFA Workbench" in erin.content()
