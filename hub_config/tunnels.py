"""`aifa-workbench tunneld`: the tunnel daemon of forward-reach sites (sites.tunneld), wired to
the hub's settings, catalogue and key store. Runs as the hub's user, beside the proxy
(aifa-hubctl starts it; a deployment may give it a systemd unit of its own)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.model.settings import Settings
from aifa_workbench.sites.hub_api_tls import HubApiRelay, ensure_certificates
from aifa_workbench.hub_config.site_accounts.registry import registry_of
from aifa_workbench.sites.registry import Identities
from aifa_workbench.sites.ssh import LoginNode, SshRunner
from aifa_workbench.sites.tunneld import ForwardStore, TunnelDaemon

from aifa_workbench.hub_config.site_keys.store import SiteKeyStore

# A dead link is noticed after 2 s x 3 keepalives; logins are tried again at once, with pauses
# of at most a second, so a healed network carries the forwards again within about a second.
SSH_OPTIONS = {"keepalive_interval": 2.0, "keepalive_count_max": 3, "connect_timeout": 3.0, "max_backoff": 1.0}


def socket_path(settings: Settings) -> Path:
    return settings.state_dir / "tunneld.sock"


def forward_sites(settings: Settings) -> dict:
    sites = load_catalogue(settings.catalogue_dir, settings.sites)
    return {name: site for name, site in sites.items() if site.reach is not None and site.reach.mode == "forward"}


def build_daemon(settings: Settings, hub_api_relay: str, hub_api_ca: str) -> TunnelDaemon:
    sites = forward_sites(settings)
    identities = Identities(
        registry_of(settings), SiteKeyStore(settings.state_dir / "site-keys", settings.secret("site-keys-secret"))
    )
    runners = {}
    for name, site in sites.items():

        def credential_of(user, site=site):
            return identities.credential(user, site)

        login = LoginNode(site.login.host, site.login.port, site.login.host_keys)
        runners[name] = SshRunner(site.title, login, credential_of, **SSH_OPTIONS)
    store = ForwardStore(settings.state_dir / "tunnels.sqlite")
    return TunnelDaemon(
        runners, store, hub_api_relay, {name: site.reach.hub_forward_host for name, site in sites.items()}, hub_api_ca
    )


async def serve(settings: Settings) -> None:
    lock = open(settings.state_dir / "tunneld.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one daemon per database and socket
    except BlockingIOError:
        raise SystemExit(f"aifa-workbench tunneld: another tunnel daemon runs for {settings.state_dir}") from None
    hosts = [site.reach.hub_forward_host for site in forward_sites(settings).values()]
    certificates = ensure_certificates(settings.state_dir / "hub-api-tls", hosts or ["localhost"])
    relay = await HubApiRelay(certificates, settings.hub_port).start(settings.state_dir / "hub-api-relay.sock")
    daemon = build_daemon(settings, str(relay), certificates.ca_pem)
    path = socket_path(settings)
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o077)  # the socket: the hub's user only
    try:
        server = await asyncio.start_unix_server(daemon.serve_client, str(path))
    finally:
        os.umask(old_umask)
    logging.getLogger(__name__).info(
        "Tunnel daemon listening on %s, %d forwards to make", path, len(daemon.store.forwards())
    )
    async with server:
        await asyncio.gather(server.serve_forever(), daemon.watch())


def main(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s tunneld] %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
