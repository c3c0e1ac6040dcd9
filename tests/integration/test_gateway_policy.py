"""The tunnel gateway's policy, proven against the running gateway (ansible role tunnel_gateway)
from inside the simulated LUMI, whose firewall is closed like the real one: a job's certificate
lets it listen on its own granted port and nothing else."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from aifa_workbench.sites import gateway

from .sim_sites import SITE_PYTHON, in_site, on_site_fs, site_argv, site_is_up

pytestmark = pytest.mark.sites

GRANTS = "/var/lib/aifa-tunnel-grants"
PORTS = (42000, 42999)
CA = "/etc/aifa-workbench/secrets/tunnel-ca"
HOST_KEY = "/etc/aifa-workbench/gateway/ssh_host_ed25519_key.pub"
NOTEBOOK = 18888  # a stand-in server on the LUMI node, bound to every address


@pytest.fixture(scope="module")
def lumi_notebook():
    if not site_is_up("lumi"):
        pytest.fail("the simulated site lumi is not up: run `make sites`")
    server = subprocess.Popen(
        # a server on the site, by the site's own Python (its module's)
        [
            *site_argv("lumi"),
            SITE_PYTHON["lumi"],
            "-m",
            "http.server",
            str(NOTEBOOK),
            "--bind",
            "0.0.0.0",
            "--directory",
            "/tmp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while in_site("lumi", ["timeout", "1", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{NOTEBOOK}"]).returncode:
        assert time.monotonic() < deadline, "the stand-in server on the LUMI node did not start"
        time.sleep(0.2)
    yield
    server.terminate()
    server.wait()


class Job:
    """A job's credential files, as the job's tunnel writes them (root's here: only the gateway's
    policy is under test)."""

    def __init__(self, site_path: str, valid_seconds: int = 600):
        self.grant = gateway.grant_port(GRANTS, PORTS)
        credential = gateway.job_credential(CA, self.grant, valid_seconds)
        directory = on_site_fs("lumi", site_path)  # on LUMI's scratch, where the site's ssh reads them
        directory.mkdir(mode=0o700)
        self.dir, self.site_dir = directory, Path(site_path)
        for name, text in (
            ("key", credential.private_key),
            ("key-cert.pub", credential.certificate),
            ("known_hosts", gateway.known_hosts_line("hub-gateway", 2222, HOST_KEY)),
        ):
            (directory / name).write_text(text if text.endswith("\n") else text + "\n")
            (directory / name).chmod(0o600)

    def ssh(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return in_site("lumi", ["ssh", *job_ssh_options(self), *args, "aifa-tunnel@hub-gateway"], timeout=timeout)

    def revoke(self) -> None:
        gateway.revoke(GRANTS, self.grant)


@pytest.fixture
def jobs():
    import shutil
    import uuid

    made = []

    def make(valid_seconds: int = 600) -> Job:
        made.append(Job(f"/scratch/gateway-test-{uuid.uuid4().hex[:8]}", valid_seconds))
        return made[-1]

    yield make
    for job in made:
        job.revoke()
        shutil.rmtree(job.dir, ignore_errors=True)


def answers(host: str, port: int, timeout: float = 2) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


def holds_forward(job: Job, port: int, seconds: float = 8) -> bool:
    """Whether `ssh -N -R 127.0.0.1:port:...` holds a listener on the gateway host."""
    process = background_ssh(job, "-N", "-R", f"127.0.0.1:{port}:127.0.0.1:{NOTEBOOK}")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and process.poll() is None:
            if answers("127.0.0.1", port, 0.5):
                return True
            time.sleep(0.2)
        return False
    finally:
        process.terminate()
        process.wait()


def background_ssh(job: Job, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*site_argv("lumi"), "ssh", *job_ssh_options(job), *args, "aifa-tunnel@hub-gateway"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def job_ssh_options(job: Job) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-p",
        "2222",
        "-i",
        str(job.site_dir / "key"),
        "-o",
        f"CertificateFile={job.site_dir / 'key-cert.pub'}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={job.site_dir / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ConnectTimeout=5",
    ]


def test_the_site_is_closed_but_for_its_login_node_and_its_nodes_dial_only_the_gateway(lumi_notebook):
    assert answers("10.77.1.2", 22)
    assert not answers("10.77.1.2", NOTEBOOK), "a server on the LUMI node answered the hub's side"
    assert not answers("10.77.1.2", 6818), "the node's slurmd answered the hub's side"
    decoy = socket.create_server(("0.0.0.0", 0))
    try:
        # the site's shell dials (LUMI has no python3 on its PATH)
        dial = 'exec 3<>"/dev/tcp/$0/$1"'
        assert in_site("lumi", ["timeout", "3", "bash", "-c", dial, "hub-gateway", "2222"]).returncode == 0
        port = str(decoy.getsockname()[1])
        assert in_site("lumi", ["timeout", "3", "bash", "-c", dial, "hub-gateway", port]).returncode != 0
    finally:
        decoy.close()


def test_a_job_listens_on_its_own_port_and_the_notebook_answers_through_it(lumi_notebook, jobs):
    job = jobs()
    assert holds_forward(job, job.grant.port)


def test_another_jobs_port_and_port_zero_are_refused(lumi_notebook, jobs):
    job, other = jobs(), jobs()
    for port in (other.grant.port, 0):
        done = job.ssh("-N", "-R", f"127.0.0.1:{port}:127.0.0.1:{NOTEBOOK}")
        assert done.returncode == 255 and "remote port forwarding failed" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "forward",
    [["-W", "127.0.0.1:8081"], ["-W", "127.0.0.1:2222"], ["-W", "10.77.1.1:22"]],
    ids=["hub-api", "gateway-itself", "hub-host-sshd"],
)
def test_local_forwarding_to_anything_is_refused(lumi_notebook, jobs, forward):
    done = jobs().ssh(*forward)
    assert done.returncode == 255 and "administratively prohibited" in done.stderr, done.stderr


def test_a_job_cannot_reach_another_jobs_notebook_through_the_gateway(lumi_notebook, jobs):
    job, other = jobs(), jobs()
    holder = background_ssh(other, "-N", "-R", f"127.0.0.1:{other.grant.port}:127.0.0.1:{NOTEBOOK}")
    try:
        deadline = time.monotonic() + 8
        while not answers("127.0.0.1", other.grant.port, 0.5):
            assert time.monotonic() < deadline, "the other job's tunnel did not open"
            time.sleep(0.2)
        done = job.ssh("-W", f"127.0.0.1:{other.grant.port}")
        assert done.returncode == 255 and "administratively prohibited" in done.stderr, done.stderr
        done = job.ssh("-W", f"localhost:{other.grant.port}")
        assert done.returncode == 255 and "administratively prohibited" in done.stderr, done.stderr
    finally:
        holder.terminate()
        holder.wait()


def test_dynamic_forwarding_a_unix_socket_a_shell_and_a_tty_are_refused(lumi_notebook, jobs):
    job = jobs()
    socks = background_ssh(job, "-N", "-D", "127.0.0.1:19080")
    try:
        time.sleep(2)
        through = in_site("lumi", ["curl", "-sS", "-m", "5", "--socks5", "127.0.0.1:19080", "http://127.0.0.1:8081/"])
        assert through.returncode != 0
    finally:
        socks.terminate()
        socks.wait()
    done = job.ssh("-N", "-R", f"/tmp/aifa-gw-{job.grant.port}.sock:127.0.0.1:{NOTEBOOK}")
    assert done.returncode == 255 and "remote port forwarding failed" in done.stderr, done.stderr
    shell = job.ssh("id")
    assert shell.returncode != 0 and "uid=" not in shell.stdout
    tty = job.ssh("-tt", "id")
    assert "uid=" not in tty.stdout and tty.returncode != 0


def test_an_expired_or_revoked_credential_and_a_plain_key_are_refused(lumi_notebook, jobs):
    expired = jobs(valid_seconds=-60)
    done = expired.ssh("-N", "-R", f"127.0.0.1:{expired.grant.port}:127.0.0.1:{NOTEBOOK}")
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr
    revoked = jobs()
    revoked.revoke()
    done = revoked.ssh("-N", "-R", f"127.0.0.1:{revoked.grant.port}:127.0.0.1:{NOTEBOOK}")
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr
    plain = jobs()
    (plain.dir / "key-cert.pub").unlink()
    done = plain.ssh("-N", "-R", f"127.0.0.1:{plain.grant.port}:127.0.0.1:{NOTEBOOK}")
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr
