"""Forward reach: a job's calls to the hub through the login node's port are TLS, trusting the
hub's own CA alone, so whoever takes that port while the tunnel is down never gets a token.
(End to end through the simulated JUPITER: tests/integration/test_remote_spawn.py.)"""

import asyncio
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509

from aifa_workbench.extensions import job_report
from aifa_workbench.extensions.hub_trust import pinned_environment
from aifa_workbench.sites.hub_api_tls import HubApiRelay, ensure_certificates

TOKEN = "secret-token-of-the-job"


def test_the_ca_is_made_once_and_the_server_certificate_follows_the_login_node_names(tmp_path):
    first = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    again = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    assert first == again and first.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    server_pem = first.cert_file.read_bytes()
    grown = ensure_certificates(tmp_path / "tls", ["jpbl-login01", "lucia-login", "10.0.0.7"])
    assert grown.ca_pem == first.ca_pem  # running jobs keep trusting the hub
    assert grown.cert_file.read_bytes() != server_pem
    for path in (tmp_path / "tls").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    names = (
        x509.load_pem_x509_certificate(grown.cert_file.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert set(names.get_values_for_type(x509.DNSName)) == {"jpbl-login01", "lucia-login"}
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    context = ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem")
    assert context.cert_store_stats()["x509_ca"] == 1


class Listener:
    """A TCP listener on 127.0.0.1 (plain, or TLS with `context`) that records what it was sent
    and answers an HTTP 202: the hub, or someone who took the port."""

    def __init__(self, context: ssl.SSLContext | None = None):
        self.context, self.received = context, b""

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer):
        try:
            self.received += await asyncio.wait_for(reader.read(65536), 5)
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()


def self_signed_context(tmp_path, name="localhost") -> ssl.SSLContext:
    """A certificate for the right name from a CA of someone else's."""
    other = ensure_certificates(tmp_path / "other-ca", [name])
    return other.server_context()


async def post_report_to(port: int, ca_file) -> int:
    env = {
        "JUPYTERHUB_API_URL": f"https://localhost:{port}/hub/api",
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "AIFA_WORKBENCH_HUB_CA": str(ca_file),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return await asyncio.to_thread(job_report.post_report, {"event": "ended", "exit_code": 0})
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


async def test_the_relay_carries_the_jobs_call_to_the_hub_and_a_squatter_gets_no_token(tmp_path):
    certificates = ensure_certificates(tmp_path / "tls", ["localhost"])
    ca_file = tmp_path / "tls" / "ca.pem"
    hub = Listener()
    relay = HubApiRelay(certificates, await hub.start())
    assert await post_report_to(await relay.start_tcp(), ca_file) == 202
    assert TOKEN.encode() in hub.received

    for squatter in (Listener(), Listener(self_signed_context(tmp_path))):
        assert await post_report_to(await squatter.start(), ca_file) == 0
        assert TOKEN.encode() not in squatter.received and b"Authorization" not in squatter.received


def test_jupyterlab_trusts_the_hubs_ca_alone_and_its_kernels_the_nodes_usual_trust(tmp_path):
    """JupyterHub's single-user code calls the hub with aiohttp; hub_trust starts the server with
    SSL_CERT_FILE naming the CA (and no CA directory), and the server extension gives kernels
    the node's own trust back."""
    certificates = ensure_certificates(tmp_path / "tls", ["localhost"])
    ready = threading.Event()
    ports: dict = {}

    def serve():
        async def main():
            hub = Listener()
            relay = HubApiRelay(certificates, await hub.start())
            ports["relay"] = await relay.start_tcp()
            ports["squatter"] = await Listener(self_signed_context(tmp_path)).start()
            ready.set()
            await asyncio.sleep(30)

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    ca_file = str(tmp_path / "tls" / "ca.pem")
    # the node's CA directory trusts the squatter's CA (a site CA, say): JupyterLab must not
    node_dir = tmp_path / "node-certs"
    node_dir.mkdir()
    other_ca = tmp_path / "other-ca" / "ca.pem"
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(other_ca)], capture_output=True, text=True, check=True
    ).stdout.strip()
    (node_dir / f"{subject_hash}.0").write_bytes(other_ca.read_bytes())
    probe = (
        "import asyncio, os, sys\n"
        "from aifa_workbench.extensions.server_extension import keep_the_hubs_ca_to_this_process\n"
        "assert keep_the_hubs_ca_to_this_process()\n"
        "import aiohttp\n"
        "async def get(port):\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        try:\n"
        "            async with s.get(f'https://localhost:{port}/hub/api', headers={'Authorization': 'token x'}) as r:\n"
        "                return r.status\n"
        "        except aiohttp.ClientError as e:\n"
        "            return type(e).__name__\n"
        "print(asyncio.run(get(int(sys.argv[1]))), asyncio.run(get(int(sys.argv[2]))),"
        " os.environ.get('SSL_CERT_FILE'), os.environ.get('SSL_CERT_DIR'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
    env.update(AIFA_WORKBENCH_HUB_CA=ca_file, SSL_CERT_DIR=str(node_dir))  # the node's trust
    env = pinned_environment(env)  # as extensions.hub_trust starts JupyterLab
    assert env["SSL_CERT_FILE"] == ca_file and os.listdir(env["SSL_CERT_DIR"]) == []
    out = subprocess.run(
        [sys.executable, "-c", probe, str(ports["relay"]), str(ports["squatter"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    relayed, squatted, file_for_kernels, dir_for_kernels = out.stdout.split()
    assert relayed == "202"
    assert squatted == "ClientConnectorCertificateError"
    assert (file_for_kernels, dir_for_kernels) == ("None", str(node_dir))  # the node's own, back


def test_the_server_certificate_is_made_again_when_it_no_longer_fits(tmp_path):
    first = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    (tmp_path / "tls" / "server.key").write_bytes((tmp_path / "tls" / "ca.key").read_bytes())  # torn write
    again = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    again.server_context()  # key and certificate go together again
    for name in ("ca.key", "ca.pem"):  # the CA lost: a new one, and a new certificate
        (tmp_path / "tls" / name).unlink()
    renewed = ensure_certificates(tmp_path / "tls", ["JPBL-login01"])
    assert renewed.ca_pem != first.ca_pem
    subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "tls" / "ca.pem"), str(renewed.cert_file)],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
        {"AIFA_WORKBENCH_HUB_CA": "/x/ca.pem", "SSL_CERT_FILE": "/y.pem"},
    ],
)
def test_other_jobs_keep_their_ssl_cert_file(env):
    from aifa_workbench.extensions.server_extension import keep_the_hubs_ca_to_this_process

    environ = dict(env)
    assert not keep_the_hubs_ca_to_this_process(environ) and environ == env


def test_hub_trust_keeps_the_nodes_values_and_pins_the_hubs_ca(tmp_path):
    ca = str(tmp_path / "hub-ca-x" / "ca.pem")
    (tmp_path / "hub-ca-x").mkdir()
    env = pinned_environment(
        {
            "AIFA_WORKBENCH_HUB_CA": ca,
            "SSL_CERT_FILE": "/etc/ssl/node.pem",
            "PATH": "/bin",
            "AIFA_WORKBENCH_NODE_SSL_CERT_DIR": "/forged",
        }
    )
    assert env == {
        "AIFA_WORKBENCH_HUB_CA": ca,
        "PATH": "/bin",
        "SSL_CERT_FILE": ca,
        "SSL_CERT_DIR": str(tmp_path / "hub-ca-x" / "no-other-ca"),
        "AIFA_WORKBENCH_NODE_SSL_CERT_FILE": "/etc/ssl/node.pem",
    }
    assert stat.S_IMODE((tmp_path / "hub-ca-x" / "no-other-ca").stat().st_mode) == 0o700


async def test_the_relay_listens_on_a_socket_only_the_hubs_user_reaches(tmp_path):
    certificates = ensure_certificates(tmp_path / "tls", ["localhost"])
    hub = Listener()
    path = await HubApiRelay(certificates, await hub.start()).start(tmp_path / "relay.sock")
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # nobody but the hub's user
    context = ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem")
    reader, writer = await asyncio.open_unix_connection(str(path), ssl=context, server_hostname="localhost")
    writer.write(b"GET /hub/api HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.read(100)).startswith(b"HTTP/1.1 202")
    writer.close()
