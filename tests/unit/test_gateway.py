"""Reverse reach: the gateway's port grants (one port per server, never two servers on one) and
the job's credential (a certificate for its grant's key id, port forwarding only, short-lived)."""

import os
import subprocess
import sys
import time

import pytest

from aifa_workbench.extensions import reverse_tunnel
from aifa_workbench.sites import gateway


def test_grants_never_give_one_port_twice_and_end_when_the_range_is_full(tmp_path):
    grants = [gateway.grant_port(str(tmp_path), (42000, 42004)) for _ in range(5)]
    assert sorted(g.port for g in grants) == list(range(42000, 42005))
    for g in grants:
        assert (tmp_path / str(g.port)).read_text().strip() == g.key_id
        assert gateway.KEY_ID.fullmatch(g.key_id) and g.key_id.startswith(f"aifa-{g.port}-")
    with pytest.raises(gateway.NoFreePort):
        gateway.grant_port(str(tmp_path), (42000, 42004))
    assert gateway.revoke(str(tmp_path), grants[0])
    again = gateway.grant_port(str(tmp_path), (42000, 42004))
    assert again.port == grants[0].port and again.key_id != grants[0].key_id


def test_revoking_an_old_grant_leaves_the_ports_new_holder_alone(tmp_path):
    old = gateway.grant_port(str(tmp_path), (42000, 42000))
    assert gateway.revoke(str(tmp_path), old)
    new = gateway.grant_port(str(tmp_path), (42000, 42000))
    assert not gateway.revoke(str(tmp_path), old)  # e.g. a stop after a hub restart, late
    assert gateway.granted_ports(str(tmp_path)) == {42000: new.key_id}


def test_a_grant_is_read_back_from_state_only_when_its_port_and_key_id_agree():
    good = gateway.Grant(42001, "aifa-42001-0123456789abcdef")
    assert gateway.Grant.from_state(good.as_state()) == good
    for bad in (
        {"port": 42002, "key_id": good.key_id},
        {"port": "42001", "key_id": good.key_id},
        {"port": 42001, "key_id": "aifa-42001-x; rm -rf /"},
        None,
        "42001",
    ):
        assert gateway.Grant.from_state(bad) is None


def test_the_jobs_certificate_permits_forwarding_only_for_its_key_id_and_expires(tmp_path):
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    grant = gateway.Grant(42007, "aifa-42007-0123456789abcdef")
    credential = gateway.job_credential(str(ca), grant, valid_seconds=3600)
    assert "PRIVATE KEY" in credential.private_key
    (tmp_path / "cert.pub").write_text(credential.certificate)
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(tmp_path / "cert.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert f'Key ID: "{grant.key_id}"' in shown
    principals = shown.split("Principals:")[1].split("Critical Options:")[0].split()
    extensions = shown.split("Extensions:")[1].split()
    assert principals == [grant.key_id]
    assert set(extensions) - {"no-touch-required"} == {"permit-port-forwarding"}  # (that one is for FIDO keys)
    valid_to = shown.split("Valid:")[1].split(" to ")[1].split()[0]  # local time, to the second
    left = time.mktime(time.strptime(valid_to, "%Y-%m-%dT%H:%M:%S")) - time.time()
    assert 3500 < left <= 3600
    ca_fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(ca)], capture_output=True, text=True).stdout.split()[
        1
    ]
    assert ca_fingerprint in shown.split("Signing CA:")[1].splitlines()[0]


def test_the_gateways_host_key_is_pinned_with_its_port(tmp_path):
    key = tmp_path / "host.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample host\n")
    assert (
        gateway.known_hosts_line("hub-gateway", 2222, str(key))
        == "[hub-gateway]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
    )


def test_the_jobs_tunnel_asks_for_its_granted_port_only_with_the_key_in_files(tmp_path):
    env = {
        "AIFA_TUNNEL_GATEWAY": "aifa-tunnel@hub-gateway",
        "AIFA_TUNNEL_GATEWAY_PORT": "2222",
        "AIFA_TUNNEL_PORT": "42007",
    }
    argv = reverse_tunnel.ssh_argv(tmp_path, env, 35001)
    assert argv[-3:] == ["-R", "127.0.0.1:42007:127.0.0.1:35001", "aifa-tunnel@hub-gateway"]
    assert "StrictHostKeyChecking=yes" in argv and "ExitOnForwardFailure=yes" in argv
    assert not any("PRIVATE" in a for a in argv)
    path = reverse_tunnel.write_private(tmp_path, "key", "secret")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_the_jobs_tunnel_dials_again_sooner_after_a_long_session_and_never_in_step_with_others():
    assert reverse_tunnel.retry_delay(0, lambda lo, hi: lo) == pytest.approx(0.1)
    assert reverse_tunnel.retry_delay(99, lambda lo, hi: hi) == pytest.approx(3.0)  # the longest wait
    delays = {round(reverse_tunnel.retry_delay(2), 6) for _ in range(50)}
    assert len(delays) > 40 and all(0.5 <= d <= 1.5 for d in delays)


def test_the_workbenchs_commands_print_no_dsa_warnings_from_asyncssh():
    quiet = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            "-c",
            "import aifa_workbench.hub_config.cli, aifa_workbench.sites.tunneld, aifa_workbench.hub_config.site_keys.store",
        ],
        capture_output=True,
        text=True,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "DSA" not in quiet.stderr, quiet.stderr
