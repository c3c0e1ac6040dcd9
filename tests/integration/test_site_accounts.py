"""Site accounts: who each person is on each remote site and their projects there. The identity
provider's claim (JSC's hpc_infos_attribute) fills them at login; admins set them on
/hub/site-accounts and through the REST API (only admins: a user's own token cannot); the spawn
form offers those projects, and the keys page shows them, or says what is missing."""

import json
import re

import pytest
import requests
import yaml

from . import hubs
from .oidc_provider import login_through, make_provider, person, start_oidc_hub
from .sim_sites import SITES_ROOT
from .sim_sites import SIM_KEYS

pytestmark = [pytest.mark.oidc, pytest.mark.sites, pytest.mark.slurm]


@pytest.fixture(scope="module")
def accounts_hub(cluster):
    people = [
        person("alice", ["workbench", "admins"]),
        person(
            "bob",
            ["workbench"],
        ),
        person("carol", ["workbench"]),
    ]
    people[1].hpc_infos = ["bobjsc,jupiter,jsc_ai", "bobjsc,jupiter_booster,jsc_llm", "bobjsc,juwels,other"]
    provider = make_provider(people)
    simulated = yaml.safe_load((SITES_ROOT / "workbench-sites.yaml").read_text())
    overrides = {key: simulated[key] for key in SIM_KEYS}
    overrides["site_users"] = {"carol": {"lumi": {"username": "carollum", "accounts": ["project_465000123"]}}}
    hub = start_oidc_hub(
        "accounts",
        provider,
        {"alice": "alice", "bob": "bob", "carol": "carol"},
        overrides,
        site_systems={"jupiter": "jupiter"},
    )
    try:
        yield hub, provider
    finally:
        hubs.stop_hub(hub)
        provider.stop()


def signed_in(hub, provider, login) -> requests.Session:
    session = requests.Session()
    assert login_through(hub.url, provider, login, session=session).ok
    return session


def test_the_providers_claim_names_the_account_and_the_form_offers_its_projects(accounts_hub):
    hub, provider = accounts_hub
    bob = signed_in(hub, provider, "bob")
    assert hub.api("GET", "site-accounts/bob").json()["jupiter"] == {
        "username": "bobjsc",
        "accounts": ["jsc_ai", "jsc_llm"],
        "source": "identity provider",
    }
    form = bob.get(hub.url + "hub/spawn", timeout=30).text
    data = json.loads(re.search(r'<script type="application/json" id="aifa-data">(.*?)</script>', form, re.S)[1])
    assert data["sites"]["jupiter"]["accounts"] == ["jsc_ai", "jsc_llm"]
    keys = bob.get(hub.url + "hub/site-keys", timeout=30).text
    assert "Your username there: <code>bobjsc</code>" in keys and "jsc_ai, jsc_llm" in keys
    assert "You have no Lucia account yet" in keys and "You have no LUMI account yet" in keys


def test_admins_set_accounts_through_the_api_and_a_users_own_token_cannot(accounts_hub):
    hub, provider = accounts_hub
    signed_in(hub, provider, "carol")
    r = hub.api("PUT", "site-accounts/carol", json={"lumi": {"username": "carol2", "accounts": ["project_465000999"]}})
    assert r.status_code == 200 and r.json()["lumi"]["source"] == "admins", r.text
    bad = hub.api("PUT", "site-accounts/carol", json={"lumi": {"username": "Carol;id", "accounts": []}})
    assert bad.status_code == 400 and "Username must be" in bad.json()["message"]
    theirs = hub.api(
        "PUT",
        "site-accounts/carol",
        token=hub.user_token("bob"),
        json={"lumi": {"username": "bobsown", "accounts": []}},
    )
    assert theirs.status_code in (403, 404)
    own = hub.api(
        "PUT",
        "site-accounts/bob",
        token=hub.user_token("bob"),
        json={"lumi": {"username": "bobsown", "accounts": ["project_465000123"]}},
    )
    assert own.status_code == 403
    carol = requests.Session()
    login_through(hub.url, provider, "carol", session=carol)
    assert "project_465000999" in carol.get(hub.url + "hub/spawn", timeout=30).text
    assert hub.api("DELETE", "site-accounts/carol/lumi").status_code == 204
    assert hub.api("DELETE", "site-accounts/carol/lumi").status_code == 404
    assert hub.api("GET", "site-accounts/carol").json()["lumi"]["username"] == "carollum"  # the settings' again


def test_the_admins_page_sets_an_account_and_says_what_is_wrong_in_its_words(accounts_hub):
    hub, provider = accounts_hub
    alice = signed_in(hub, provider, "alice")
    page = alice.get(hub.url + "hub/site-accounts", timeout=30)
    assert page.status_code == 200 and 'id="aifa-site-accounts"' in page.text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    saved = alice.post(
        hub.url + "hub/site-accounts",
        timeout=30,
        data={
            "_xsrf": xsrf,
            "user": "bob",
            "site": "lucia",
            "username": "bobluc",
            "accounts": "cat1_ai cat2_sme",
            "action": "save",
        },
    )
    assert saved.status_code == 200 and "bob is bobluc on" in saved.text
    assert hub.api("GET", "site-accounts/bob").json()["lucia"]["accounts"] == ["cat1_ai", "cat2_sme"]
    wrong = alice.post(
        hub.url + "hub/site-accounts",
        timeout=30,
        data={"_xsrf": xsrf, "user": "bob", "site": "lucia", "username": "<b>x", "accounts": "", "action": "save"},
    )
    assert "Username must be" in wrong.text and "<b>x" not in wrong.text
    bob = signed_in(hub, provider, "bob")
    assert bob.get(hub.url + "hub/site-accounts", timeout=30).status_code == 403
