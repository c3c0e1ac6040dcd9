import pytest

from aifa_workbench.spawners.job_report import parse_report
from aifa_workbench.spawners.slurm import export_names


def test_a_port_is_accepted():
    assert parse_report({"port": 8888}) == {"port": 8888}


@pytest.mark.parametrize(
    "body",
    [
        {"port": 0},
        {"port": 70000},
        {"port": "8888"},
        {"port": True},
        {},
        {"port": 8888, "cmd": ["/bin/sh"]},
        {"port": 8888, "batch_submit_cmd": "id"},
        {"port": 8888, "ip": "evil"},
        [8888],
        "port",
    ],
)
def test_anything_else_is_refused(body):
    with pytest.raises(ValueError):
        parse_report(body)


def test_only_jupyterhub_variables_reach_the_job():
    env = {"JUPYTERHUB_API_TOKEN": "t", "JPY_API_TOKEN": "t", "PATH": "/x", "LD_PRELOAD": "/evil.so"}
    assert export_names(env) == ("JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN")


def test_a_report_reaches_the_spawner_whose_token_it_carries():
    from types import SimpleNamespace

    from aifa_workbench.spawners.job_report import spawner_for_token

    mine, other = SimpleNamespace(api_token="t1"), SimpleNamespace(api_token="t2")
    assert spawner_for_token([other, mine], "t1") is mine
    assert spawner_for_token([other, mine], "t2") is other
    assert spawner_for_token([other, mine], "nope") is None
    assert spawner_for_token([SimpleNamespace(api_token=None)], None) is None


def test_jobs_report_at_the_job_report_route_and_those_of_an_older_hub_at_batchspawners():
    from jupyterhub.apihandlers import default_handlers

    from aifa_workbench.spawners import job_report

    job_report.install()
    routes = {route: handler for route, handler in default_handlers}
    assert routes["/api/job-report"] is routes["/api/batchspawner"] is job_report.JobReportHandler
    assert [route for route, _ in default_handlers].count("/api/batchspawner") == 1
