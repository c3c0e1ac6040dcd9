"""Run by the batch script as the job ends: tell the hub, so that it notices at once instead of
at its next queue poll. Standard library only; never fails the job.

    python -m aifa_workbench.extensions.job_report ended EXIT_CODE
"""
import json
import os
import sys
import urllib.request


def report_end(exit_code: int, timeout: float = 3.0) -> bool:
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not api_url or not token:
        return False
    request = urllib.request.Request(
        api_url.rstrip("/") + "/batchspawner", method="POST",
        data=json.dumps({"event": "ended", "exit_code": exit_code}).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except Exception:
        return False


if __name__ == "__main__":
    code = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].lstrip("-").isdigit() else 0
    report_end(max(-255, min(255, code)))
