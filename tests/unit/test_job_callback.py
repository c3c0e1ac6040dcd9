import pytest

from aifa_workbench.spawners.job_callback import parse_report
from aifa_workbench.spawners.slurm import export_names


def test_a_port_is_accepted():
    assert parse_report({"port": 8888}) == {"port": 8888}


@pytest.mark.parametrize("body", [
    {"port": 0}, {"port": 70000}, {"port": "8888"}, {"port": True}, {},
    {"port": 8888, "cmd": ["/bin/sh"]}, {"port": 8888, "batch_submit_cmd": "id"}, {"port": 8888, "ip": "evil"},
    [8888], "port",
])
def test_anything_else_is_refused(body):
    with pytest.raises(ValueError):
        parse_report(body)


def test_only_jupyterhub_variables_reach_the_job():
    env = {"JUPYTERHUB_API_TOKEN": "t", "JPY_API_TOKEN": "t", "PATH": "/x", "LD_PRELOAD": "/evil.so"}
    assert export_names(env) == ("JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN")


def test_the_port_reaches_the_child_of_a_wrapping_spawner():
    from types import SimpleNamespace

    from aifa_workbench.spawners.job_callback import port_target, spawner_for_token

    child = SimpleNamespace(api_token="t1")
    wrapper = SimpleNamespace(api_token="t1", child_spawner=child)
    other = SimpleNamespace(api_token="t2")
    assert spawner_for_token([other, wrapper], "t1") is wrapper and port_target(wrapper) is child
    assert spawner_for_token([other, wrapper], "t2") is other and port_target(other) is other
    assert spawner_for_token([other, wrapper], "nope") is None
    assert spawner_for_token([SimpleNamespace(api_token=None)], None) is None
