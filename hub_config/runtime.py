"""The hub's runtime: one object, built once by jupyterhub_config.py and handed to the hub's parts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aifa_workbench.hub_config.courses.book import Courses
from aifa_workbench.hub_config.site_accounts.registry import SiteAccounts
from aifa_workbench.model.settings import Settings
from aifa_workbench.sites.registry import Identities, SiteControls

TORNADO_KEY = "workbench"  # c.JupyterHub.tornado_settings[TORNADO_KEY]: how the pages' handlers get it


@dataclass(frozen=True, eq=False)  # one per hub: compared by identity
class Workbench:
    """What the hub runs with: its settings, the catalogue's enabled sites, who each user is on each
    site (identities, and the site-accounts registry behind them), each site's job control, the
    courses (None where they are off), and what the keys page tells people (the hub's egress
    addresses, whom to ask).

    The pages' handlers read it from tornado's settings (WorkbenchHandler.workbench), the spawner
    and the federated login from their `workbench` trait; the background loops are handed it, or
    its hub()."""

    settings: Settings
    sites: dict  # {name: model.catalogue.Site}
    identities: Identities
    controls: SiteControls  # each site's job control, logging in as each user (identities)
    site_accounts: SiteAccounts
    courses: Courses | None
    hub_egress: tuple[str, ...]  # addresses the hub logs in to sites from (a key's from= clause)
    support: str  # whom people ask: the settings' support_contact

    @property
    def remote_sites(self) -> dict:
        """The sites the hub logs in to over SSH, as each user: {name: Site}."""
        return {name: site for name, site in self.sites.items() if site.transport == "ssh"}

    def hub(self):
        """The running JupyterHub app."""
        from jupyterhub.app import JupyterHub

        return JupyterHub.instance()

    def __deepcopy__(self, memo):
        # traitlets deep-copies each config value into the object it configures: the hub has one
        # runtime, and its registry, key store and course book must stay the ones the others hold
        return self


class WorkbenchHandler:
    """Mixed into the hub's page and API handlers: the runtime, from tornado's settings."""

    @property
    def workbench(self) -> Workbench:
        return self.settings[TORNADO_KEY]


FEATURES_WITH_PAGES = ("courses", "site_keys", "site_accounts", "sessions")


def template_paths() -> list[str]:
    """Where JupyterHub finds the workbench's pages: its own (page, home, spawn, waiting) in
    templates/, and each feature's in the templates/ beside its handlers."""
    here = Path(__file__).parent
    return [str(here / "templates"), *(str(here / feature / "templates") for feature in FEATURES_WITH_PAGES)]
