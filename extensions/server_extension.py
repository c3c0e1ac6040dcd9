"""The Jupyter server extension every workbench job loads (`--ServerApp.jpserver_extensions`).

It serves `GET <base_url>workbench/job`, the job's status for the job panel and the walltime
guard (JupyterLab extension `@aifa-workbench/walltime-guard`), and it reports the server's port to the hub once the server listens, from inside the server: the
port is the one this process bound (started with `--ServerApp.port=0`, the OS picks a free one),
so the hub never waits on a port someone else holds, and its first request to the server gets
an answer. This replaces batchspawner-singleuser, which picks a port, reports it, then starts
the server: the hub then polls a port nobody listens on yet, backing off up to seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import time

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from aifa_workbench.model.files import write_atomically

from .hub_trust import TRUST_NAMES
from .dask_listing import NOTES_DIRECTORY, list_notebook_clusters
from .job_context import WorkbenchError, current_status
from .job_report import post_report

LISTEN_WAIT_S = 120
REPORT_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30)


def _jupyter_server_extension_points():
    return [{"module": "aifa_workbench.extensions.server_extension"}]


def is_listening(serverapp) -> bool:
    server = getattr(serverapp, "_http_server", None)  # set by ServerApp.init_httpserver
    return bool(server is not None and getattr(server, "_sockets", None))


async def report_port_when_listening(serverapp) -> bool:
    deadline = time.monotonic() + LISTEN_WAIT_S
    while not is_listening(serverapp):
        if time.monotonic() > deadline:
            serverapp.log.error("AIFA Workbench: the server did not start listening; port not reported")
            return False
        await asyncio.sleep(0.01)
    port = serverapp.port
    write_port_file(port)
    for delay in (*REPORT_DELAYS_S, None):
        status = await asyncio.to_thread(post_report, {"port": port})
        if status == 201:
            serverapp.log.info("AIFA Workbench: reported port %s to the hub", port)
            return True
        if 400 <= status < 500:
            serverapp.log.error("AIFA Workbench: the hub refused the port report (HTTP %s); stopping", status)
            stop_server(serverapp)
            return False
        if delay is None:
            break
        serverapp.log.warning("AIFA Workbench: hub not reached (%s); retrying in %ss", status or "no answer", delay)
        await asyncio.sleep(delay)
    serverapp.log.error("AIFA Workbench: could not report the port to the hub; stopping")
    stop_server(serverapp)
    return False


def write_port_file(port: int) -> None:
    """Where the job's reverse tunnel waits for the port (AIFA_WORKBENCH_PORT_FILE, in the job's
    private directory): written whole, then renamed, so that it is never read half-written."""
    path = os.environ.get("AIFA_WORKBENCH_PORT_FILE")
    if path:
        write_atomically(path, f"{int(port)}\n", mode=0o666)  # as open() made it: less the umask


def stop_server(serverapp) -> None:
    """Without a reported port the hub can never reach this server: end the job, so that the hub
    shows the spawn failing with the job's last lines instead of waiting for its start timeout."""
    serverapp.stop()


def warn_minutes(env=None) -> list[int]:
    """The walltime guard's lead times, e.g. AIFA_WORKBENCH_WARN_MINUTES='10,2' -> [10, 2]."""
    raw = (os.environ if env is None else env).get("AIFA_WORKBENCH_WARN_MINUTES", "10,2")
    minutes = sorted(
        {int(m) for m in raw.split(",") if m.strip().isascii() and m.strip().isdigit() and 0 < int(m) <= 1440},
        reverse=True,
    )
    return minutes or [10, 2]


class JobStatusHandler(APIHandler):
    @web.authenticated
    async def get(self):
        try:
            status = await asyncio.to_thread(current_status, None, True)
        except WorkbenchError as e:
            self.set_status(503)
            self.finish(json.dumps({"error": str(e)}))
            return
        except Exception as e:  # e.g. an unreadable catalogue: the guard retries, the log says why
            self.log.exception("AIFA Workbench: job status failed")
            self.set_status(503)
            self.finish(json.dumps({"error": f"The job status is not available: {e}"}))
            return
        status["warn_minutes"] = warn_minutes()
        self.finish(json.dumps(status))


def keep_the_hubs_ca_to_this_process(environ=os.environ) -> bool:
    """Forward reach: extensions.hub_trust starts this server with SSL_CERT_FILE naming the hub's
    CA and SSL_CERT_DIR an empty directory, so that the client JupyterHub's single-user code calls
    the hub with (aiohttp >= 3.10.6, whose verifying context is made as it is imported) trusts
    nothing else there. Kernels and terminals, started from this process's environment, get the
    node's own values back (AIFA_WORKBENCH_NODE_*, or none)."""
    ca_file = environ.get("AIFA_WORKBENCH_HUB_CA")
    if not ca_file or environ.get("SSL_CERT_FILE") != ca_file:
        return False
    import aiohttp.connector  # noqa: F401  (imported already by JupyterHub's client; made now if not)

    for name in TRUST_NAMES:
        node_value = environ.pop(f"AIFA_WORKBENCH_NODE_{name}", None)
        if node_value is None:
            environ.pop(name, None)
        else:
            environ[name] = node_value
    return True


def new_cluster_name() -> str:
    """What the Dask tab's *New* button makes, named after the site's first preset (dask_presets
    imports dask_jobqueue: only when the button is pressed)."""
    from .dask_presets import default_cluster_name

    return default_cluster_name()


def _load_jupyter_server_extension(serverapp) -> None:
    if not keep_the_hubs_ca_to_this_process() and os.environ.get("AIFA_WORKBENCH_HUB_CA"):
        serverapp.log.warning(
            "AIFA Workbench: the hub's CA is not pinned for this server "
            "(SSL_CERT_FILE was changed after extensions.hub_trust set it)"
        )
    route = url_path_join(serverapp.base_url, "workbench", "job")
    serverapp.web_app.add_handlers(".*$", [(route, JobStatusHandler)])
    if os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN"):
        serverapp.io_loop.add_callback(report_port_when_listening, serverapp)
    if os.environ.get("AIFA_WORKBENCH_SITE"):  # JupyterLab's Dask tab: notebook clusters, named presets
        try:
            from dask_labextension.manager import manager

            home = pwd.getpwuid(os.getuid()).pw_dir  # as the notebooks' dask_cluster
            folder = os.path.join(home, NOTES_DIRECTORY, os.environ.get("SLURM_JOB_ID") or "no-job")
            list_notebook_clusters(manager, folder, new_cluster_name, serverapp.log)
        except Exception:  # the tab then lists the New button's clusters only; the server runs on
            serverapp.log.exception("AIFA Workbench: notebook clusters are not listed in the Dask tab")
