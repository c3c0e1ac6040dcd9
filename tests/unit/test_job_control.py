"""A site's job control: the Slurm argv it builds and what each failure means (typed errors with
sentences), with a scripted runner in place of the site."""

import pytest

from aifa_workbench.sites.errors import CredentialRefused, SlurmNotAnswering, SlurmRefused
from aifa_workbench.sites.slurm_cli import parse_partition_load, parse_reservations, parse_user_accounts
from aifa_workbench.sites import slurm_facts

from .fakes import DOWN, TIMEOUT, ok, scripted_control


async def test_submit_sends_the_script_on_stdin_and_reads_the_job_id():
    control, runner = scripted_control([ok("123;lumi\n")])
    assert await control.submit("alice", "#!/bin/bash\n", {"JUPYTERHUB_API_TOKEN": "s3cret"}) == "123"
    call = runner.calls[0]
    assert call["argv"] == ["/bin-dir/sbatch", "--parsable"] and call["as_user"] == "alice"
    assert call["stdin"] == "#!/bin/bash\n" and "s3cret" not in " ".join(call["argv"])


@pytest.mark.parametrize(
    "answer, error, words",
    [
        (
            (1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"),
            SlurmNotAnswering,
            "The Slurm scheduler of Test site is not answering",
        ),
        (TIMEOUT, SlurmNotAnswering, "is not answering"),
        ((1, "", "sudo: a password is required"), CredentialRefused, "may not act as 'eve'"),
        (
            (
                1,
                "",
                "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
            ),
            SlurmRefused,
            "Slurm on Test site refused to start your server: Invalid account or account/partition "
            "combination specified.",
        ),
        ((0, "Submitted batch job 5\n", ""), SlurmRefused, "not a job id"),
    ],
)
async def test_submit_failures_are_typed_with_a_sentence(answer, error, words):
    control, _ = scripted_control([answer])
    with pytest.raises(error) as raised:
        await control.submit("eve", "#!/bin/bash\n")
    assert words in raised.value.sentence


async def test_accounts_down_is_an_error_not_no_accounts():
    control, _ = scripted_control([DOWN, ok("a|a\na|b\n")])
    with pytest.raises(SlurmNotAnswering):
        await control.accounts("dora")
    assert await control.accounts("dora") == ("a", "b")


async def test_cancelling_an_ended_job_is_not_an_error():
    control, runner = scripted_control(
        [
            (1, "", "scancel: error: Kill job error on job id 7: Invalid job id specified"),
            (1, "", "scancel: error: Unable to contact slurm controller"),
        ]
    )
    await control.cancel("alice", "7")
    assert runner.argvs[0] == ["/bin-dir/scancel", "7"]
    with pytest.raises(SlurmNotAnswering):
        await control.cancel("alice", "7")


async def test_queries_run_as_the_hub_or_as_each_user():
    shared, shared_runner = scripted_control([ok("1|RUNNING|None|n1|x|1:00:00\n")], shared_queries=True)
    private, private_runner = scripted_control([ok("1|RUNNING|None|n1|x|1:00:00\n")], shared_queries=False)
    await shared.jobs(["1"], as_user=shared.query_user("alice"))
    await private.jobs(["1"], as_user=private.query_user("alice"))
    assert shared_runner.calls[0]["as_user"] is None and private_runner.calls[0]["as_user"] == "alice"


async def test_the_tail_of_an_unreadable_output_is_empty():
    control, runner = scripted_control([(1, "", "tail: cannot open"), TIMEOUT])
    assert await control.tail("alice", "/home/alice/x.log", 100) == ""
    assert await control.tail("alice", "/home/alice/x.log", 100) == ""
    assert runner.argvs[0][:5] == ["/usr/bin/timeout", "-s", "KILL", "10", "/usr/bin/tail"]


def test_slurm_output_parsers():
    assert parse_user_accounts("proj_training|proj_sme\nproj_training|proj_training\nbad line\n") == (
        "proj_training",
        "proj_sme",
    )
    res = (
        "ReservationName=intro-to-llms StartTime=x Users=alice,bob Accounts=(null) State=ACTIVE\n"
        "ReservationName=other Users=(null) Accounts=proj_research State=ACTIVE\n"
        "ReservationName=old Users=alice State=INACTIVE_OTHER\n"
    )
    assert parse_reservations(res, "alice", ("proj_sme",)) == ("intro-to-llms",)
    assert parse_reservations(res, "bob", ("proj_research",)) == ("intro-to-llms", "other")
    load = parse_partition_load(
        "small-g  gpu:8  gpu:2(IDX:0-1)  14/42/0/56\ncpu  gpu:8  gpu:2(IDX:0-1)  14/42/0/56\n", "small-g\nsmall-g\n"
    )
    assert load["small-g"] == {"idle_gpus": 6, "total_gpus": 8, "idle_cpus": 42, "total_cpus": 56, "pending": 2}


async def test_a_users_accounts_are_reused_for_the_ttl_but_a_failed_query_is_not():
    slurm_facts._ACCOUNTS_CACHE.clear()
    control, runner = scripted_control(
        [(1, "", "sacctmgr: error: Problem talking to the database"), ok("a|a\na|b\n"), ok("x|x\n")]
    )
    facts = slurm_facts.SlurmFacts(control, accounts_ttl=60)
    with pytest.raises(SlurmNotAnswering):  # slurmdbd down: said, not read as "no project"
        await facts.user_accounts("dora")
    assert await facts.user_accounts("dora") == ("a", "b")
    assert await facts.user_accounts("dora") == ("a", "b")
    assert len(runner.calls) == 2
    slurm_facts._ACCOUNTS_CACHE.clear()


async def test_a_site_without_pinned_host_keys_is_not_logged_in_to():
    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.sites.registry import NoHostKey, SiteControls

    lumi = load_catalogue()["lumi"]  # the bundled file pins no key yet
    with pytest.raises(NoHostKey) as refused:
        await SiteControls().of(lumi).ping("alice")
    assert "has no host key for LUMI" in refused.value.sentence


async def test_other_commands_on_the_site_go_through_job_control_and_a_timeout_is_a_sentence():
    """Resolving a job's node and reading the runtime's version are not Slurm's commands, but they
    go through job control all the same: a site that hangs is a SiteUnreachable, never a traceback."""
    from aifa_workbench.sites import reach, runtime
    from aifa_workbench.sites.errors import SiteUnreachable

    control, runner = scripted_control([TIMEOUT])
    with pytest.raises(SiteUnreachable, match="cannot be reached right now") as raised:
        await reach.node_address(control, "alice", "nid005001")
    assert "resolving the node nid005001" in raised.value.detail and runner.calls[0]["as_user"] == "alice"
    with pytest.raises(SiteUnreachable):
        await runtime.installed_runtimes(control.commands("reading its runtime"), "alice", "/appl/wb", ["env"])
    control, _ = scripted_control([ok("1.0-abc cp311-x86_64-glibc2.41\n")])
    found = await runtime.installed_runtimes(control.commands("reading"), "alice", "/appl/wb", ["env"])
    assert found == {"env": "1.0-abc"}
