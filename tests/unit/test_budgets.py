"""What is left of a project's allocation (sites/slurm_cli.parse_budgets, model/budget.py): read
from Slurm's association manager, in the site's unit, and the sentence that refuses more."""

from aifa_workbench.model.budget import budgets_from_slurm, refusal
from aifa_workbench.sites.slurm_cli import budgets_argv, parse_budgets

TRES = "cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing={billing},fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)"


def record(account, user, mins, run_mins, uid="(1003)"):
    who = f"{user}{uid}" if user else ""
    return (
        f"ClusterName=aifa-local Account={account} UserName={who} Partition= Priority=0 ID=9\n"
        f"    SharesRaw/Norm/Level/Factor=1/0.00/1/0.00\n"
        f"    GrpTRESMins={TRES.format(billing=mins)}\n"
        f"    GrpTRESRunMins={TRES.format(billing=run_mins)}\n"
        f"    MaxJobs= MaxJobsAccrue= MaxSubmitJobs= MaxWallPJ=\n"
    )


def test_the_tightest_limit_that_binds_the_user_is_their_budget():
    output = (
        "Current Association Manager state\n\nAssociation Records\n\n"
        + record("proj_budget", "", "60000(30000)", "N(6000)")  # account: 10 units, 5 used, 1 held
        + record("proj_budget", "carol", "12000(3000)", "N(6000)")  # carol's own: 2 units, 0.5 used, 1 held
        + record("proj_budget", "alice", "600(0)", "N(0)", "(1001)")  # another user's limit: not carol's
        + record("proj_open", "", "N(500)", "N(0)")  # no limit: no budget
        + record("bad;x", "", "6000(0)", "N(0)")
    )
    minutes = parse_budgets(output, "carol")
    assert minutes == {"proj_budget": {"limit": 12000, "used": 3000, "running": 6000}}
    budget = budgets_from_slurm(minutes, 100, "GPU-hours")["proj_budget"]
    assert (budget.limit, budget.left) == (2.0, 0.5)
    assert budget.text() == "0.5 of 2 GPU-hours left in proj_budget"
    assert parse_budgets(output, "alice")["proj_budget"]["limit"] == 600
    assert parse_budgets("", "carol") == {} and parse_budgets("garbage\nGrpTRESMins=billing=5(1)", "x") == {}


def test_a_request_costing_more_than_is_left_is_refused_in_words():
    [budget] = budgets_from_slurm({"proj_sme": {"limit": 3000, "used": 0, "running": 0}}, 100, "GPU-hours").values()
    assert refusal(budget, 0.5) is None
    sentence = refusal(budget, 1.0)
    assert sentence == (
        "Project proj_sme has 0.5 GPU-hours left, and this session would use up to 1 GPU-hours. "
        "Ask for fewer GPUs or hours, choose another project, or ask your project's manager for more."
    )
    spent = budgets_from_slurm({"p": {"limit": 6000, "used": 7000, "running": 0}}, 100, "node-hours")["p"]
    assert spent.left == 0 and "has 0 node-hours left" in refusal(spent, 0.25)


def test_the_query_names_only_the_accounts():
    assert budgets_argv("/usr/bin", ["proj_a", "proj_b"]) == [
        "/usr/bin/scontrol",
        "show",
        "assoc_mgr",
        "accounts=proj_a,proj_b",
        "flags=assoc",
    ]


def test_lumis_billing_file_gives_the_projects_gpu_hours():
    from aifa_workbench.model.budget import budget_from_lumi_file
    from aifa_workbench.sites.slurm_cli import project_file_argv

    text = (
        '{"name": "project_465000123", "title": "x", "billing": {"cpu_hours": {"alloc": 1000, "used": 10}, '
        '"gpu_hours": {"alloc": 50, "used": 49.5}, "storage_hours": {"alloc": 1, "used": 0}}}'
    )
    budget = budget_from_lumi_file(text, "project_465000123", "GPU-hours")
    assert budget.text() == "0.5 of 50 GPU-hours left in project_465000123"
    assert budget_from_lumi_file(text, "project_465000123", "core-hours").left == 990
    assert budget_from_lumi_file(text, "project_465000456", "GPU-hours") is None  # another project's file
    assert budget_from_lumi_file("", "p", "GPU-hours") is None
    assert budget_from_lumi_file('{"billing": {"gpu_hours": {"alloc": "NaN", "used": 0}}}', "p", "GPU-hours") is None
    assert (
        project_file_argv("/var/lib/project_info/users/{project}/{project}.json", "project_465000123")[-1]
        == "/var/lib/project_info/users/project_465000123/project_465000123.json"
    )
    assert project_file_argv("/x/{project}.json", "../../etc/shadow") is None


def test_a_parent_accounts_limit_binds_its_children_as_slurm_checks_it():
    from aifa_workbench.sites.slurm_cli import budgets_from_records, parents_to_ask, parse_assoc_records

    child = record("course_ws01", "", "N(100)", "N(0)").replace(
        "Priority=0 ID=9\n", "Priority=0 ID=9\n    ParentAccount=proj_training(7) Lft=3\n"
    )
    records = parse_assoc_records(child + record("course_ws01", "carol", "N(0)", "N(0)"))
    assert parents_to_ask(records, {"course_ws01"}) == {"proj_training"}
    assert budgets_from_records(records, ["course_ws01"], "carol") == {}  # no limit known yet
    parent = record("proj_training", "", "6000(5000)", "N(600)").replace(
        "Priority=0 ID=9\n", "Priority=0 ID=9\n    ParentAccount=root(1) Lft=2\n"
    )
    records += parse_assoc_records(parent)
    assert parents_to_ask(records, {"course_ws01", "proj_training"}) == set()  # root is never asked
    assert budgets_from_records(records, ["course_ws01"], "carol") == {
        "course_ws01": {"limit": 6000, "used": 5000, "running": 600}
    }
