"""The idioms every layer shares, written once: atomic writes (model/files.py), YAML files with
located errors (model/yaml_files.py), TTL caches (model/ttl_cache.py) and who a user is on a site
(sites.registry.Identities.site_account)."""

import os
import stat

import pytest

from aifa_workbench.model.files import write_atomically
from aifa_workbench.model.ttl_cache import MISSING, TtlCache
from aifa_workbench.model.yaml_files import check_schema, load_yaml
from aifa_workbench.sites.registry import Identities


class Located(ValueError):
    pass


# --- write_atomically -------------------------------------------------------------------------
def test_a_file_is_replaced_whole_with_its_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomically(path, "new ✓", fsync=True)
    assert path.read_text(encoding="utf-8") == "new ✓" and os.listdir(tmp_path) == ["state.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomically(path, b"\x00bytes", mode=0o640)
    assert path.read_bytes() == b"\x00bytes" and stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()


def test_without_replace_an_existing_file_is_kept_and_said(tmp_path):
    path = tmp_path / "8001"
    write_atomically(path, "first\n", replace=False)
    with pytest.raises(FileExistsError):
        write_atomically(path, "second\n", replace=False)
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["8001"]
    assert path.stat().st_nlink == 1


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "note.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(path, 42)
    with pytest.raises(OSError):
        write_atomically(tmp_path / "missing-folder" / "x", "data")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["note.json"]


def test_a_link_at_the_path_is_replaced_not_followed(tmp_path):
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_text("kept")
    link.symlink_to(target)
    write_atomically(link, "new")
    assert target.read_text() == "kept" and not link.is_symlink() and link.read_text() == "new"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):  # a claim is never made through a link
        write_atomically(dangling, "x", replace=False)
    assert not (tmp_path / "nowhere").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- load_yaml / check_schema ---------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "integer", "minimum": 1},
        "users": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}},
        "billing": {"oneOf": [{"type": "object", "required": ["kind"]}, {"type": "number"}]},
    },
}


def test_yaml_errors_name_the_file_the_line_and_the_reason(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("port: [1,\n")
    with pytest.raises(Located, match=rf"^{path}: not valid YAML at line 2: "):
        load_yaml(path, Located)
    with pytest.raises(Located, match=rf"^{tmp_path}/nope.yaml: cannot read the settings file \("):
        load_yaml(tmp_path / "nope.yaml", Located, "the settings file")
    path.write_text("port: 8\n")
    assert load_yaml(path, Located) == {"port": 8}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"port": 0}, "port: 0 is less than the minimum of 1."),
        ({"port": 1, "users": ["ok", "Not OK"]}, "users.1: 'Not OK' does not match '^[a-z]+$'."),
        ({"port": 1, "extra": 2}, "(top level): Additional properties are not allowed ('extra' was unexpected)."),
        ({}, "(top level): 'port' is a required property."),
        (None, "(top level): None is not of type 'object'."),
        ({"port": 1, "billing": "x"}, "billing: 'x' is not of type 'number'; or 'x' is not of type 'object'."),
        ({"port": "1", "users": [1]}, "port: '1' is not of type 'integer'."),  # the first key in order
    ],
)
def test_schema_errors_name_the_file_the_key_path_and_the_reason(data, message):
    with pytest.raises(Located) as info:
        check_schema(data, SCHEMA, "/etc/x.yaml", Located)
    assert str(info.value) == f"/etc/x.yaml: {message}"


def test_valid_data_passes():
    check_schema({"port": 1, "users": ["a"], "billing": 2}, SCHEMA, "x.yaml", Located)


# --- TtlCache -----------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_an_entry_lives_its_ttl_and_no_longer():
    clock = Clock()
    cache = TtlCache(60, clock)
    assert cache.get("job") is MISSING and cache.get("job", {}) == {}
    cache.put("job", None)  # None is a value, not a miss
    clock.now += 59.9
    assert cache.get("job", "miss") is None
    clock.now += 0.1
    assert cache.get("job", "miss") == "miss"


def test_a_ttl_per_entry_max_age_and_forgetting():
    clock = Clock()
    cache = TtlCache(clock=clock)
    cache.put("accounts", ("a",), ttl=300)
    cache.put("other", 1)  # no ttl: expired at once
    clock.now += 5
    assert cache.get("accounts") == ("a",) and cache.get("other") is MISSING
    assert cache.get("accounts", max_age=2) is MISSING and cache.get("accounts", max_age=6) == ("a",)
    cache.forget("accounts")
    cache.forget("never there")
    assert cache.get("accounts") is MISSING
    cache.put("x", 1, 10)
    cache.clear()
    assert cache.get("x") is MISSING


# --- who a user is on a site ----------------------------------------------------------------------
def test_a_users_site_account_and_username_come_from_one_lookup():
    identities = Identities({"alice": {"lumi": {"username": "alicelum", "accounts": ["project_1"]}}}, key_store=None)
    assert identities.site_account("alice", "lumi") == {"username": "alicelum", "accounts": ["project_1"]}
    assert identities.site_username("alice", "lumi") == "alicelum"
    assert identities.site_account("alice", "lucia") == {} and identities.site_account("bob", "lumi") == {}
    assert identities.site_username("bob", "lumi") is None
