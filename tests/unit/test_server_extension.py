"""The in-job server extension reports the port only once the server listens, and stops on a refusal."""

import asyncio
import logging
import types

from aifa_workbench.extensions import server_extension as ext


def fake_serverapp(port=43210):
    app = types.SimpleNamespace(_http_server=None, port=port, log=logging.getLogger("fake-serverapp"), stopped=0)
    app.stop = lambda: setattr(app, "stopped", app.stopped + 1)
    return app


async def test_the_port_is_reported_after_the_server_listens(monkeypatch):
    app, sent = fake_serverapp(), []

    def post(body):
        sent.append((body, ext.is_listening(app)))
        return 201

    monkeypatch.setattr(ext, "post_report", post)
    task = asyncio.ensure_future(ext.report_port_when_listening(app))
    await asyncio.sleep(0.05)
    assert sent == []  # not listening yet: nothing sent
    app._http_server = types.SimpleNamespace(_sockets={3: object()})
    assert await asyncio.wait_for(task, 2) is True
    assert sent == [({"port": 43210}, True)]


async def test_an_unreachable_hub_is_retried_and_a_refusal_is_final(monkeypatch):
    app = fake_serverapp()
    app._http_server = types.SimpleNamespace(_sockets={3: object()})
    answers = [0, 503, 201]
    monkeypatch.setattr(ext, "REPORT_DELAYS_S", (0.01, 0.01, 0.01))
    monkeypatch.setattr(ext, "post_report", lambda body: answers.pop(0))
    assert await ext.report_port_when_listening(app) is True and answers == [] and app.stopped == 0

    answers = [409, 201]
    assert await ext.report_port_when_listening(app) is False and answers == [201]
    assert app.stopped == 1  # the hub can never reach it: the server ends, the job with it


def test_outside_a_hub_job_only_the_status_route_is_added(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    routes = []
    web_app = types.SimpleNamespace(add_handlers=lambda host, handlers: routes.extend(handlers))
    app = types.SimpleNamespace(io_loop=None, base_url="/user/a b/", web_app=web_app)  # io_loop would fail if used
    ext._load_jupyter_server_extension(app)
    assert [r[0] for r in routes] == ["/user/a b/workbench/job"]


def test_warning_lead_times_come_from_the_job_environment():
    assert ext.warn_minutes({"AIFA_WORKBENCH_WARN_MINUTES": "2,10,x,0,99999"}) == [10, 2]
    assert ext.warn_minutes({}) == [10, 2]


def test_the_prebuilt_walltime_guard_is_built_from_the_current_source():
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "extensions" / "labextension"
    source = hashlib.sha256((root / "lib" / "index.js").read_bytes()).hexdigest()
    assert (root / "prebuilt" / "SOURCE_SHA256").read_text().strip() == source, "run `make labextension`"
