"""Who a federated login is (model/identity.py, hub_config/oidc.py): the hub name from `sub` only,
groups from entitlement URNs, and who is let in at login and at every refresh."""

import asyncio
from types import SimpleNamespace

import pytest

from aifa_workbench.hub_config import oidc
from aifa_workbench.model.identity import groups_from_entitlements, hub_name, sub_accepted
from aifa_workbench.model.settings import SettingsError, validate

PREFIX = "urn:geant:myaccessid.org:group:bcai:"
SUB = "3f2a" * 8 + "@myaccessid.org"
MYACCESSID = r"^[0-9a-f]{1,64}@myaccessid\.org$"


def test_the_hub_name_comes_from_sub_alone_and_is_the_same_at_every_login():
    assert hub_name(SUB, {}, True) == hub_name(SUB.upper(), {}, True) == hub_name(f"  {SUB} ", {}, True)
    assert hub_name("AbC", {}) != hub_name("abc", {})  # case counts unless the provider says it does not
    assert hub_name(SUB, {}).startswith("u-") and len(hub_name(SUB, {})) == 18
    assert hub_name(SUB, {SUB: "alice"}) == "alice"
    assert hub_name("0" + SUB, {SUB: "alice"}) != "alice"


@pytest.mark.parametrize(
    "sub, accepted",
    [
        (SUB, True),
        (SUB.upper(), True),
        ("test@myaccessid.org", False),
        ("", False),
        (None, False),
        (["list"], False),
        ("3f2a@evil.example", False),
        ("3f2a@myaccessid.org\n", True),
        ("a" * 300 + "@myaccessid.org", False),
    ],
)
def test_only_identifiers_of_the_providers_form_are_accepted(sub, accepted):
    assert sub_accepted(sub, MYACCESSID, ("test@myaccessid.org",), fold_case=True) is accepted


def test_groups_come_from_entitlements_under_the_prefix_only():
    claims = [
        PREFIX + "workbench#myaccessid.org",
        PREFIX + "course-ws01:role=instructor#myaccessid.org",
        PREFIX + "lumi:project_465000123#myaccessid.org",
        "urn:geant:other.org:group:bcai:admins#other.org",
        PREFIX + "Bad Name!#x",
        PREFIX + "x" * 80,
        42,
        PREFIX + "admins#myaccessid.org",
    ]
    assert groups_from_entitlements(claims, PREFIX) == {
        "workbench",
        "course-ws01",
        "course-ws01=instructor",
        "lumi.project_465000123",
        "admins",
    }
    assert groups_from_entitlements(PREFIX + "workbench#a", PREFIX) == {"workbench"}
    assert groups_from_entitlements({"not": "a list"}, PREFIX) == set() == groups_from_entitlements(claims, "")


def test_no_subgroup_role_or_other_authority_spells_a_configured_group():
    forged = [
        PREFIX + "workbench:admins#myaccessid.org",
        PREFIX + "workbench:role=admins#myaccessid.org",
        PREFIX + "workbench.admins#myaccessid.org",
        PREFIX + "admins#evil.example",
        PREFIX + "admins",
    ]
    groups = groups_from_entitlements(forged, PREFIX, ("myaccessid.org",))
    assert "admins" not in groups and "workbench-admins" not in groups
    assert groups == {"workbench", "workbench.admins", "workbench=admins"}


def authenticator(**config):
    a = oidc.WorkbenchOAuthenticator(
        entitlement_prefix=PREFIX,
        sub_pattern=MYACCESSID,
        fold_case=True,
        refused_subs=["test@myaccessid.org"],
        manage_groups=True,
        allowed_groups={"workbench"},
        admin_groups={"admins"},
        **config,
    )
    return a


def model(name, *groups):
    return {"name": name, "groups": list(groups), "auth_state": {}, "admin": None}


def test_login_admits_members_of_allowed_or_admin_groups_and_refuses_odd_identifiers():
    a = authenticator(people={SUB: "alice"}, admin_users={"alice"})
    assert a.user_info_to_username({"sub": SUB, "email": "x@y"}) == "alice"
    assert a.user_info_to_username({"sub": "test@myaccessid.org"}) == oidc.REFUSED
    assert a.user_info_to_username({"email": "alice@example.org"}) == oidc.REFUSED
    check = lambda name, *groups: asyncio.run(a.check_allowed(name, model(name, *groups)))  # noqa: E731
    assert check("alice", "workbench") and check("bob", "admins")
    assert not check("erin") and not check("erin", "course-ws01") and not check(oidc.REFUSED, "workbench")
    assert not check("alice")  # a listed admin the provider no longer puts in any group
    assert a.get_user_groups({"oauth_user": {"eduperson_entitlement": [PREFIX + "workbench#m"]}}) == {"workbench"}
    assert a.get_user_groups({}) == set()


def test_a_refresh_that_drops_the_last_allowed_group_or_names_someone_else_asks_for_a_new_login(monkeypatch):
    from tornado.httpclient import HTTPClientError

    a = authenticator()
    answers = iter(
        [
            model("carol", "workbench"),
            model("carol", "course-ws02"),
            model("dave", "workbench"),
            False,
            HTTPClientError(502),
            ConnectionRefusedError(),
        ]
    )

    async def refreshed(self, user, handler=None, **kwargs):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(oidc.GenericOAuthenticator, "refresh_user", refreshed)
    carol = SimpleNamespace(name="carol")
    assert asyncio.run(a.refresh_user(carol))["groups"] == ["workbench"]
    assert asyncio.run(a.refresh_user(carol)) is False
    assert asyncio.run(a.refresh_user(carol)) is False
    assert asyncio.run(a.refresh_user(carol)) is False
    # a provider that fails or does not answer keeps the current login (and the servers' token checks)
    assert asyncio.run(a.refresh_user(carol)) is True and asyncio.run(a.refresh_user(carol)) is True


BASE = {
    "bind_url": "http://127.0.0.1:8000/",
    "hub_port": 8081,
    "proxy_api_port": 8001,
    "state_dir": "/s",
    "secrets_dir": "/k",
    "venv_dir": "/v",
    "demo_users": ["alice"],
    "sites": ["local"],
    "default_site": "local",
}
OIDC = {
    "authorize_url": "https://proxy.myaccessid.org/OIDC/authorization",
    "token_url": "https://proxy.myaccessid.org/OIDC/token",
    "userdata_url": "https://proxy.myaccessid.org/OIDC/userinfo",
    "client_id": "aifa-workbench",
    "entitlement_prefix": PREFIX,
    "allowed_groups": ["workbench"],
}


@pytest.mark.parametrize(
    "oidc_section, error",
    [
        (None, "oidc: login: oidc needs an oidc section"),
        ({**OIDC, "scopes": ["email"]}, "oidc.scopes"),
        ({**OIDC, "entitlement_prefix": "urn:x:group:bcai"}, "oidc.entitlement_prefix"),
        ({**OIDC, "sub_pattern": "(["}, "oidc.sub_pattern: not a regular expression"),
        ({**OIDC, "people": {SUB: "alice", "x@myaccessid.org": "alice"}}, "alice is given to more than one identity"),
        ({**OIDC, "fold_case": True, "people": {SUB: "alice", SUB.upper(): "bob"}}, "listed twice"),
        ({**OIDC, "people": {SUB: "Alice; rm"}}, "oidc.people"),
        ({**OIDC, "allowed_groups": []}, "oidc.allowed_groups"),
    ],
)
def test_an_oidc_section_the_hub_cannot_use_stops_it_with_the_key_and_reason(oidc_section, error, tmp_path):
    data = {**BASE, "login": "oidc", **({"oidc": oidc_section} if oidc_section else {})}
    with pytest.raises(SettingsError, match=error.replace("(", r"\(").replace("[", r"\[")):
        validate(data, tmp_path / "workbench.yaml")
    validate({**BASE, "login": "oidc", "oidc": OIDC}, tmp_path / "workbench.yaml")


def test_site_accounts_the_provider_names_reach_the_registry_for_admitted_people_only(tmp_path):
    from aifa_workbench.hub_config.runtime import Workbench
    from aifa_workbench.hub_config.site_accounts.registry import SiteAccounts

    registry = SiteAccounts({}, tmp_path / "site-accounts.json")
    runtime = Workbench(
        settings=None,
        sites={},
        identities=None,
        controls=None,
        site_accounts=registry,
        courses=None,
        hub_egress=(),
        support="",
    )
    a = authenticator(site_systems={"jupiter": "jupiter"}, workbench=runtime)

    def login(name, *entitlements):
        state = {
            "oauth_user": {
                "eduperson_entitlement": list(entitlements),
                "hpc_infos_attribute": [f"{name}1,jupiter,jsc_ai"],
            }
        }
        asyncio.run(a.update_auth_model({"name": name, "auth_state": state, "admin": None}))

    login("bob", PREFIX + "workbench#myaccessid.org")
    login("erin")  # in no allowed group: nothing kept
    assert registry.get("bob") == {"jupiter": {"username": "bob1", "accounts": ["jsc_ai"]}}
    assert registry.get("erin") is None
