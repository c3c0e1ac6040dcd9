"""The job runtime on a site, one per environment: the commands that ask an environment's Python
what it is and install the runtime for it (after its modules, inside its image), which wheels each
interpreter gets, and reading which runtime each environment runs."""

import json
import shlex
import sys

import pytest

from aifa_workbench.hub_config import wheelhouses
from aifa_workbench.model.interpreter import PROBE, Interpreter, InterpreterError, parse_probe
from aifa_workbench.model.site import Environment
from aifa_workbench.sites import runtime

from .fakes import ScriptedRunner, ok

STACK = Environment("lumi-stack", "LUMI stack", ("module load LUMI/25.03 partition/G", "module load cray-python"))
IMAGE = "/appl/images/torch-20260415.sif"
CONTAINER = Environment(
    "pytorch-container", "PyTorch", ("module purge", "module load lumi-aif-singularity-bindings"), IMAGE
)
JUPITER = Interpreter("3.13", "cp313", "aarch64", "2.41")
HUB = Interpreter("3.11", "cp311", "x86_64", "2.36")


def facts(**changes) -> str:
    base = {"version": "3.13", "abi": "cp313", "implementation": "cpython", "machine": "aarch64", "glibc": "2.41"}
    return json.dumps({**base, **changes})


def test_the_probe_runs_on_any_python_and_describes_the_one_running_it():
    import subprocess

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    this = parse_probe(out)
    assert this.version == "%d.%d" % sys.version_info[:2] and this.abi.startswith("cp3")
    assert this.glibc.startswith("2.")


def test_what_a_probe_prints_is_checked_field_by_field():
    assert parse_probe("a module's banner\n" + facts() + "\n") == JUPITER
    for bad, why in (
        ("", "printed no interpreter facts"),
        ("Python 3.6.15", "printed no interpreter facts"),
        (facts(implementation="pypy"), "is pypy, not CPython"),
        (facts(glibc=""), "does not run on glibc"),
        (facts(machine="x86_64; rm -rf /"), "reported machine"),
        (facts(version="3.13.5"), "reported version"),
        (facts(abi="cp313d"), "reported abi"),
        (facts(abi="cp313t"), "reported abi"),  # free-threaded: not supported
        (facts(version="3.13\n"), "reported version"),
    ):
        with pytest.raises(InterpreterError, match=why):
            parse_probe(bad)


def test_wheels_are_chosen_for_the_interpreter_and_every_older_manylinux():
    platforms = JUPITER.platforms()
    assert platforms[0] == "manylinux_2_41_aarch64" and "manylinux_2_17_aarch64" in platforms
    assert platforms[-1] == "manylinux2014_aarch64" and not any("x86_64" in p for p in platforms)
    args = JUPITER.pip_download_args()
    assert args[:5] == ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.13"]
    assert args[5:7] == ["--abi", "cp313"] and JUPITER.key == "cp313-aarch64-glibc2.41"


def test_the_hubs_own_wheels_serve_an_interpreter_only_of_its_python_machine_and_a_newer_c_library():
    assert Interpreter("3.11", "cp311", "x86_64", "2.41").runs_wheels_built_for(HUB)
    assert not Interpreter("3.11", "cp311", "x86_64", "2.31").runs_wheels_built_for(HUB)  # LUMI's SLES
    assert not Interpreter("3.11", "cp311", "aarch64", "2.41").runs_wheels_built_for(HUB)
    assert not JUPITER.runs_wheels_built_for(HUB)


def test_an_environments_python_is_asked_after_its_modules_and_inside_its_image():
    native = runtime.probe_argv("/appl/wb", STACK)
    assert native[:2] == ["/bin/bash", "-lc"]  # a login shell: the site's `module`
    lines = native[2].splitlines()
    assert lines[:3] == ["set -e", *STACK.setup] and lines[3] == shlex.join(["python3", "-c", PROBE])
    inside = runtime.probe_argv("/appl/wb", CONTAINER)[2].splitlines()
    assert inside[1:3] == list(CONTAINER.setup)
    assert inside[-1] == shlex.join(["singularity", "run", "--bind", "/appl/wb", IMAGE, "python3", "-c", PROBE])


OWN = "/appl/wb/wheels/own/1.0-abc/aifa_workbench-1.0-py3-none-any.whl"
PINS = ["dask==2026.1.0", "numpy==2.4.6"]


def test_a_runtime_is_made_by_the_environments_python_from_its_interpreters_wheels_and_switched_to_at_once():
    argv = runtime.install_argv("/appl/wb", STACK, "1.0-abc", JUPITER, "0123456789ab", PINS, OWN)
    lines = argv[2].splitlines()
    assert lines[:3] == ["set -e", *STACK.setup]
    target, base = "/appl/wb/envs/lumi-stack/1.0-abc", "/appl/wb/envs/lumi-stack/base-0123456789ab"
    house = "/appl/wb/wheels/cp313-aarch64-glibc2.41"
    # the same runtime already current: nothing is remade under running jobs
    assert lines[4].startswith(
        "if [ \"$(cat /appl/wb/envs/lumi-stack/current/aifa-workbench-runtime 2>/dev/null)\" = '1.0-abc cp313-aarch64-glibc2.41' ]"
    )
    assert f"pip=$(ls -d {house}/pip-*.whl | tail -n 1)/pip" in lines  # pip from its wheel: no ensurepip needed
    # the base, once per wheel set: exactly its pinned dependencies, made by the environment's python3
    assert f"if [ ! -e {base}/aifa-workbench-base ]; then" in lines
    assert f"  python3 -m venv --clear --without-pip {base}" in lines
    pinned = f'  {base}/bin/python "$pip" --isolated install --quiet --no-index --find-links {house} dask==2026.1.0 numpy==2.4.6'
    assert pinned in lines
    # the layer: this runtime's own wheel alone, on top of the base, with its commands and Jupyter data
    assert f"python3 -m venv --clear --without-pip {target}" in lines
    assert f'{target}/bin/python "$pip" --isolated install --quiet --no-index --no-deps {OWN}' in lines
    pth = f"{target}/lib/python3.13/site-packages/aifa-workbench-base.pth"
    assert any(line.endswith(f"> {pth}") and f"{base}/lib/python3.13/site-packages" in line for line in lines)
    assert (
        f"[ -x {target}/bin/jupyterhub-singleuser ] || {{ echo 'no jupyterhub-singleuser in the runtime' >&2; exit 1; }}"
        in lines
    )
    assert f"printf '%s\\n' '1.0-abc cp313-aarch64-glibc2.41' > {target}/aifa-workbench-runtime" in lines
    assert lines.index("mv -T /appl/wb/envs/lumi-stack/current.new /appl/wb/envs/lumi-stack/current") < len(lines) - 1


def test_the_base_is_named_by_its_pinned_dependencies_its_interpreter_and_its_image():
    wheels = ["numpy-2.4.6-cp313-cp313-manylinux_2_27_aarch64.whl", "dask-2026.1.0-py3-none-any.whl"]
    own = ["aifa_workbench-0.1.0-py3-none-any.whl", "pip-26.3-py3-none-any.whl"]
    assert runtime.pins(wheels + own) == ["dask==2026.1.0", "numpy==2.4.6"]
    base = runtime.wheel_set(wheels + own, JUPITER)
    assert base == runtime.wheel_set(wheels + ["aifa_workbench-0.2.0-py3-none-any.whl"], JUPITER)  # a new commit
    assert base != runtime.wheel_set(wheels[:1] + ["dask-2026.2.0-py3-none-any.whl"], JUPITER)
    assert base != runtime.wheel_set(wheels, JUPITER, IMAGE) != runtime.wheel_set(wheels, HUB)
    assert len(base) == 12


def test_a_container_environments_runtime_is_made_inside_its_image_on_its_packages():
    lines = runtime.install_argv("/appl/wb", CONTAINER, "1.0-abc", JUPITER, "0123456789ab", PINS, OWN)[2].splitlines()
    inside = shlex.join(["singularity", "run", "--bind", "/appl/wb", IMAGE])
    target = "/appl/wb/envs/pytorch-container/1.0-abc"
    assert f"{inside} python3 -m venv --clear --without-pip --system-site-packages {target}" in lines
    assert any(line.startswith(f'{inside} {target}/bin/python "$pip" --isolated install') for line in lines)


async def test_an_environment_without_a_python_is_refused_with_what_the_site_said():
    with pytest.raises(runtime.RuntimeError_) as refused:
        await runtime.interpreter_of(
            ScriptedRunner([(127, "", "bash: line 3: python3: command not found")]), "ops", "LUMI", "/w", STACK
        )
    assert "the environment lumi-stack has no Python that answered" in refused.value.sentence
    assert "python3: command not found" in refused.value.sentence
    with pytest.raises(runtime.RuntimeError_, match="the environment lumi-stack: its python3 is pypy"):
        await runtime.interpreter_of(ScriptedRunner([ok(facts(implementation="pypy"))]), "ops", "LUMI", "/w", STACK)
    assert await runtime.interpreter_of(ScriptedRunner([ok(facts())]), "ops", "JUPITER", "/w", STACK) == JUPITER


async def test_installed_runtimes_are_read_in_one_command_and_a_missing_one_is_none():
    runner = ScriptedRunner([ok("1.0-abc cp311-x86_64-glibc2.41\n\n")])
    found = await runtime.installed_runtimes(runner, "ops", "/appl/wb", ["lumi-stack", "pytorch-container"])
    assert found == {"lumi-stack": "1.0-abc", "pytorch-container": None}
    assert runner.argvs[0][-2:] == [
        "/appl/wb/envs/lumi-stack/current/aifa-workbench-runtime",
        "/appl/wb/envs/pytorch-container/current/aifa-workbench-runtime",
    ]
    failed = await runtime.installed_runtimes(ScriptedRunner([(1, "", "no such file")]), "ops", "/w", ["a"])
    assert failed == {"a": None}


def wheelhouse(tmp_path, target: Interpreter):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    (house / "aifa_workbench-0.1.0-py3-none-any.whl").write_text("")
    (house / "SOURCE").write_text("0123456789abcdef\n")
    (house / "TARGET").write_text(json.dumps({**json.loads(facts()), **target.__dict__}) + "\n")
    return house


async def test_an_interpreter_like_the_hubs_gets_the_hubs_wheels_and_another_gets_wheels_chosen_for_it(
    tmp_path, monkeypatch
):
    house = wheelhouse(tmp_path, HUB)
    same = Interpreter("3.11", "cp311", "x86_64", "2.41")
    assert await wheelhouses.wheelhouse_for(same, house, tmp_path / "cache") == house
    calls = []

    async def fake_exec(*argv, **kwargs):
        calls.append(argv)
        dest = argv[argv.index("--dest") + 1]
        (tmp_path / dest).joinpath("numpy-2.4.6-cp313-cp313-manylinux_2_27_aarch64.whl").write_text("")

        class Done:
            returncode = 0

            async def communicate(self):
                return b"", b""

        return Done()

    monkeypatch.setattr(wheelhouses.asyncio, "create_subprocess_exec", fake_exec)
    chosen = await wheelhouses.wheelhouse_for(JUPITER, house, tmp_path / "cache", log=lambda _: None)
    assert chosen == tmp_path / "cache" / "0.1.0-0123456789ab" / "cp313-aarch64-glibc2.41"
    assert (chosen / "numpy-2.4.6-cp313-cp313-manylinux_2_27_aarch64.whl").exists()
    argv = calls[0]
    assert argv[-2:] == ("aifa-workbench==0.1.0", "pip") and "--find-links" in argv
    assert await wheelhouses.wheelhouse_for(JUPITER, house, tmp_path / "cache") == chosen and len(calls) == 1


async def test_no_wheels_for_an_interpreter_is_a_sentence_and_leaves_nothing_half_made(tmp_path, monkeypatch):
    house = wheelhouse(tmp_path, HUB)

    async def failing_exec(*argv, **kwargs):
        class Failed:
            returncode = 1

            async def communicate(self):
                return b"", b"ERROR: No matching distribution found for pyzmq==27.3.0"

        return Failed()

    monkeypatch.setattr(wheelhouses.asyncio, "create_subprocess_exec", failing_exec)
    with pytest.raises(wheelhouses.WheelsUnavailable) as refused:
        await wheelhouses.wheelhouse_for(JUPITER, house, tmp_path / "cache", log=lambda _: None)
    assert "no binary wheels of the workbench's packages for Python 3.13 on aarch64 (glibc 2.41)" in str(refused.value)
    assert "pyzmq" in str(refused.value)
    assert not list((tmp_path / "cache").rglob("*.partial"))


async def test_a_spawn_is_refused_where_the_chosen_environment_has_no_runtime_of_this_hub_naming_the_fix(tmp_path):
    import logging

    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.spawners import submission
    from aifa_workbench.spawners.errors import SpawnError

    from .fakes import scripted_control

    house = wheelhouse(tmp_path, HUB)  # runtime 0.1.0-0123456789ab
    lumi = load_catalogue()["lumi"]
    log = logging.getLogger("test")
    control, runner = scripted_control([ok("0.1.0-0123456789ab cp311-x86_64-glibc2.41\n")])
    await submission.check_runtime(lumi, "lumi-stack", control, "alice", str(house), log)
    assert runner.argvs[0][-1] == "/appl/local/aifa-workbench/envs/lumi-stack/current/aifa-workbench-runtime"
    for stamp, state in (
        ("\n", "is not installed there yet"),
        ("0.0.9-old cp311-x86_64-glibc2.41\n", "is outdated there"),
    ):
        control, _ = scripted_control([ok(stamp)])
        with pytest.raises(SpawnError) as refused:
            await submission.check_runtime(lumi, "pytorch-container", control, "alice", str(house), log)
        assert str(refused.value).startswith(
            f"The workbench's software for “LUMI AI Factory PyTorch container” on {lumi.title} {state}, so your "
            "server was not started."
        )
        assert "`aifa-workbench install-runtime lumi pytorch-container`" in str(refused.value)


def test_a_container_jobs_helpers_run_from_a_runtime_of_the_nodes_own():
    """The tunnel needs the node's ssh (an image may have none): a container environment's job runs
    its helpers from the site's default environment of the node's own, its server in the image."""
    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.spawners.script import helper_environment, runtime_paths

    lumi = load_catalogue()["lumi"]
    assert helper_environment(lumi, "pytorch-container") == "lumi-stack"
    assert helper_environment(lumi, "lumi-stack") == "lumi-stack"
    paths = runtime_paths(lumi, "pytorch-container", "/opt/venv")
    assert paths.venv_bin == "/appl/local/aifa-workbench/envs/lumi-stack/current/bin"
    assert paths.server_bin == "/appl/local/aifa-workbench/envs/pytorch-container/current/bin"
