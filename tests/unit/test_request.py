import pytest
from hypothesis import given, strategies as st

from aifa_workbench.spawners.request import PartitionLimits, RequestError, parse_job_request
from aifa_workbench.spawners.script import ScriptContext, render_batch_script

PARTITIONS = {
    "cpu": PartitionLimits("cpu", 0, 48),
    "small-g": PartitionLimits("small-g", 8, 72),
    "dev-g": PartitionLimits("dev-g", 8, 3),
}
CTX = ScriptContext(username="alice", home="/home/alice", venv_bin="/opt/v/bin",
                    launch_argv=("/opt/v/bin/jupyterhub-singleuser",), export_names=("JUPYTERHUB_API_TOKEN",))


def parse(options):
    return parse_job_request(options, PARTITIONS, "cpu")


def test_defaults():
    req = parse({})
    assert (req.partition, req.gpus, req.hours) == ("cpu", 0, 1)


def test_a_valid_gpu_request():
    req = parse({"partition": "small-g", "gpus": 2, "hours": 3})
    assert (req.partition, req.gpus, req.hours) == ("small-g", 2, 3)


def test_batchspawner_injection_regression():
    """batchspawner merges user_options into the script: this would add an #SBATCH line."""
    with pytest.raises(RequestError, match="'partition' must be one of cpu, dev-g, small-g"):
        parse({"partition": "small-g\n#SBATCH --qos=x"})


@pytest.mark.parametrize("options, field", [
    ({"queue": "x"}, "'queue'"),
    ({"gpus": 9, "partition": "small-g"}, "'gpus' must be from 0 to 8"),
    ({"gpus": 1}, "'gpus' must be from 0 to 0"),
    ({"gpus": True, "partition": "small-g"}, "'gpus' must be a whole number"),
    ({"gpus": "2", "partition": "small-g"}, "'gpus' must be a whole number"),
    ({"hours": 4, "partition": "dev-g"}, "'hours' must be from 1 to 3"),
    ({"hours": 1.5}, "'hours' must be a whole number"),
    ({"partition": ["cpu"]}, "'partition' must be one of"),
])
def test_refusals_name_the_field(options, field):
    with pytest.raises(RequestError) as info:
        parse(options)
    assert field in str(info.value)
    assert str(info.value).endswith(".")


def test_not_an_object():
    with pytest.raises(RequestError, match="JSON object"):
        parse(["cpu"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)
options_strategy = st.dictionaries(
    st.sampled_from(["partition", "gpus", "hours", "account", "cmd"]) | st.text(max_size=8),
    json_values | st.sampled_from(["cpu", "small-g", "dev-g"]) | st.integers(-3, 100),
    max_size=4,
)


@given(options_strategy)
def test_anything_is_refused_or_yields_a_safe_script(options):
    try:
        req = parse(options)
    except RequestError:
        return
    assert req.partition in PARTITIONS
    assert 0 <= req.gpus <= PARTITIONS[req.partition].max_gpus
    assert 1 <= req.hours <= PARTITIONS[req.partition].max_hours
    script = render_batch_script(req, CTX)
    sbatch_lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    allowed = ("--job-name=", "--partition=", "--time=", "--nodes=", "--ntasks=", "--cpus-per-task=",
               "--mem=", "--gpus-per-node=", "--chdir=", "--output=", "--export=")
    assert all(line.split(" ", 1)[1].startswith(allowed) for line in sbatch_lines)
    assert len(sbatch_lines) == len({line.split("=")[0] for line in sbatch_lines})
