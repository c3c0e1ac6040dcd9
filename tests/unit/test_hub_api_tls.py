"""Forward reach: a job's calls to the hub through the login node's port are TLS, trusting the
hub's own CA alone, so whoever takes that port while the tunnel is down never gets a token.
(End to end through the simulated JUPITER: tests/integration/test_remote_spawn.py.)"""
import asyncio
import os
import ssl
import stat
import subprocess
import sys
import threading

import pytest

from aifa_workbench.extensions import job_report
from aifa_workbench.sites.hub_api_tls import HubApiRelay, ensure_certificates

TOKEN = "secret-token-of-the-job"


def test_the_ca_is_made_once_and_the_server_certificate_follows_the_login_node_names(tmp_path):
    first = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    again = ensure_certificates(tmp_path / "tls", ["jpbl-login01"])
    assert first == again and first.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    server_pem = first.cert_file.read_bytes()
    grown = ensure_certificates(tmp_path / "tls", ["jpbl-login01", "lucia-login", "10.0.0.7"])
    assert grown.ca_pem == first.ca_pem                 # running jobs keep trusting the hub
    assert grown.cert_file.read_bytes() != server_pem
    for path in (tmp_path / "tls").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for host in ("jpbl-login01", "lucia-login", "10.0.0.7"):
        ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem")   # loads
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
    env = {"JUPYTERHUB_API_URL": f"https://localhost:{port}/hub/api", "JUPYTERHUB_API_TOKEN": TOKEN,
           "AIFA_WORKBENCH_HUB_CA": str(ca_file)}
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
    assert await post_report_to(await relay.start(), ca_file) == 202
    assert TOKEN.encode() in hub.received

    for squatter in (Listener(), Listener(self_signed_context(tmp_path))):
        assert await post_report_to(await squatter.start(), ca_file) == 0
        assert TOKEN.encode() not in squatter.received and b"Authorization" not in squatter.received


def test_jupyterlab_trusts_the_hubs_ca_alone_and_its_kernels_the_nodes_usual_trust(tmp_path):
    """JupyterHub's single-user code calls the hub with aiohttp; the job starts the server with
    SSL_CERT_FILE naming the CA, and the server extension takes it out of what kernels inherit."""
    certificates = ensure_certificates(tmp_path / "tls", ["localhost"])
    ready = threading.Event()
    ports: dict = {}

    def serve():
        async def main():
            hub = Listener()
            relay = HubApiRelay(certificates, await hub.start())
            ports["relay"] = await relay.start()
            ports["squatter"] = await Listener(self_signed_context(tmp_path)).start()
            ready.set()
            await asyncio.sleep(30)
        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    ca_file = str(tmp_path / "tls" / "ca.pem")
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
        "print(asyncio.run(get(int(sys.argv[1]))), asyncio.run(get(int(sys.argv[2]))), os.environ.get('SSL_CERT_FILE'))\n"
    )
    env = dict(os.environ, AIFA_WORKBENCH_HUB_CA=ca_file, SSL_CERT_FILE=ca_file)
    out = subprocess.run([sys.executable, "-c", probe, str(ports["relay"]), str(ports["squatter"])], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    relayed, squatted, left_for_kernels = out.stdout.split()
    assert relayed == "202"
    assert squatted == "ClientConnectorCertificateError"
    assert left_for_kernels == "None"


@pytest.mark.parametrize("env", [{}, {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
                                 {"AIFA_WORKBENCH_HUB_CA": "/x/ca.pem", "SSL_CERT_FILE": "/y.pem"}])
def test_other_jobs_keep_their_ssl_cert_file(env):
    from aifa_workbench.extensions.server_extension import keep_the_hubs_ca_to_this_process

    environ = dict(env)
    assert not keep_the_hubs_ca_to_this_process(environ) and environ == env
