import pytest

from aifa_workbench.spawners.request import JobRequest
from aifa_workbench.spawners.script import ScriptContext, ScriptError, render_batch_script, sbatch_value

CTX = ScriptContext(username="alice", home="/home/alice", venv_bin="/opt/aifa-workbench/venv/bin",
                    launch_argv=("/opt/aifa-workbench/venv/bin/batchspawner-singleuser",
                                 "/opt/aifa-workbench/venv/bin/jupyterhub-singleuser", "--debug"),
                    export_names=("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"))


def test_gpu_job_script():
    script = render_batch_script(JobRequest("small-g", 2, 3), CTX)
    assert script.startswith("#!/bin/bash\n")
    for line in ["#SBATCH --partition=small-g", "#SBATCH --time=3:00:00", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --export=JUPYTERHUB_API_TOKEN,JUPYTERHUB_API_URL",
                 "#SBATCH --output=/home/alice/.aifa-workbench-job-%j.log",
                 "exec /opt/aifa-workbench/venv/bin/batchspawner-singleuser "
                 "/opt/aifa-workbench/venv/bin/jupyterhub-singleuser --debug"]:
        assert line in script.splitlines()


def test_cpu_job_has_no_gpu_line():
    assert "--gpus-per-node" not in render_batch_script(JobRequest("cpu", 0, 1), CTX)


def test_shell_values_are_quoted():
    ctx = ScriptContext(**{**CTX.__dict__, "launch_argv": ("/x/jupyterhub-singleuser", "--name=a b;id")})
    assert "'--name=a b;id'" in render_batch_script(JobRequest("cpu", 0, 1), ctx)


@pytest.mark.parametrize("bad", ["a b", "x\n#SBATCH --qos=admin", "", "$(id)", "a'b"])
def test_sbatch_lines_refuse_anything_but_plain_tokens(bad):
    with pytest.raises(ScriptError):
        sbatch_value(bad)


def test_a_home_with_a_space_is_refused_not_written():
    ctx = ScriptContext(**{**CTX.__dict__, "home": "/home/a b"})
    with pytest.raises(ScriptError):
        render_batch_script(JobRequest("cpu", 0, 1), ctx)


def test_environment_names_are_checked():
    ctx = ScriptContext(**{**CTX.__dict__, "export_names": ("JUPYTERHUB_X,ALL",)})
    with pytest.raises(ScriptError):
        render_batch_script(JobRequest("cpu", 0, 1), ctx)
