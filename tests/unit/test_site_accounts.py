"""Who each person is on each remote site (hub_config/site_accounts/registry.py): admins' entries first,
then the identity provider's claims, then the settings; kept private, re-read when changed."""

import os
import stat

import pytest

from aifa_workbench.hub_config.site_accounts.registry import (
    SiteAccountError,
    SiteAccounts,
    accounts_from_claims,
    checked_entry,
)

SITES = {"lumi": object(), "jupiter": object()}


def test_admins_entries_win_over_the_providers_which_win_over_the_settings(tmp_path):
    path = tmp_path / "site-accounts.json"
    registry = SiteAccounts(
        {
            "alice": {
                "lumi": {"username": "alicelum", "accounts": ["project_1"]},
                "jupiter": {"username": "alicejup", "accounts": []},
            }
        },
        path,
    )
    assert registry.get("alice")["lumi"]["username"] == "alicelum" and registry.source("alice", "lumi") == "settings"
    registry.set_claimed("alice", {"jupiter": {"username": "alice1", "accounts": ["jsc_ai"]}})
    registry.set_kept("alice", "lumi", checked_entry("lumi", SITES, "alicel", "project_2, project_3"))
    assert registry["alice"] == {
        "lumi": {"username": "alicel", "accounts": ["project_2", "project_3"]},
        "jupiter": {"username": "alice1", "accounts": ["jsc_ai"]},
    }
    assert [registry.source("alice", s) for s in ("lumi", "jupiter")] == ["admins", "identity provider"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # another process of the hub's user (the tunnel daemon) reads the same file, and sees changes
    reader = SiteAccounts({}, path)
    assert reader["alice"]["lumi"]["username"] == "alicel"
    registry.remove_kept("alice", "lumi")
    assert reader["alice"] == {"jupiter": {"username": "alice1", "accounts": ["jsc_ai"]}}
    assert registry["alice"]["lumi"]["username"] == "alicelum"
    assert reader.get("nobody") is None and "nobody" not in reader


@pytest.mark.parametrize(
    "site, username, accounts, error",
    [
        ("elsewhere", "a", [], "Site must be one of: jupiter, lumi"),
        ("lumi", "Alice", [], "Username must be"),
        ("lumi", "a;id", [], "Username must be"),
        ("lumi", None, [], "Username must be"),
        ("lumi", "alice", "project_1;rm -rf", "Projects must be"),
        ("lumi", "alice", ["p"] * 51, "Projects must be"),
        ("lumi", "alice", [1], "Projects must be"),
    ],
)
def test_an_entry_the_registry_cannot_hold_is_refused_in_the_pages_words(site, username, accounts, error):
    with pytest.raises(SiteAccountError, match=error):
        checked_entry(site, SITES, username, accounts)


def test_jscs_claim_names_the_users_account_and_projects_on_known_systems_only():
    claim = [
        "alice1,jupiter,jsc_ai,alice1@jupiter",
        "alice1,jupiter_booster,jsc_llm",
        "alice1,juwels,x",
        "mallory,jupiter,stolen",
        "bad user,jupiter,p",
        "alice1,jupiter,bad;p",
        "short",
        7,
    ]
    assert accounts_from_claims(claim, {"jupiter": "jupiter"}) == {
        "jupiter": {"username": "alice1", "accounts": ["jsc_ai", "jsc_llm"]}
    }
    assert accounts_from_claims("not a list", {"jupiter": "jupiter"}) == {}


def test_a_damaged_file_is_logged_and_the_last_good_accounts_kept(tmp_path):
    path = tmp_path / "site-accounts.json"
    registry = SiteAccounts({}, path)
    registry.set_kept("alice", "lumi", checked_entry("lumi", SITES, "alicel", []))
    path.write_text("{not json")
    assert registry["alice"]["lumi"]["username"] == "alicel"
    path.write_text('{"kept": {"alice": "not a dict"}, "claimed": {}}')
    assert registry["alice"]["lumi"]["username"] == "alicel"
    assert SiteAccounts({}, path).get("alice") is None  # a hub starting on a bad file still starts


def test_who_someone_is_on_a_site_does_not_change_under_a_running_job():
    from aifa_workbench.hub_config.site_accounts.registry import change_refused

    current = {"username": "alicelum", "accounts": ["p1"]}
    assert change_refused("alice", "LUMI", "4242", current, {"username": "alicelum", "accounts": ["p2"]}) is None
    assert change_refused("alice", "LUMI", None, current, {"username": "other", "accounts": []}) is None
    sentence = change_refused("alice", "LUMI", "4242", current, {"username": "other", "accounts": []})
    assert sentence == (
        "alice has a session running on LUMI (job 4242) as alicelum; stop it first, then change the account."
    )
    assert change_refused("alice", "LUMI", "4242", current, None).startswith("alice has a session running")
