"""A user's home on a site is read from the site (their login's $HOME) and tried for writing before
a job goes there; the hub keeps what the site said for that account only (sites.home, the
registry's `read` layer)."""

import subprocess

import pytest

from aifa_workbench.hub_config.site_accounts.registry import SiteAccounts
from aifa_workbench.sites import home
from aifa_workbench.sites.registry import Identities

from .fakes import ScriptedRunner, ok


def test_the_probe_reports_a_writable_home_and_leaves_nothing_in_it(tmp_path):
    out = subprocess.run(
        ["/bin/sh", "-c", home.PROBE],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    ).stdout
    assert home.parse_probe(out) == home.HomeReport(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_probe_keeps_the_projects_folders_that_exist_and_the_user_may_write_in(tmp_path):
    project, scratch, locked = tmp_path / "project", tmp_path / "scratch", tmp_path / "locked"
    project.mkdir()
    locked.mkdir(mode=0o500)
    asked = {"project": str(project), "scratch": str(scratch)}  # the scratch does not exist here
    probed = subprocess.run(
        home.probe_argv({**asked, "odd": "/etc"}),  # a kind the workbench has no use for is not asked
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    out = probed.stdout
    assert probed.returncode == 0  # a folder the site lacks is no failure of the probe (the last asked here)
    assert home.parse_probe(out, asked).storage == (("project", str(project)),)
    assert "/etc" not in out
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":  # root writes anywhere
        out = subprocess.run(home.probe_argv({"project": str(locked)}), capture_output=True, text=True).stdout
        assert home.parse_probe(out, {"project": str(locked)}).storage == ()


def probe_with_profile(home_dir, profile: str, asked: dict, **env) -> home.HomeReport:
    """The probe as a user whose login profile (bash's) is `profile`."""
    (home_dir / ".bash_profile").write_text(profile)
    run = subprocess.run(
        home.probe_argv(asked),
        env={"HOME": str(home_dir), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return home.parse_probe(run.stdout, asked)


def test_a_folder_the_site_publishes_as_a_login_variable_is_read_from_the_users_login_shell(tmp_path):
    # JSC: $PROJECT_<project> and $SCRATCH_<project>, set by the login environment (not by the
    # shell sshd runs a command in); kept where the user may write
    project, locked = tmp_path / "elsewhere" / "p1", tmp_path / "locked"
    project.mkdir(parents=True)
    locked.mkdir(mode=0o500)
    asked = {"project": "$PROJECT_p1", "scratch": "$SCRATCH_p1"}
    noisy = f"echo welcome; echo 'dir:project=$PROJECT_p1 /etc'; echo oops >&2; export PROJECT_p1={project}\n"
    report = probe_with_profile(tmp_path, noisy, asked)  # no $SCRATCH_p1 there
    assert report.home == str(tmp_path) and report.storage == (("project", str(project)),)
    assert probe_with_profile(tmp_path, "", asked, PROJECT_p1=str(project)).storage == (("project", str(project)),)
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":  # root writes anywhere
        assert probe_with_profile(tmp_path, f"export PROJECT_p1={locked}\n", asked).storage == ()


@pytest.mark.parametrize(
    "profile",
    [
        "exit 1\n",  # a profile that fails, or hands over to another shell: the home is still read
        "exec sh\n",
        "export PROJECT_p1=\"$(printf '/tmp\\n/etc')\"\n",  # a value of two lines
        "export PROJECT_p1=/tmp/\n",  # values the batch script would refuse
        "export PROJECT_p1=//tmp\n",
        "export PROJECT_p1=tmp\n",
    ],
)
def test_a_login_profile_that_fails_or_gives_an_odd_value_leaves_the_job_without_that_folder(tmp_path, profile):
    report = probe_with_profile(tmp_path, profile, {"project": "$PROJECT_p1"})
    assert report.home == str(tmp_path) and report.problem == "" and report.storage == ()


def test_only_a_plain_variable_name_is_asked():
    # nothing of it reaches a shell's expansion
    assert home.probe_argv({"project": "$PROJECT_$(id)", "scratch": "${SCRATCH}"}) == [
        "/bin/sh",
        "-c",
        home.PROBE,
        "sh",
    ]


def test_a_folder_the_users_shell_prints_but_the_hub_did_not_ask_about_is_not_kept():
    # a user's shell startup files may print anything before the probe: only the asked pairs count
    out = (
        "dir:scratch=/etc /etc\ndir:project=/project/p1 /users/x/../../etc\ndir:odd=/etc /etc\n"
        "home=/users/a\nwritable\ndir:project=/project/p1 /project/p1\n"
    )
    report = home.parse_probe(out, {"project": "/project/p1", "scratch": "/scratch/p1"})
    assert report.storage == (("project", "/project/p1"),) and report.home == "/users/a"
    # a path asked is kept only as asked; a variable's value only if it is a plain absolute path
    asked = {"project": "/project/p1", "scratch": "$SCRATCH_p1"}
    forged = "dir:project=/project/p1 /etc\ndir:scratch=$SCRATCH_p1 /e/scratch/../p2\n"
    assert home.parse_probe("home=/h\nwritable\n" + forged, asked).storage == ()
    assert home.probe_argv({"project": "/project/$(id)"})[4:] == []  # not a plain path: never asked


def test_a_home_that_cannot_be_written_is_reported_with_what_the_shell_said(tmp_path):
    out = "home=/gpfs/home/acad/ulg-info0939/bdurand\nunwritable=sh: 3: cannot create x: Permission denied\n"
    report = home.parse_probe(out)
    assert report.home == "/gpfs/home/acad/ulg-info0939/bdurand" and report.problem == "unwritable"
    full = home.parse_probe("home=/users/alicelum\nunwritable=head: error writing: Disk quota exceeded\n")
    assert full.problem == "full" and "Disk quota exceeded" in full.detail
    assert home.parse_probe("home=/e/home/x\nunwritable=No space left on device\n").problem == "full"


@pytest.mark.parametrize(
    "out",
    [
        "",  # `cd` failed: no home at all
        "home=relative/home\nwritable\n",
        "home=/users/a b\nwritable\n",
        "home=/users/$(id)\nwritable\n",
        "home=/users/../etc\nwritable\n",
        "home=/" + "a" * 1100 + "\nwritable\n",
    ],
)
def test_a_home_the_scripts_could_not_carry_as_it_is_is_refused(out):
    report = home.parse_probe(out)
    assert report.home is None and report.problem == "no home"


def test_each_problem_is_a_sentence_that_says_what_to_do():
    full = home.HomeUnusable("LUMI", home.HomeReport("/users/a", "full", "Disk quota exceeded"))
    assert full.sentence == (
        "Your home on LUMI (/users/a) is full: the site's quota is reached (Disk quota exceeded), so "
        "JupyterLab could not start there. Delete or move files out of it, then start again."
    )
    locked = home.HomeUnusable("Lucia", home.HomeReport("/gpfs/h/b", "unwritable", "Permission denied"))
    assert "cannot be written (Permission denied)" in locked.sentence and "Lucia's support" in locked.sentence
    none = home.HomeUnusable("JUPITER", home.HomeReport(None, "no home", "$HOME is 'x'"))
    assert none.sentence.startswith("JUPITER gave no home the workbench can use") and "administrator" in none.sentence


async def test_job_control_reads_the_home_as_the_user_and_refuses_an_unusable_one():
    from aifa_workbench.sites.control import JobControl

    runner = ScriptedRunner([ok("home=/gpfs/home/acad/ucl-elen/acolin\nwritable\n")])
    control = JobControl("lucia", "Lucia", runner, "/usr/bin", timeout=5, shared_queries=False)
    assert (await control.home("alice")).home == "/gpfs/home/acad/ucl-elen/acolin"
    assert runner.argvs[0][:2] == ["/bin/sh", "-c"] and runner.calls[0]["as_user"] == "alice"
    control = JobControl(
        "lucia", "Lucia", ScriptedRunner([ok("home=/x\nunwritable=Disk quota exceeded\n")]), "/usr/bin", timeout=5
    )
    with pytest.raises(home.HomeUnusable, match="is full"):
        await control.home("alice")


def test_the_registry_keeps_the_home_a_site_gave_for_that_account_only(tmp_path):
    path = tmp_path / "site-accounts.json"
    registry = SiteAccounts({"alice": {"lucia": {"username": "acolin", "accounts": ["aifa_cat1"]}}}, path)
    registry.remember_home("alice", "lucia", "acolin", "/gpfs/home/acad/ucl-elen/acolin")
    again = SiteAccounts({}, path)  # another process of the hub (the tunnel daemon), or after a restart
    assert again.home("alice", "lucia", "acolin") == "/gpfs/home/acad/ucl-elen/acolin"
    assert again.home("alice", "lucia", "acolin2") is None  # another account there: not its home
    assert again.home("bob", "lucia", "acolin") is None
    identities = Identities(registry, key_store=None)
    assert identities.site_home("alice", "lucia") == "/gpfs/home/acad/ucl-elen/acolin"
    plain = Identities({"alice": {"lucia": {"username": "acolin", "accounts": []}}}, key_store=None)
    assert plain.site_home("alice", "lucia") is None
    plain.remember_home("alice", "lucia", "acolin", "/h/acolin")  # without the hub's registry: this process
    assert plain.site_home("alice", "lucia") == "/h/acolin"


def test_the_registry_keeps_the_projects_folders_per_project_for_that_account_only(tmp_path):
    path = tmp_path / "site-accounts.json"
    registry = SiteAccounts({}, path)
    registry.remember_home("alice", "lumi", "alicelum", "/users/alicelum", {"p1": {"scratch": "/scratch/p1"}})
    registry.remember_home("alice", "lumi", "alicelum", "/users/alicelum", {"p2": {}})  # p1's stays
    again = SiteAccounts({}, path)
    assert again.storage("alice", "lumi", "alicelum", "p1") == {"scratch": "/scratch/p1"}
    assert again.storage("alice", "lumi", "alicelum", "p2") == {}
    assert again.storage("alice", "lumi", "other", "p1") == {}  # another account there: not its folders
    registry.remember_home("alice", "lumi", "other", "/users/other")
    assert SiteAccounts({}, path).storage("alice", "lumi", "other", "p1") == {}
    path.write_text('{"read": {"alice": {"lumi": {"username": "a", "home": "/h", "storage": {"p1": ["x"]}}}}}')
    assert SiteAccounts({}, path).storage("alice", "lumi", "a", "p1") == {}  # a file not of this shape: not read


def test_a_registry_file_of_an_earlier_release_without_homes_is_read(tmp_path):
    path = tmp_path / "site-accounts.json"
    path.write_text('{"kept": {}, "claimed": {"bob": {"jupiter": {"username": "bob7", "accounts": ["x"]}}}}')
    registry = SiteAccounts({}, path)
    assert registry["bob"]["jupiter"]["username"] == "bob7" and registry.home("bob", "jupiter", "bob7") is None
