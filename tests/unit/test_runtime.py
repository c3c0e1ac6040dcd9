"""The job runtime on a site: the commands that install it (on the site's Python, and inside each
container image on the image's packages) and reading which runtime a site runs."""

import shlex

import pytest

from aifa_workbench.sites import runtime

from .fakes import ScriptedRunner, ok

IMAGE = runtime.ContainerImage(
    "pytorch-container",
    "/appl/images/torch-20260415.sif",
    ("module purge", "module load lumi-aif-singularity-bindings"),
)


def test_the_runtime_is_built_from_the_uploaded_wheels_only_and_switched_to_at_once():
    mkdir, build = runtime.install_argvs("/appl/wb", "1.0-abc", "/usr/bin/python3")
    assert mkdir == ["mkdir", "-p", "/appl/wb/wheelhouse"]
    assert build[:2] == ["/bin/sh", "-c"]
    script = build[2]
    assert "/usr/bin/python3 -m venv --clear /appl/wb/1.0-abc" in script
    assert "--no-index --find-links /appl/wb/wheelhouse aifa-workbench" in script
    assert script.index("current.new") < script.index("mv -T /appl/wb/current.new /appl/wb/current")


def test_a_container_environment_gets_a_runtime_made_inside_its_image():
    _, _, in_image = runtime.install_argvs("/appl/wb", "1.0-abc", "/usr/bin/python3", (IMAGE,))
    assert in_image[:2] == ["/bin/bash", "-lc"]  # a login shell: the image needs the site's modules
    lines = in_image[2].splitlines()
    assert lines[:3] == ["set -e", "module purge", "module load lumi-aif-singularity-bindings"]
    inside = shlex.join(["singularity", "run", "--bind", "/appl/wb", IMAGE.image])
    target = "/appl/wb/containers/pytorch-container/1.0-abc"
    assert f"{inside} python3 -m venv --system-site-packages --clear {target}" in lines[-1]
    assert f"{inside} {target}/bin/pip --isolated install" in lines[-1]  # pip runs in the image too
    assert (
        "mv -T /appl/wb/containers/pytorch-container/current.new /appl/wb/containers/pytorch-container/current"
        in lines[-1]
    )


async def test_installed_runtimes_are_read_in_one_command_and_a_missing_one_is_none():
    runner = ScriptedRunner([ok("1.0-abc\n\n")])
    found = await runtime.installed_runtimes(runner, "ops", "/appl/wb", ["pytorch-container"])
    assert found == {"": "1.0-abc", "pytorch-container": None}
    assert runner.argvs[0][-2:] == [
        "/appl/wb/current/aifa-workbench-runtime",
        "/appl/wb/containers/pytorch-container/current/aifa-workbench-runtime",
    ]
    assert await runtime.installed_runtime(ScriptedRunner([(1, "", "no such file")]), "ops", "/appl/wb") is None


def test_the_interpreters_are_probed_on_the_site_and_inside_each_image():
    site, image = runtime.probe_argvs("/appl/wb", "/usr/bin/python3", (IMAGE,))
    assert site == ["/usr/bin/python3", "-c", runtime.INTERPRETER_PROBE]
    lines = image[2].splitlines()
    assert image[:2] == ["/bin/bash", "-lc"] and lines[1:3] == [
        "module purge",
        "module load lumi-aif-singularity-bindings",
    ]
    assert lines[-1].startswith(shlex.join(["singularity", "run", "--bind", "/appl/wb", IMAGE.image, "python3", "-c"]))


async def test_wheels_for_another_python_are_refused_with_a_sentence_before_anything_is_uploaded():
    this = runtime.this_interpreter()
    await runtime.check_interpreters(
        ScriptedRunner([ok(this + "\n"), ok("a runscript's banner\n" + this + "\n")]),
        "ops",
        "LUMI",
        "/appl/wb",
        "/usr/bin/python3",
        (IMAGE,),
        this,
    )
    with pytest.raises(runtime.RuntimeError_) as refused:
        await runtime.check_interpreters(
            ScriptedRunner([ok("3.6 x86_64\n")]), "ops", "LUMI", "/appl/wb", "/usr/bin/python3", (), "3.11 x86_64"
        )
    assert (
        "the site's Python /usr/bin/python3 is Python 3.6 x86_64, but this hub's wheels are for Python "
        "3.11 x86_64; set paths.python" in refused.value.sentence
    )
    with pytest.raises(runtime.RuntimeError_) as refused:
        await runtime.check_interpreters(
            ScriptedRunner([ok("3.11 x86_64\n"), ok("3.11 aarch64\n")]),
            "ops",
            "JUPITER",
            "/e/wb",
            "/usr/bin/python3",
            (IMAGE,),
            "3.11 x86_64",
        )
    assert f"the python3 inside {IMAGE.image} is Python 3.11 aarch64" in refused.value.sentence
    with pytest.raises(runtime.RuntimeError_) as refused:  # no such Python: that, not a version
        await runtime.check_interpreters(
            ScriptedRunner([(127, "", "sh: /opt/py/bin/python3: not found")]),
            "ops",
            "Lucia",
            "/w",
            "/opt/py/bin/python3",
            (),
            "3.11 x86_64",
        )
    assert "the site's Python /opt/py/bin/python3 did not answer" in refused.value.sentence
    assert "not found" in refused.value.sentence and "wheels are for" not in refused.value.sentence


def test_a_wheelhouse_says_which_interpreter_its_wheels_are_for(tmp_path):
    assert runtime.wheelhouse_target(tmp_path) is None  # an older wheelhouse: nothing to check
    (tmp_path / runtime.TARGET).write_text("3.11 x86_64\n")
    assert runtime.wheelhouse_target(tmp_path) == "3.11 x86_64"
