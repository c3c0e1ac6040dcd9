"""The job report, the job's side: its port and its end, posted to the hub's `/hub/api/job-report`
(spawners.job_report). Standard library only; never raises.

Run by the batch script as the job ends, so the hub notices at once instead of at its next
queue poll:

    python -m aifa_workbench.extensions.job_report ended EXIT_CODE
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request


def post_report(body: dict, timeout: float = 3.0) -> int:
    """POST `body` with the server's own token; the HTTP status, or 0 if the hub was not reached."""
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not api_url or not token:
        return 0
    request = urllib.request.Request(
        api_url.rstrip("/") + "/job-report",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=hub_tls_context()) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return 0


def hub_tls_context() -> ssl.SSLContext | None:
    """Forward reach: the hub's own CA, and nothing else (sites.hub_api_tls says why)."""
    ca_file = os.environ.get("AIFA_WORKBENCH_HUB_CA")
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def report_end(exit_code: int, timeout: float = 3.0) -> bool:
    return post_report({"event": "ended", "exit_code": exit_code}, timeout) == 202


if __name__ == "__main__":
    code = (
        int(sys.argv[2])
        if len(sys.argv) > 2 and sys.argv[2].lstrip("-").isascii() and sys.argv[2].lstrip("-").isdigit()
        else 0
    )
    report_end(max(-255, min(255, code)))
