# Baseline for the benchmarks: plain batchspawner.SlurmSpawner configured as its README says,
# on the same hub settings (network, state, login) as the workbench's config. Never deployed.
import os

import batchspawner  # noqa: F401  (registers batchspawner's own API handler, as its README says)

from aifa_workbench.model.settings import load_settings

c = get_config()  # noqa: F821
settings = load_settings(os.environ["AIFA_WORKBENCH_SETTINGS"])
c.JupyterHub.bind_url = settings.bind_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = settings.secret("proxy-auth-token")
c.ConfigurableHTTPProxy.should_start = False
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = f"sqlite:///{settings.state_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(settings.state_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(settings.state_dir / "jupyterhub.pid")
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = settings.secret("demo-password")
c.Authenticator.allowed_users = set(settings.demo_users)
c.JupyterHub.services = [{"name": "workbench-admin", "api_token": settings.secret("admin-api-token")}]
c.JupyterHub.load_roles = [
    {
        "name": "workbench-admin",
        "services": ["workbench-admin"],
        "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "list:users", "read:metrics"],
    }
]
c.JupyterHub.allow_named_servers = settings.named_servers_per_user > 0
c.JupyterHub.named_server_limit_per_user = settings.named_servers_per_user
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 5}

# batchspawner's README: spawner class, http_timeout, req_* resources; exec_prefix stays its
# default "sudo -E -u {username}" and the poll interval JupyterHub's default (30 s).
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 300
c.Spawner.default_url = "/lab"
c.BatchSpawnerBase.req_partition = "cpu"
c.BatchSpawnerBase.req_nprocs = "1"
c.BatchSpawnerBase.req_memory = "2G"
c.BatchSpawnerBase.req_runtime = "2:00:00"
c.BatchSpawnerBase.req_prologue = f"export PATH={settings.venv_dir}/bin:$PATH"
# The job's environment is only the exported JUPYTERHUB_* names, so the venv must be put on PATH
# by the prologue, and the server run without a job step (`req_srun = ""`, as batchspawner's
# help says) for that PATH to apply.
c.SlurmSpawner.req_srun = ""
