import pytest
from hypothesis import given, settings, strategies as st

from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.spawners.profiles import quick_start_profiles
from aifa_workbench.model.request import RequestError, UserContext, parse_job_request
from aifa_workbench.spawners.script import ScriptContext, render_batch_script

SITES = load_catalogue()
USER = UserContext(
    accounts={"local": ("proj_sme", "proj_training"), "lumi": ("project_465000123",), "lucia": ("aifa_cat1",)},
    reservations={"local": ("intro-to-llms",), "lumi": ("AI_workshop_Day1",)},
)
PROFILES = {p.slug: p.options for p in quick_start_profiles(SITES)}
CTX = ScriptContext(
    username="alice",
    home="/home/alice",
    venv_bin="/opt/v/bin",
    launch_argv=("/opt/v/bin/jupyterhub-singleuser",),
    export_names=("JUPYTERHUB_API_TOKEN",),
)


def parse(options, user=USER):
    return parse_job_request(options, SITES, user, "local", PROFILES)


def test_defaults_on_the_local_site():
    req = parse({})
    assert (req.site, req.partition, req.gpus, req.cpus, req.memory_gb, req.hours, req.account, req.environment) == (
        "local",
        "cpu",
        0,
        1,
        2,
        1,
        "proj_sme",
        "workbench",
    )


def test_lumi_small_g_shares_follow_the_gpu_count():
    req = parse({"site": "lumi", "partition": "small-g", "gpus": 2, "hours": 3})
    assert (req.gpus, req.cpus, req.memory_gb, req.account) == (2, 14, 120, "project_465000123")


def test_whole_node_partitions_force_whole_nodes():
    req = parse({"site": "lumi", "partition": "standard-g"})
    assert (req.gpus, req.cpus, req.memory_gb, req.whole_node) == (8, 56, 480, True)
    with pytest.raises(RequestError, match="'gpus' must be 8 on this partition: standard-g gives whole nodes only"):
        parse({"site": "lumi", "partition": "standard-g", "gpus": 2})


def test_a_profile_expands_to_its_request():
    req = parse({"profile": "lumi-small-g-1gcd-2h"})
    assert (req.site, req.partition, req.gpus, req.hours, req.profile) == (
        "lumi",
        "small-g",
        1,
        2,
        "lumi-small-g-1gcd-2h",
    )


def test_batchspawner_injection_regression():
    """batchspawner merges user_options into the script: this would add an #SBATCH line."""
    with pytest.raises(RequestError, match="'partition' must be one of: cpu, standard-g"):
        parse({"partition": "small-g\n#SBATCH --qos=x"})


def test_hours_come_in_quarter_hours_and_reach_slurm_as_minutes():
    from aifa_workbench.spawners.script import format_walltime
    from aifa_workbench.spawners.profiles import options_from_form

    req = parse({"partition": "small-g", "hours": 1.5})
    assert req.hours == 1.5 and format_walltime(req.hours) == "1:30:00"
    assert parse({"partition": "small-g", "hours": 2.0}).hours == 2 and format_walltime(2) == "2:00:00"
    assert format_walltime(0.25) == "0:15:00"
    assert options_from_form({"profile": ["custom"], "hours": ["0.75"]})["hours"] == 0.75
    assert options_from_form({"profile": ["custom"], "hours": ["1e3"]})["hours"] == "1e3"  # refused by the rules


@pytest.mark.parametrize(
    "options, sentence",
    [
        ({"queue": "x"}, "Unknown option 'queue'; the options you may set are profile, site, partition"),
        ({"partition": "small-g", "gpus": 9}, "'gpus' must be from 1 to 8; 9 is out of range."),
        ({"partition": "small-g", "gpus": 2, "cpus": 15}, "'cpus' must be from 1 to 14; 15 is out of range."),
        ({"partition": "gpu", "gpus": 1, "memory_gb": 61}, "'memory_gb' must be from 1 to 60; 61 is out of range."),
        ({"partition": "cpu", "gpus": 1}, "'gpus' must be 0 on this partition: cpu has no GPUs."),
        ({"partition": "small-g", "gpus": True}, "'gpus' must be a whole number from 1 to 8."),
        ({"partition": "small-g", "gpus": "2"}, "'gpus' must be a whole number from 1 to 8."),
        ({"partition": "dev-g", "hours": 4}, "'hours' must be from 0.25 to 3; 4 is out of range."),
        ({"hours": 1.3}, "'hours' must be a number of hours from 0.25 to 48, in quarter hours (0.25, 0.5, 1.5, …)."),
        ({"hours": "2"}, "'hours' must be a number of hours from 0.25 to 48"),
        ({"hours": True}, "'hours' must be a number of hours from 0.25 to 48"),
        ({"hours": float("nan")}, "'hours' must be a number of hours from 0.25 to 48"),
        ({"hours": float("inf")}, "'hours' must be a number of hours from 0.25 to 48"),
        ({"hours": 0}, "'hours' must be from 0.25 to 48; 0 is out of range."),
        ({"account": "proj_research"}, "'account' must be one of: proj_sme, proj_training; 'proj_research' is not"),
        ({"reservation": "other"}, "'reservation' must be one of: intro-to-llms; 'other' is not one of them."),
        ({"environment": "conda"}, "'environment' must be one of: workbench; 'conda' is not one of them."),
        ({"site": "lumi; id"}, "'site' must be one of: jupiter, local, lucia, lumi"),
        ({"profile": "nope"}, "'profile' must be one of: jupiter-booster-1node-2h, local-cpu-1core-2h"),
        ({"profile": "local-gpu-1gpu-2h", "gpus": 4}, "A profile sets the resources itself"),
    ],
)
def test_refusals_name_the_field_and_the_allowed_values(options, sentence):
    with pytest.raises(RequestError) as info:
        parse(options)
    assert sentence in str(info.value)


def test_a_user_without_a_project_is_told_so():
    with pytest.raises(RequestError, match="You have no project .* on JUPITER"):
        parse({"site": "jupiter"})


def test_not_an_object():
    with pytest.raises(RequestError, match="JSON object"):
        parse(["cpu"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
names = st.sampled_from(
    [
        "local",
        "lumi",
        "lucia",
        "jupiter",
        "cpu",
        "small-g",
        "standard-g",
        "gpu",
        "booster",
        "proj_sme",
        "intro-to-llms",
        "workbench",
        "lumi-stack",
        "local-gpu-1gpu-2h",
    ]
)
options_strategy = st.dictionaries(
    st.sampled_from(
        [
            "profile",
            "site",
            "partition",
            "gpus",
            "cpus",
            "memory_gb",
            "hours",
            "account",
            "reservation",
            "environment",
            "cmd",
        ]
    )
    | st.text(max_size=8),
    json_values | names | st.integers(-3, 600),
    max_size=6,
)
SBATCH_OPTIONS = (
    "--job-name=",
    "--account=",
    "--partition=",
    "--time=",
    "--nodes=",
    "--ntasks=",
    "--cpus-per-task=",
    "--mem=",
    "--gpus-per-node=",
    "--gres=gpu:",
    "--exclusive",
    "--reservation=",
    "--chdir=",
    "--output=",
    "--export=",
    "--no-requeue",
)


@settings(max_examples=300)
@given(options_strategy)
def test_anything_is_refused_or_yields_a_bounded_request_and_a_safe_script(options):
    try:
        req = parse(options)
    except RequestError:
        return
    part = SITES[req.site].partitions[req.partition]
    assert 0 <= req.gpus <= part.gpus_per_node and 1 <= req.cpus <= part.cores_per_node
    assert 1 <= req.memory_gb <= part.memory_gb_per_node and 0.25 <= req.hours <= part.max_hours
    assert req.account in USER.accounts[req.site]
    script = render_batch_script(req, SITES[req.site], CTX)
    sbatch_lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert all(line.split(" ", 1)[1].startswith(SBATCH_OPTIONS) for line in sbatch_lines)
    assert len(sbatch_lines) == len({line.split("=")[0] for line in sbatch_lines})
