# AIFA Workbench: JupyterHub configuration.
#
# Deployed by Ansible to /etc/aifa-workbench/jupyterhub_config.py and run by the hub's service
# user (never root). Site-specific values live in the settings file named by
# $AIFA_WORKBENCH_SETTINGS (default /etc/aifa-workbench/workbench.yaml), not here.
import logging
import os
import sys
from urllib.parse import urlsplit

from aifa_workbench.model.catalogue import CatalogueError, load_catalogue
from aifa_workbench.hub_config.limits import cap_requests
from aifa_workbench.hub_config.login import SHARED_SINGLE_PERSON, PerUserPasswordAuthenticator
from aifa_workbench.hub_config import idle_culler, oidc as oidc_login
from aifa_workbench.model.settings import OIDC
from aifa_workbench.hub_config.origins import confine_hub_pages, user_host_hook
from aifa_workbench.hub_config.preflight import PreflightError, check_local_partitions, check_slurm
from aifa_workbench.model.settings import SettingsError, load_settings
from aifa_workbench.hub_config.courses import book as courses
from aifa_workbench.hub_config.courses import page as courses_page
from aifa_workbench.hub_config.site_keys import page as keys_page
from aifa_workbench.hub_config.sessions import pages as session_pages
from aifa_workbench.hub_config.site_accounts import page as site_accounts_page
from aifa_workbench.hub_config.runtime import TORNADO_KEY, Workbench, template_paths
from aifa_workbench.hub_config.site_accounts.registry import registry_of
from aifa_workbench.hub_config.site_admin import check_runtimes_when_the_hub_starts
from aifa_workbench.hub_config.site_keys.store import SiteKeyStore
from aifa_workbench.hub_config.spawner_settings import spawner_traits
from aifa_workbench.sites.registry import Identities, SiteControls
from aifa_workbench.spawners import job_report, reconcile

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

settings_path = os.environ.get("AIFA_WORKBENCH_SETTINGS", "/etc/aifa-workbench/workbench.yaml")
try:
    settings = load_settings(settings_path)
    proxy_token = settings.secret("proxy-auth-token")
    admin_token = settings.secret("admin-api-token")
    site_keys_secret = settings.secret("site-keys-secret")
    if settings.login == SHARED_SINGLE_PERSON:
        demo_password, admin_password = settings.secret("demo-password"), settings.secret("admin-password")
    elif settings.login == OIDC:
        oidc_client_secret, auth_state_key = settings.secret("oidc-client-secret"), settings.auth_state_key()
    else:
        passwords = settings.passwords()
    settings.check_tls_files()
    sites = load_catalogue(settings.catalogue_dir, settings.sites)
    settings.check_tunnel_gateway([site.name for site in sites.values() if site.reach and site.reach.mode == "reverse"])
    check_slurm(settings.slurm_bin)
    check_local_partitions(sites, settings.slurm_bin)
except (SettingsError, CatalogueError, PreflightError) as error:
    # SystemExit passes through traitlets' config loader, which would log and go on otherwise.
    sys.exit(f"AIFA Workbench cannot start: {error}")

# --- network: public proxy, hub API, proxy API -------------------------------------------
c.JupyterHub.bind_url = settings.bind_url
# Each user's server on an origin of its own (<user>.<user_domain>), never the hub's: a page a
# user serves cannot read the hub's pages or act on it for someone who opens it (JupyterHub's
# documentation: subdomain_host, when users do not trust each other).
c.JupyterHub.subdomain_host = settings.public_host
c.JupyterHub.subdomain_hook = user_host_hook(settings.user_domain)
# ...and the hub's own pages on the hub's host only (the proxy hands the hub every host's
# unrouted requests); jobs and the proxy reach it on its internal address.
# Jobs of remote sites call the hub at their catalogue's reach.hub_url.
site_hub_hosts = {host for site in sites.values() if site.reach for host in site.reach.hub_hosts(settings.hub_port)}
confine_hub_pages(
    settings.public_host,
    urlsplit(settings.bind_url).path + "hub/",
    {f"127.0.0.1:{settings.hub_port}", f"localhost:{settings.hub_port}", *site_hub_hosts},
)
cap_requests(settings.max_request_bytes)
if settings.https:  # cookies only over TLS; __Host- cookies cannot be set by another subdomain
    c.JupyterHub.cookie_host_prefix_enabled = True
c.JupyterHub.hub_bind_url = f"http://{settings.hub_bind_address}:{settings.hub_port}"
c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{settings.hub_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = proxy_token
# The proxy runs on its own (`aifa-workbench run-proxy`, started by aifa-hubctl): a hub restart
# or upgrade keeps every route, and stopping the hub never cancels users' jobs.
c.ConfigurableHTTPProxy.should_start = False
c.JupyterHub.cleanup_servers = False

# --- state: everything the hub writes lives in state_dir ------------------------------------
state = settings.state_dir
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

# --- login: federated (MyAccessID; the demo's own provider), or each demo user's password --------
if settings.login == OIDC:  # the hub user keyed on the provider's sub; groups from its entitlements
    oidc_login.configure(
        c,
        settings.oidc,
        f"{settings.public_host}{urlsplit(settings.bind_url).path}hub/oauth_callback",
        oidc_client_secret,
        auth_state_key,
        settings.support_contact,
    )
elif settings.login == SHARED_SINGLE_PERSON:  # anyone with the password is any user: one person only
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = demo_password
    c.SharedPasswordAuthenticator.admin_password = admin_password  # admins log in with this one
else:
    c.JupyterHub.authenticator_class = PerUserPasswordAuthenticator
    c.PerUserPasswordAuthenticator.passwords = passwords
if settings.login != OIDC:  # federated logins are admitted by their groups
    c.Authenticator.allowed_users = set(settings.demo_users)
c.Authenticator.admin_users = set(settings.admin_users)

# --- scripting: a service token with admin rights, read from secrets_dir ----------------------
c.JupyterHub.services = [{"name": "workbench-admin", "api_token": admin_token}]
# The scripting token does not read users' login tokens: JupyterHub's admin:users would include
# admin:auth_state (the provider's access and refresh tokens of every user), so it is spelled out.
# (JupyterHub's own admin role cannot be changed: hub admins can read them; keep admin_groups to
# the antenna's operators.)
c.JupyterHub.load_roles = [
    {
        "name": "workbench-admin",
        "description": "Scripting the hub's REST API (README: 'API token for scripts')",
        "scopes": ["users", "read:roles:users", "admin:servers", "tokens", "read:users", "list:users", "read:metrics"],
        "services": ["workbench-admin"],
    }
]

# --- idle servers give their GPUs back (their files stay); the walltime stops the rest ---------
idle_culler.configure_activity(c, settings.idle_culler)
if settings.idle_culler["enabled"]:
    idle_culler.configure(c, settings.idle_culler)

# --- spawner: JupyterLab as a Slurm job, as the user --------------------------------------------
job_report.install()
c.JupyterHub.spawner_class = "aifa_workbench.spawners.slurm.WorkbenchSlurmSpawner"
# The spawner's settings, as `aifa-workbench render-script` builds the same spawner (hub_config.spawner_settings).
for trait, value in spawner_traits(settings).items():
    setattr(c.WorkbenchSlurmSpawner, trait, value)
# Who each user is on each remote site, and the SSH key the hub holds for them there (encrypted).
# ...kept in one registry: what admins set (/hub/site-accounts, its REST API), what the identity
# provider says, the settings' site_users.
site_accounts = registry_of(settings)
identities = Identities(site_accounts, SiteKeyStore(state / "site-keys", site_keys_secret))
# Courses (workshops) on the local cluster: trainers make them, participants join with a code,
# instructors see their participants' servers; the window's end stops them (hub_config.courses.book).
local_sites = {name: site for name, site in sites.items() if site.transport == "local"}
hub_courses = None
if settings.courses["enabled"] and local_sites:
    course_settings = settings.courses
    course_book = courses.CourseBook(state / "courses.json")
    hub_courses = courses.Courses(
        course_book,
        courses.CoursesConfig(
            cluster=course_settings["cluster"],
            helper=course_settings["helper"],
            slurm_bin=settings.slurm_bin,
            guest_prefix=course_settings["guest_prefix"],
            guest_count=course_settings["guest_count"],
            trainer_groups=tuple(course_settings["trainer_groups"]),
            every_seconds=course_settings["every_seconds"],
            last_start_minutes=course_settings["last_start_minutes"],
            support=settings.support_contact,
            sites={name: site for name, site in sites.items() if site.transport == "local" or site.reach},
            public_url=settings.public_host,
            activity_seconds=settings.idle_culler["activity_interval_seconds"],
        ),
    )
    identities.local_names = course_book.local_account
# The hub's runtime, one object handed to its parts: the pages' handlers (tornado_settings, below),
# the spawner and the federated login (their `workbench` trait), the background loops (its hub()).
runtime = Workbench(
    settings=settings,
    sites=sites,
    identities=identities,
    controls=SiteControls(identities),
    site_accounts=site_accounts,
    courses=hub_courses,
    hub_egress=settings.hub_egress_addresses,
    support=settings.support_contact,
)
c.WorkbenchSlurmSpawner.workbench = runtime
if settings.login == OIDC:
    c.WorkbenchOAuthenticator.workbench = runtime
course_handlers = []
if hub_courses is not None:
    c.JupyterHub.custom_scopes = courses_page.CUSTOM_SCOPES
    c.JupyterHub.load_roles.append(
        courses_page.trainer_role(course_settings["trainer_groups"], course_settings["trainers"])
    )
    c.JupyterHub.load_roles.extend(courses.load_roles_of(hub_courses.book))
    course_handlers = courses_page.handlers()
    courses.start_window_keeper(
        runtime.hub, runtime.controls.of(next(iter(local_sites.values())), settings.slurm_bin), hub_courses
    )
# The page of each user's keys for the remote sites (/hub/site-keys), with a connection test.
c.JupyterHub.extra_handlers = (
    keys_page.handlers() + session_pages.handlers() + site_accounts_page.handlers() + course_handlers
)
# The hub's pages: the product and whom to ask, a card per session (home, waiting page, /hub/sessions).
c.JupyterHub.template_paths = template_paths()  # the hub's pages, then each feature's beside its handlers
c.JupyterHub.template_vars = session_pages.template_vars(
    {
        "support": settings.support_contact,
        "remote_sites": bool(runtime.remote_sites),
        "courses": bool(course_handlers),
        "named_servers": settings.named_servers_per_user > 0,
    }
)
# Jobs of this hub that no server owns are cancelled: on the local cluster from one query as the
# hub, on remote sites (PrivateData) per user through their own logins, every 10 minutes.
# And tunnels no server owns: forwards of ended jobs, gateway grants whose certificate expired.
reverse_sites = [name for name, site in sites.items() if site.reach and site.reach.mode == "reverse"]
reconcile.start_reconciler(
    runtime.hub,
    [
        runtime.controls.of(site, settings.slurm_bin)
        for site in sites.values()
        if site.transport == "local" or site.reach
    ],
    settings.hub_id,
    identities=identities,
    tunnels={
        "socket_path": str(settings.state_dir / "tunneld.sock"),
        "grants_dir": settings.tunnel_gateway.grants_dir if reverse_sites else "",
    },
)
# Each remote site's job runtime, checked once the hub runs (the log names the fixing command).
check_runtimes_when_the_hub_starts(settings, sites, logging.getLogger("JupyterHub"))
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = settings.start_timeout
c.Spawner.http_timeout = 120
c.JupyterHub.tornado_settings = {
    "slow_spawn_timeout": 5,
    "cookie_options": {"secure": True} if settings.https else {},
    TORNADO_KEY: runtime,
}  # the pages' handlers: self.settings["workbench"]
# More than one server per user (0: one only).
# A course's session is a named server of its own (course-<id>), so named servers are on wherever
# courses are; the spawner refuses other named servers beyond named_servers_per_user (0: none).
c.JupyterHub.allow_named_servers = settings.named_servers_per_user > 0 or bool(course_handlers)
c.JupyterHub.named_server_limit_per_user = (
    courses.named_server_limit(settings.named_servers_per_user, hub_courses.book)
    if course_handlers
    else settings.named_servers_per_user
)

c.JupyterHub.log_datefmt = "%Y-%m-%d %H:%M:%S"
print(
    f"AIFA Workbench hub: settings {settings.path}, sites {', '.join(sites)}, "
    f"public URL {settings.bind_url}, state in {state}",
    file=sys.stderr,
)
