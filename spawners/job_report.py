"""The job report: the API endpoint a job calls to report its port as its server starts, and its
end as it ends (the job's side: extensions.job_report). It replaces batchspawner's.

batchspawner's handler `setattr`s every attribute named in the request body on the spawner, so a
job (run by the user) could rewrite, for example, the command the hub runs next time. This
handler accepts only `port`, typed, and only for the server whose token made the call while that
server is starting. The host is never taken from the job: the hub reads it from Slurm.
"""

from __future__ import annotations

import json

from jupyterhub import orm
from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

from aifa_workbench.sites.background import in_background
from .server_token import token_record

ROUTE = r"/api/job-report"
LEGACY_ROUTE = r"/api/batchspawner"  # where jobs started by a hub before 2026-12 still report


def parse_report(body) -> dict:
    """Validate a job's report: {'port': 1..65535} while starting, or {'event': 'ended',
    'exit_code': int} when it ends. Raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    if "event" in body:
        if set(body) != {"event", "exit_code"} or body["event"] != "ended":
            raise ValueError("an event report is exactly {'event': 'ended', 'exit_code': N}")
        if type(body["exit_code"]) is not int or not -255 <= body["exit_code"] <= 255:
            raise ValueError("exit_code must be an integer from -255 to 255")
        return {"event": "ended", "exit_code": body["exit_code"]}
    unknown = set(body) - {"port"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    port = body.get("port")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError("port must be an integer from 1 to 65535")
    return {"port": port}


def spawner_for_token(spawners, token, record=None):
    """The spawner whose server the token belongs to, or None. After a hub restart a spawner no
    longer holds its token, only the token's record (id, owner, creation; kept in its state)."""

    def owns(spawner) -> bool:
        if token and spawner.api_token == token:
            return True
        return record is not None and getattr(spawner, "api_token_record", None) == record

    return next((s for s in spawners if owns(s)), None)


class JobReportHandler(APIHandler):
    @web.authenticated
    def post(self):
        token = self.get_auth_token()
        spawners = getattr(self.current_user, "spawners", {}).values()  # a service has none
        row = orm.APIToken.find(self.db, token) if token else None
        spawner = spawner_for_token(spawners, token, token_record(row) if row is not None else None)
        if spawner is None:
            raise web.HTTPError(403, "Only a server's own token may report its address.")
        try:
            report = parse_report(self.get_json_body())
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None
        if report.get("event") == "ended":
            self.log.info("Job of %s reports its end (exit code %s)", spawner._log_name, report["exit_code"])
            if hasattr(spawner, "notice_job_end"):
                in_background(spawner.notice_job_end(), f"Noting the end of {spawner._log_name}'s job", self.log)
            self.set_status(202)
            self.finish(json.dumps({"message": "end noted"}))
            return
        if spawner.pending != "spawn":
            raise web.HTTPError(409, "The server is not starting; nothing to report.")
        if hasattr(spawner, "port_reported"):
            if not spawner.port_reported(report["port"]):
                raise web.HTTPError(409, "This server has already reported its port.")
        else:
            spawner.port = report["port"]
        self.set_status(201)
        self.finish(json.dumps({"message": "address recorded"}))


def install() -> None:
    """Register this handler at its route and batchspawner's, removing batchspawner's own."""
    import batchspawner.api  # noqa: F401  (it registers its handler on import)

    default_handlers[:] = [h for h in default_handlers if h[0] not in (ROUTE, LEGACY_ROUTE)]
    default_handlers.extend([(ROUTE, JobReportHandler), (LEGACY_ROUTE, JobReportHandler)])
