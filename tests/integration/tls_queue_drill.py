"""Run by the site's own Python (stdin): a Dask scheduler and its Client in one process, as in a
notebook's kernel, and a worker with its nanny in another, over TLS; ROUNDS times, each a new
cluster: the worker joins, 20 tasks are gathered, the worker is retired. Prints `RESULT ok/rounds`.
With AIFA_GUARD=1 the workbench's tls_error_queue is installed first (extensions/tls_error_queue.py)."""

import os
import subprocess
import sys
import tempfile

from distributed import Client, Scheduler, SpecCluster
from distributed.security import Security

if os.environ.get("AIFA_GUARD") == "1":
    from aifa_workbench.extensions import tls_error_queue

    print("guard installed:", tls_error_queue.install(), flush=True)

rounds, ok = int(os.environ.get("ROUNDS", "3")), 0
for _ in range(rounds):
    security = Security.temporary()
    folder = tempfile.mkdtemp()
    files = {}
    for name in ("tls_ca_file", "tls_worker_cert", "tls_worker_key"):
        files[name] = os.path.join(folder, name)
        with open(files[name], "w") as out:
            out.write(getattr(security, name))
    options = {"protocol": "tls://", "host": "127.0.0.1", "dashboard_address": ":0", "security": security}
    cluster = SpecCluster(scheduler={"cls": Scheduler, "options": options}, workers={}, security=security)
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nthreads", "1",
         "--tls-ca-file", files["tls_ca_file"], "--tls-cert", files["tls_worker_cert"],
         "--tls-key", files["tls_worker_key"], "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = Client(cluster)
        client.wait_for_workers(1, timeout=60)
        assert sum(client.gather(client.map(lambda x: x * 2, range(20)))) == 380
        client.retire_workers(list(client.scheduler_info()["workers"]))
        client.close()
        ok += 1
    except Exception as error:  # the drill counts failures; their kind is the finding
        print("round failed:", type(error).__name__, str(error)[:200], flush=True)
    finally:
        cluster.close(timeout=10)
        worker.kill()
        worker.wait()
print(f"RESULT {ok}/{rounds}", flush=True)
