"""One job control per enabled site, made once per hub process, and who each hub user is there.

Local sites run commands through sudo on this host. SSH sites log in to the site's login node as
the user's own account there: the settings name it (site_users), the hub's key store holds the
key (hub_config.site_keys.store)."""

from __future__ import annotations

from .commands import LocalRunner
from .control import JobControl
from .errors import CredentialRefused, HostKeyMismatch
from .ssh import Credential, LoginNode, SshRunner


class NoSiteAccount(CredentialRefused):
    def what(self) -> str:
        return (
            f"The workbench does not know your account on {self.site_title}. Ask your workbench "
            f"administrator to add your {self.site_title} username and projects to the settings."
        )


class NoHostKey(HostKeyMismatch):
    def what(self) -> str:
        return (
            f"The workbench has no host key for {self.site_title}'s login node, so it does not log in "
            "there. Tell your workbench administrator (the site catalogue's login.host_keys)."
        )


class Identities:
    """site_users of the settings ({user: {site: {username, accounts}}}) and the key store."""

    def __init__(self, site_users: dict, key_store, local_names=None):
        self.site_users, self.key_store = site_users, key_store
        self.local_names = local_names  # hub user -> account on the local cluster (courses' guests)
        self._credentials: dict[tuple[str, str], Credential] = {}  # keys decrypted once per process
        self._homes: dict[tuple[str, str, str], str] = {}  # where site_users keeps no homes (a plain dict)

    def local_username(self, user: str) -> str:
        return self.local_names(user) if self.local_names is not None else user

    def site_account(self, user: str, site: str) -> dict:
        """{username, accounts} of `user` on the site named `site`; {} where none is known."""
        return self.site_users.get(user, {}).get(site, {})

    def site_username(self, user: str, site: str) -> str | None:
        return self.site_account(user, site).get("username")

    def site_home(self, user: str, site: str, username: str | None = None) -> str | None:
        """The home the site gave the user's account there (`username`, else the registry's) at its
        last start, if known."""
        username = username or self.site_username(user, site)
        if hasattr(self.site_users, "home"):  # the hub's registry keeps them
            return self.site_users.home(user, site, username)
        return self._homes.get((user, site, username or ""))

    def remember_home(self, user: str, site: str, username: str, home: str, storage: dict | None = None) -> None:
        """`home` is where `site` has `username`, the user's account there (as the spawner runs it),
        and `storage` ({account: {kind: dir}}) the project's directories it has for them."""
        if hasattr(self.site_users, "remember_home"):
            self.site_users.remember_home(user, site, username, home, storage)
        else:
            self._homes[(user, site, username)] = home

    def credential(self, user: str, site) -> Credential:
        username = self.site_username(user, site.name)
        if not username:
            raise NoSiteAccount(site.title, f"no site_users.{user}.{site.name}.username")
        credential = self._credentials.get((user, site.name))
        if credential is None or credential.username != username:
            try:
                credential = Credential(username, self.key_store.private_key(user, site.name))
            except (ValueError, OSError) as e:  # SiteKeyError is a RuntimeError: below
                raise CredentialRefused(site.title, f"key of {user} for {site.name}: {e}") from None
            except RuntimeError as e:
                raise CredentialRefused(site.title, str(e), "Tell your workbench administrator.") from None
            self._credentials[(user, site.name)] = credential
        return credential


class SiteControls:
    """One job control per site (and Slurm path, timeout), whose SSH logins are its users' own
    (`identities`): the hub makes one (hub_config.runtime) and hands it to every part that acts
    on a site, so they share each site's connections. Without identities, SSH sites refuse."""

    def __init__(self, identities: Identities | None = None):
        self.identities = identities
        self._controls: dict = {}

    def of(self, site, slurm_bin: str = "/usr/bin", timeout: float = 30.0) -> JobControl:
        """The job control of catalogue site `site` (a model.site.Site)."""
        key = (site.name, site.transport, slurm_bin, timeout, site.login, site.paths)
        control = self._controls.get(key)
        if control is None:
            if site.transport == "local":
                runner = LocalRunner(name_of=self._local_name)
                control = JobControl(site.name, site.title, runner, slurm_bin, timeout, shared_queries=True)
            else:
                control = JobControl(
                    site.name, site.title, self._ssh_runner(site), site.paths.slurm_bin, timeout, shared_queries=False
                )
            self._controls[key] = control
        return control

    def _local_name(self, user: str) -> str:
        return self.identities.local_username(user) if self.identities is not None else user

    def _ssh_runner(self, site) -> SshRunner:
        identities = self.identities
        if not site.login.host_keys:

            def credential_of(user):
                raise NoHostKey(site.title, f"{site.path}: login.host_keys is empty")
        elif identities is None:

            def credential_of(user):
                raise NoSiteAccount(site.title, "the hub has no site identities configured")
        else:

            def credential_of(user):
                return identities.credential(user, site)

        return SshRunner(site.title, LoginNode(site.login.host, site.login.port, site.login.host_keys), credential_of)
