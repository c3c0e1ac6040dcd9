"""The site catalogue: the bundled files load; typos, wrong types and inconsistencies are refused
with file, key and reason."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aifa_workbench.model.catalogue import CatalogueError, bundled_sites_dir, load_catalogue, load_site
from aifa_workbench.model.cost import estimate_cost

ROOT = Path(__file__).resolve().parents[2]
LUMI = yaml.safe_load((bundled_sites_dir() / "lumi.yaml").read_text())


def test_bundled_catalogue_loads_every_site():
    sites = load_catalogue()
    assert set(sites) == {"local", "lumi", "jupiter", "lucia"}
    assert set(sites["lumi"].partitions) == {"standard-g", "small-g", "dev-g"}
    assert set(sites["lucia"].partitions) == {"gpu", "ia", "debug-gpu"}
    assert set(sites["jupiter"].partitions) == {"booster"}
    assert set(sites["local"].partitions) >= {
        "standard-g",
        "small-g",
        "dev-g",
        "booster",
        "gpu",
        "ia",
        "debug-gpu",
        "cpu",
    }


def test_a_site_says_where_its_runtime_and_slurm_are_and_nothing_of_its_homes():
    lumi = load_catalogue()["lumi"]
    assert lumi.paths.runtime == "/appl/local/aifa-workbench" and lumi.paths.slurm_bin == "/usr/bin"
    assert lumi.login.host == "lumi.csc.fi" and lumi.login.port == 22
    assert not hasattr(lumi.paths, "home")  # read from the site at each start (sites.home)


def test_local_partitions_mirror_the_sites_families():
    local = load_catalogue()["local"].partitions
    assert (local["small-g"].family, local["booster"].family, local["gpu"].family) == ("lumi", "jupiter", "lucia")


def test_lumi_billing_matches_the_documented_example():
    small_g = load_catalogue()["lumi"].partitions["small-g"]
    assert estimate_cost(small_g, gpus=2, cpus=14, memory_gb=120, hours=3) == 3.0  # "2 GCDs, 3 h ≈ 3.0"
    assert estimate_cost(small_g, gpus=1, cpus=7, memory_gb=120, hours=1) == 1.0  # memory dominates
    standard_g = load_catalogue()["lumi"].partitions["standard-g"]
    assert estimate_cost(standard_g, 8, 56, 480, 2) == 8.0  # 4 GPU-hours per node-hour


def test_lucia_bills_billing_unit_hours_with_its_weights():
    lucia = load_catalogue()["lucia"].partitions
    assert estimate_cost(lucia["gpu"], gpus=1, cpus=8, memory_gb=60, hours=1) == 128  # accounting page
    assert estimate_cost(lucia["ia"], gpus=1, cpus=8, memory_gb=250, hours=1) == 204.8
    assert estimate_cost(lucia["gpu"], gpus=1, cpus=8, memory_gb=120, hours=1) == 256  # memory dominates


def write(tmp_path, data, name="lumi"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def mutated(change):
    data = copy.deepcopy(LUMI)
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["login"].update(host_keys=["ssh-ed25519 AAAA;rm -rf /"]),
            "login.host_keys.0: 'ssh-ed25519 AAAA;rm -rf /' does not match",
        ),
        (lambda d: d["login"].update(host="-oProxyCommand=x"), "login.host: '-oProxyCommand=x' does not match"),
        (
            lambda d: d["paths"].update(home="/users/{user}"),
            "paths.home: no longer used (each user's home is read from the site, their login's $HOME",
        ),
        (lambda d: d["paths"].update(runtime="/appl/$(id)"), "paths.runtime: '/appl/$(id)' does not match"),
        (
            lambda d: d.update(partitons={}),
            "(top level): Additional properties are not allowed ('partitons' was unexpected).",
        ),
        (
            lambda d: d["partitions"]["small-g"].update(gpus_per_node="8"),
            "partitions.small-g.gpus_per_node: '8' is not of type 'integer'.",
        ),
        (
            lambda d: d["partitions"]["small-g"].update(max_hours=0),
            "partitions.small-g.max_hours: 0 is less than the minimum of 1.",
        ),
        (
            lambda d: d["partitions"]["small-g"].update(allocation="exclusive"),
            "partitions.small-g.allocation: 'exclusive' is not one of",
        ),
        (
            lambda d: d["partitions"]["small-g"].pop("cpus_per_gpu"),
            "partitions.small-g: a shared GPU partition needs 'cpus_per_gpu'.",
        ),
        (
            lambda d: d["partitions"]["small-g"].update(memory_gb_per_gpu=61),
            "partitions.small-g.memory_gb_per_gpu: 61 GB x 8 GPUs is more than memory_gb_per_node.",
        ),
        (
            lambda d: d["partitions"].update({"Small G": d["partitions"]["small-g"]}),
            "partitions: 'Small G' does not match",
        ),
        (
            lambda d: d.update(default_environment="conda"),
            "default_environment: 'conda' is not one of the environments (lumi-stack, pytorch-container).",
        ),
        (lambda d: d["environments"][0].update(setup=["module load x\nrm -rf /"]), "environments.0.setup.0:"),
        (lambda d: d.update(name="lumi2"), "name: 'lumi2' must match the file name ('lumi')."),
        (lambda d: d["paths"].pop("runtime"), "environments[1].container: a container environment needs a remote site"),
        # a project's folder the batch script would refuse: plain segments only, {account} in one
        (lambda d: d["paths"].update(scratch="/scratch/{account}/"), "paths.scratch: '/scratch/{account}/' does not"),
        (lambda d: d["paths"].update(project="/project//{account}"), "paths.project: '/project//{account}' does not"),
        (lambda d: d["paths"].update(scratch="/scratch/../{account}"), "paths.scratch: '/scratch/../{account}' does"),
        (lambda d: d["paths"].update(project="/project/shared"), "paths.project: '/project/shared' does not match"),
        (lambda d: d["paths"].update(project="$PROJECT-{account}"), "paths.project: '$PROJECT-{account}' does not"),
        (lambda d: d["paths"].update(scratch="$(id){account}"), "paths.scratch: '$(id){account}' does not match"),
        (lambda d: d["partitions"]["small-g"]["billing"].update(kind="euros"), "partitions.small-g.billing:"),
        # an earlier release's site file: its dead fields are named, with what to do
        (
            lambda d: d.update(account_pattern="^project_46[25][0-9]{6}$"),
            "account_pattern: no longer used (an earlier release's field, which nothing read): delete the line.",
        ),
        (
            lambda d: d["partitions"]["small-g"].update(gpu_request="gpus_per_node"),
            "partitions.small-g.gpu_request: no longer used",
        ),
        (
            lambda d: d["paths"].update(python="/usr/bin/python3"),
            "paths.python: no longer used (each environment's runtime is made by the python3 its own setup",
        ),
        (
            lambda d: d["partitions"]["dev-g"].update(cpu_bind="mask_cpu:7e"),
            "partitions.dev-g.cpu_bind: no longer used",
        ),
    ],
)
def test_bad_site_files_name_file_key_and_reason(tmp_path, change, message):
    path = write(tmp_path, mutated(change))
    with pytest.raises(CatalogueError) as info:
        load_site(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_an_enabled_site_without_a_file(tmp_path):
    write(tmp_path, LUMI)
    with pytest.raises(CatalogueError, match="enabled site.s. lucia have no file there"):
        load_catalogue(tmp_path, ("lumi", "lucia"))


def test_not_yaml(tmp_path):
    path = tmp_path / "lumi.yaml"
    path.write_text("name: [lumi\n")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_site(path)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (installed with the demo's OIDC provider)")
def test_the_spawn_form_prices_a_request_as_the_hub_does():
    """The form evaluates each partition's cost_rule in JavaScript as the user types; the hub checks
    budgets with estimate_cost. Same numbers, for every bundled partition and a spread of requests."""
    from aifa_workbench.model.cost import cost_rule

    template = (ROOT / "spawners/templates/spawn_form.html.j2").read_text()
    function = re.search(r"^    function cost\(p, gpus, cpus, mem, hours\) \{.*?^    \}$", template, re.M | re.S)[0]
    cases = [
        (site, name, gpus, cpus, mem, hours)
        for site in load_catalogue().values()
        for name in site.partitions
        for gpus, cpus, mem, hours in [
            (0, 1, 2, 1),
            (1, 7, 60, 2),
            (2, 15, 100, 0.5),
            (3, 9, 250, 3),
            (8, 64, 480, 24),
            (1, 14, 1, 1.25),
        ]
    ]
    script = (
        function
        + "\nconst cases = "
        + json.dumps([[{"cost_rule": cost_rule(s.partitions[n])}, g, c, m, h] for s, n, g, c, m, h in cases])
        + (";\nconsole.log(JSON.stringify(cases.map((a) => cost(...a))));")
    )
    from_form = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    from_hub = [estimate_cost(s.partitions[n], g, c, m, h) for s, n, g, c, m, h in cases]
    assert from_form == pytest.approx(from_hub, rel=1e-12)
