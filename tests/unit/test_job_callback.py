import pytest

from aifa_workbench.spawners.job_callback import parse_report
from aifa_workbench.spawners.slurm import explain_sbatch_failure, export_names
from aifa_workbench.spawners.transport import CommandResult


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


def failed(stderr):
    return CommandResult(("sbatch",), 1, "", stderr)


def test_sbatch_failures_become_sentences():
    down = explain_sbatch_failure("bob", failed(
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"))
    assert down.startswith("The Slurm scheduler is not answering")
    sudo = explain_sbatch_failure("eve", failed("sudo: a password is required"))
    assert "not allowed to start jobs for 'eve'" in sudo
    refused = explain_sbatch_failure("bob", failed(
        "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"))
    assert refused == "Slurm refused to start your server: Invalid account or account/partition combination specified."


def test_only_jupyterhub_variables_reach_the_job():
    env = {"JUPYTERHUB_API_TOKEN": "t", "JPY_API_TOKEN": "t", "PATH": "/x", "LD_PRELOAD": "/evil.so"}
    assert export_names(env) == ("JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN")


def test_slurm_facts_parsers():
    from aifa_workbench.spawners.slurm_facts import parse_partition_load, parse_reservations, parse_user_accounts

    assert parse_user_accounts("proj_training|proj_sme\nproj_training|proj_training\nbad line\n") == \
        ("proj_training", "proj_sme")
    res = ("ReservationName=intro-to-llms StartTime=x Users=alice,bob Accounts=(null) State=ACTIVE\n"
           "ReservationName=other Users=(null) Accounts=proj_research State=ACTIVE\n"
           "ReservationName=old Users=alice State=INACTIVE_OTHER\n")
    assert parse_reservations(res, "alice", ("proj_sme",)) == ("intro-to-llms",)
    assert parse_reservations(res, "bob", ("proj_research",)) == ("intro-to-llms", "other")
    load = parse_partition_load("small-g  gpu:8  gpu:2(IDX:0-1)\ncpu  gpu:8  gpu:2(IDX:0-1)\n", "small-g\nsmall-g\n")
    assert load["small-g"] == {"idle_gpus": 6, "total_gpus": 8, "pending": 2}


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


async def test_a_users_accounts_are_reused_for_the_ttl_but_a_failed_query_is_not():
    from aifa_workbench.spawners import slurm_facts
    from aifa_workbench.spawners.transport import CommandResult

    class CountingTransport:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), 0

        async def run(self, argv, **kwargs):
            self.calls += 1
            return CommandResult(tuple(argv), *self.answers.pop(0))

    slurm_facts._ACCOUNTS_CACHE.clear()
    transport = CountingTransport([(1, "", "sacctmgr: error"), (0, "a|a\na|b\n", ""), (0, "x|x\n", "")])
    facts = slurm_facts.SlurmFacts(transport, "/test-bin", accounts_ttl=60)
    assert await facts.user_accounts("dora") == ()          # failure: not cached
    assert await facts.user_accounts("dora") == ("a", "b")
    assert await facts.user_accounts("dora") == ("a", "b")
    assert transport.calls == 2
    slurm_facts._ACCOUNTS_CACHE.clear()
