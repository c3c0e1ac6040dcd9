"""The jobs' reconciler: which of this hub's jobs no server owns, site by site."""

from types import SimpleNamespace

from aifa_workbench.sites.slurm_cli import job_name
from aifa_workbench.spawners import reconcile

from .fakes import ok, scripted_control

HUB = "h1"


def hub_holding(monkeypatch, job_id: str, site: str) -> SimpleNamespace:
    """A hub whose one user, alice, has a server with job `job_id` on `site`."""
    spawner = SimpleNamespace(job_id=job_id, job_site=site, site_name=site, pending=None)
    monkeypatch.setattr(reconcile, "hub_usernames", lambda app: {"alice"})
    return SimpleNamespace(
        users={"alice": SimpleNamespace(spawners={"": spawner})}, log=SimpleNamespace(warning=lambda *args: None)
    )


async def test_a_job_id_held_on_another_site_does_not_hide_an_orphan_here(monkeypatch):
    """Job 123 on LUMI and job 123 on the local cluster are two jobs: only the site's own count."""
    listing = ok(f"123|alice|{job_name(HUB, 'alice')}\n")
    control, _ = scripted_control([listing, ok("123\n")])  # the site's name: "site"
    assert await reconcile.find_orphans(hub_holding(monkeypatch, "123", "lumi"), control, HUB) == [("123", "alice")]
    control, _ = scripted_control([listing, ok("123\n")])
    assert await reconcile.find_orphans(hub_holding(monkeypatch, "123", "site"), control, HUB) == []


async def test_a_private_sites_orphan_is_not_hidden_by_the_same_id_elsewhere(monkeypatch):
    identities = SimpleNamespace(
        site_username=lambda user, site: "alicelum", key_store=SimpleNamespace(has_key=lambda user, site: True)
    )
    control, runner = scripted_control(
        [ok(f"123|alicelum|{job_name(HUB, 'alice')}\n"), ok("123\n"), ok()], shared_queries=False
    )
    app = hub_holding(monkeypatch, "123", "lumi")
    assert await reconcile.reconcile_users_once(app, control, HUB, identities) == [("123", "alice")]
    assert "scancel" in runner.argvs[-1][0]
