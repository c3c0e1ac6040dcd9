"""Admin commands for remote sites, run as the hub's user (they read its secrets and key store):

aifa-workbench user-key USER SITE        the public key the hub holds for USER on SITE
aifa-workbench runtime-key SITE          the public key of the site account that owns the runtime
aifa-workbench install-runtime SITE [ENV] install the job runtime of each environment of SITE (or of
                                         ENV) over SSH, as that account, for the Python it runs
aifa-workbench check-runtime SITE        say whether each environment of SITE runs this hub's runtime
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.model.settings import SettingsError, load_settings
from aifa_workbench.hub_config.site_keys.store import SiteKeyStore, public_key_line
from aifa_workbench.hub_config.wheelhouses import WheelsUnavailable, wheelhouse_for
from aifa_workbench.sites import runtime
from aifa_workbench.sites.background import in_background
from aifa_workbench.sites.commands import CommandTimeout
from aifa_workbench.sites.errors import SiteError
from aifa_workbench.sites.ssh_library import asyncssh
from aifa_workbench.sites.ssh import Credential, LoginNode, SshRunner

WHEELHOUSE = Path("/opt/aifa-workbench/wheelhouse")
RUNTIME_KEY_USER = "runtime"  # the key store entry of the runtime owner (an admin key store of its own)


def _settings(args):
    return load_settings(
        args.settings or os.environ.get("AIFA_WORKBENCH_SETTINGS", "/etc/aifa-workbench/workbench.yaml")
    )


def _site(settings, name: str):
    sites = load_catalogue(settings.catalogue_dir, None)
    if name not in sites or sites[name].transport != "ssh":
        raise SettingsError(f"{name!r} is not a remote site of the catalogue ({', '.join(sorted(sites))})")
    return sites[name]


def _admin_keys(settings) -> SiteKeyStore:
    return SiteKeyStore(settings.state_dir / "admin-keys", settings.secret("site-keys-secret"))


def _owner_runner(settings, site) -> tuple[SshRunner, str]:
    owner = settings.runtime_owners.get(site.name)
    if not owner:
        raise SettingsError(f"{settings.path}: runtime_owners: no site account owns the runtime of {site.name}")
    credential = Credential(owner, _admin_keys(settings).private_key(RUNTIME_KEY_USER, site.name))
    login = LoginNode(site.login.host, site.login.port, site.login.host_keys)
    return SshRunner(site.title, login, lambda _user: credential), owner


def user_key(args) -> int:
    settings = _settings(args)
    site = _site(settings, args.site)
    key = SiteKeyStore(settings.state_dir / "site-keys", settings.secret("site-keys-secret")).public_key(
        args.user, site.name
    )
    print(public_key_line(site, key, settings.hub_egress_addresses))  # as the keys page shows it
    return 0


def runtime_key(args) -> int:
    settings = _settings(args)
    print(_admin_keys(settings).public_key(RUNTIME_KEY_USER, _site(settings, args.site).name))
    return 0


def _environments(site, slug: str | None) -> list:
    if slug is None:
        return list(site.environments.values())
    if slug not in site.environments:
        raise SettingsError(
            f"{site.name} has no environment {slug!r} (its environments: {', '.join(site.environments)})"
        )
    return [site.environments[slug]]


def install(args) -> int:
    settings = _settings(args)
    site = _site(settings, args.site)
    environments = _environments(site, args.environment)
    runner, owner = _owner_runner(settings, site)
    wheelhouse = Path(args.wheelhouse)
    ident = runtime.runtime_id(wheelhouse)

    async def install_each():
        for environment in environments:
            interpreter = await runtime.interpreter_of(runner, owner, site.title, site.paths.runtime, environment)
            house = await wheelhouse_for(interpreter, wheelhouse, settings.state_dir / "runtime-wheels")
            kib, seconds = await runtime.install_environment(
                runner, owner, site.title, site.paths.runtime, environment, ident, interpreter, house, print
            )
            print(
                f"{site.title}: {environment.slug}: runtime {ident} for {interpreter.describe()} installed "
                f"({kib / 1024:.0f} MiB, {seconds:.0f} s)"
            )

    async def go():
        try:
            await install_each()
        finally:
            runner.close()

    try:
        asyncio.run(go())
    except SiteError as e:
        print(f"aifa-workbench: {e.sentence}")
        return 1
    except WheelsUnavailable as e:
        print(f"aifa-workbench: {site.title}: {e}")
        return 1
    except (CommandTimeout, OSError, asyncssh.Error) as e:  # a command that hung, an upload that failed
        print(f"aifa-workbench: installing the job runtime on {site.title} failed: {e}")
        return 1
    return 0


async def runtime_report(settings, site, wheelhouse: Path) -> tuple[bool, list[str]]:
    """Whether each environment of `site` runs this hub's job runtime, with a line for each,
    asked as the runtime's owner."""
    wanted = runtime.runtime_id(wheelhouse)
    runner, owner = _owner_runner(settings, site)
    try:
        found = await runtime.installed_runtimes(runner, owner, site.paths.runtime, list(site.environments))
    finally:
        runner.close()
    lines = [
        f"{site.title}: {slug}: runtime {ident or 'none'} installed, this hub's is {wanted}"
        for slug, ident in found.items()
    ]
    return all(ident == wanted for ident in found.values()), lines


def check(args) -> int:
    settings = _settings(args)
    site = _site(settings, args.site)
    try:
        ok, lines = asyncio.run(runtime_report(settings, site, Path(args.wheelhouse)))
    except SiteError as e:
        print(f"aifa-workbench: {e.sentence} ({e.detail})")
        return 1
    print("\n".join(lines))
    return 0 if ok else 1


def check_runtimes_when_the_hub_starts(settings, sites, log, wheelhouse: Path = WHEELHOUSE) -> None:
    """Once the hub runs: say in its log, per remote site, whether the site runs this hub's job
    runtime and, if not, the command that fixes it (spawns there are refused until then)."""

    async def check_all():
        for site in sites.values():
            if site.transport != "ssh":
                continue
            try:
                ok, lines = await runtime_report(settings, site, wheelhouse)
            except Exception as e:  # one site's failure (unreachable, no key, no wheels) must not skip the others
                log.warning("Could not check the job runtime on %s: %s", site.title, getattr(e, "sentence", e))
                continue
            if ok:
                log.info("%s", "; ".join(lines))
            else:
                log.warning(
                    "%s. Spawns there are refused until `aifa-workbench install-runtime %s` is run.",
                    "; ".join(lines),
                    site.name,
                )

    asyncio.get_event_loop().call_soon(lambda: in_background(check_all(), "The runtime check", log))


def add_commands(sub) -> None:
    for name, run, helptext, needs_user in (
        ("user-key", user_key, "print the public key the hub holds for a user on a site", True),
        ("runtime-key", runtime_key, "print the public key of the site account owning the runtime", False),
        ("install-runtime", install, "install the job runtime on a site over SSH", False),
        ("check-runtime", check, "say whether a site runs this hub's job runtime", False),
    ):
        command = sub.add_parser(name, help=helptext)
        if needs_user:
            command.add_argument("user")
        command.add_argument("site")
        if run is install:
            command.add_argument("environment", nargs="?", help="only this environment of the site (its slug)")
        command.add_argument("--settings")
        command.add_argument("--wheelhouse", default=str(WHEELHOUSE))
        command.set_defaults(run=run)
