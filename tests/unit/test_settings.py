import pytest
import yaml

from aifa_workbench.model.settings import SettingsError, load_settings

GOOD = {
    "bind_url": "http://127.0.0.1:8000/",
    "hub_port": 8081,
    "proxy_api_port": 8001,
    "state_dir": "/var/lib/aifa-workbench",
    "secrets_dir": "/etc/aifa-workbench/secrets",
    "venv_dir": "/opt/aifa-workbench/venv",
    "demo_users": ["alice", "bob"],
    "admin_users": ["alice"],
    "sites": ["local", "lumi"],
    "default_site": "local",
    "site_users": {"alice": {"lumi": {"username": "alicelum", "accounts": ["project_465000123"]}}},
}


def write(tmp_path, data):
    path = tmp_path / "workbench.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_good_settings_load(tmp_path):
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.hub_port == 8081 and settings.demo_users == ("alice", "bob")
    assert settings.support_contact == "your trainer, or the BE-AIFA support desk"
    assert (
        load_settings(write(tmp_path, {**GOOD, "support_contact": "help@aifa.be, +32 2 000 00 00"})).support_contact
        == "help@aifa.be, +32 2 000 00 00"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hub_port": 0}, "hub_port: 0 is less than the minimum of 1."),
        ({"demo_users": ["Alice Smith"]}, "demo_users.0: 'Alice Smith' does not match"),
        ({"admin_users": ["mallory"]}, "admin_users: mallory must also be listed in demo_users."),
        ({"bind_url": "ftp://x/"}, "bind_url: 'ftp://x/' does not match"),
        ({"extra": 1}, "(top level): Additional properties are not allowed ('extra' was unexpected)."),
        ({"default_site": "lucia"}, "default_site: 'lucia' is not one of the enabled sites (local, lumi)."),
        (
            {"site_users": {"alice": {"lumi": {"username": "alice lum"}}}},
            "site_users.alice.lumi.username: 'alice lum' does not match",
        ),
        ({"site_users": {"alice": {"lumi": {"username": "-oProxyCommand=x"}}}}, "site_users.alice.lumi.username:"),
        (
            {"site_users": {"alice": {"lumi": {"username": "a", "accounts": ["p;id"]}}}},
            "site_users.alice.lumi.accounts.0: 'p;id' does not match",
        ),
        (
            {"site_users": {"alice": {"lumi": {"accounts": ["p"]}}}},
            "site_users.alice.lumi: 'username' is a required property.",
        ),
        ({"support_contact": "<script>x</script>"}, "support_contact: '<script>x</script>' does not match"),
        ({"support_contact": ""}, "support_contact: '' should be non-empty"),
    ],
)
def test_bad_settings_name_file_key_and_reason(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_key(tmp_path):
    data = dict(GOOD)
    del data["venv_dir"]
    with pytest.raises(SettingsError, match="'venv_dir' is a required property"):
        load_settings(write(tmp_path, data))


def test_not_yaml(tmp_path):
    with pytest.raises(SettingsError, match="not valid YAML at line 2"):
        load_settings(write(tmp_path, "hub_port: [1,\n"))


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="cannot read the settings file"):
        load_settings(tmp_path / "nope.yaml")
