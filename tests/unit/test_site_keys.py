"""The hub's SSH keys for its users: one per (user, site), encrypted at rest, private."""

import stat

import pytest

from aifa_workbench.hub_config.site_keys.store import SiteKeyError, SiteKeyStore


def test_a_key_is_made_once_per_user_and_site_and_kept_encrypted(tmp_path):
    store = SiteKeyStore(tmp_path, "secret-one")
    public = store.public_key("alice", "lumi")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" aifa-workbench:alice@lumi")
    assert store.public_key("alice", "lumi") == public  # the same key again
    assert store.public_key("alice", "jupiter") != public  # one per site
    assert store.public_key("bob", "lumi") != public  # one per user
    path = tmp_path / "alice" / "lumi.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" not in path.read_bytes()  # encrypted at rest
    assert SiteKeyStore(tmp_path, "secret-one").public_key("alice", "lumi") == public


def test_another_secret_cannot_read_the_keys(tmp_path):
    SiteKeyStore(tmp_path, "secret-one").private_key("alice", "lumi")
    with pytest.raises(SiteKeyError, match="alice/lumi.key: cannot be read"):
        SiteKeyStore(tmp_path, "secret-two").private_key("alice", "lumi")


def test_names_that_are_not_plain_tokens_make_no_path(tmp_path):
    store = SiteKeyStore(tmp_path, "s")
    for user, site in (("../root", "lumi"), ("alice", "x/../../y"), ("Alice", "lumi")):
        with pytest.raises(ValueError):
            store.private_key(user, site)


def test_a_replaced_key_differs(tmp_path):
    store = SiteKeyStore(tmp_path, "s")
    old = store.public_key("alice", "lucia")
    store.replace("alice", "lucia")
    assert store.public_key("alice", "lucia") != old
