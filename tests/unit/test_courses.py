"""Courses without Slurm: a trainer's request checked field by field (model.course), the join
code, who may join when, the locked profile, the instructors' role, and the guest pool."""

import pytest

from aifa_workbench.hub_config.courses import book as courses
from aifa_workbench.model import course as model
from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.sites import slurm_cli as cli

NOW = 1_800_000_000.0
SITES = {name: site for name, site in load_catalogue().items() if name in ("local", "lumi")}
PROJECTS = {"local": ("proj_training",), "lumi": ("project_465000123",)}


def request(**overrides):
    return {
        "id": "intro-llm",
        "title": "Intro to LLMs",
        "site": "local",
        "partition": "gpu",
        "gpus": 1,
        "hours": 2,
        "starts_at": NOW + 600,
        "ends_at": NOW + 4 * 3600,
        "size": 4,
        "project": "proj_training",
        **overrides,
    }


def make(**overrides):
    return model.course_from_request(request(**overrides), "alice", PROJECTS, SITES, {"alice", "carol"}, NOW)


def test_a_good_request_makes_a_course_named_after_its_id():
    course = make(instructors=["carol"], materials_repo="https://github.com/be-aifa/intro.git")
    assert (course.account, course.reservation, course.group) == (
        "course-intro-llm",
        "aifa-intro-llm",
        "course-intro-llm",
    )
    assert course.instructors == ("alice", "carol")
    assert course.budget == pytest.approx(8.0)  # 4 sessions of 1 GPU for 2 h
    assert model.budget_minutes(course, 100) == 48000
    assert len(course.code) == 8 and set(course.code) <= set(model.CODE_ALPHABET)
    assert model.session_options(course) == {
        "site": "local",
        "partition": "gpu",
        "gpus": 1,
        "hours": 2.0,
        "account": "course-intro-llm",
        "reservation": "aifa-intro-llm",
    }
    assert model.materials_url(course).startswith("/git-pull?repo=https%3A%2F%2Fgithub.com")
    assert "urlpath=lab%2Ftree%2Fintro" in model.materials_url(course)


@pytest.mark.parametrize(
    "field_name, value, words",
    [
        ("id", "Intro LLM", "Short name"),
        ("id", "x;rm -rf", "Short name"),
        ("title", "a\nb", "Title"),
        ("site", "nowhere", "Site"),
        ("reservation", "mine", "leave it empty"),  # the local cluster's reservation is the hub's
        ("partition", "nope", "Partition"),
        ("gpus", 99, "GPUs each"),
        ("hours", 0.3, "quarter hours"),
        ("hours", 1e9, "Hours per session"),
        ("ends_at", NOW - 10, "Ends"),
        ("ends_at", NOW + 30 * 3600, "Ends"),
        ("size", 0, "Participants"),
        ("size", 5, "at most 4 on gpu"),  # one node of 32 cores, 8 per session
        ("id", "ml-instructors", "Short name"),  # would be course ml's instructors' group
        ("starts_at", None, "choose a date"),
        ("size", True, "Participants"),
        ("project", "proj_sme", "Project that pays"),
        ("instructors", ["mallory"], "Instructors"),
        ("materials_repo", "ssh://evil/x", "Materials"),
        ("materials_repo", "https://x/y.git --upload-pack=touch", "Materials"),
        ("materials_branch", "--upload-pack=x", "Branch"),
    ],
)
def test_a_bad_field_is_refused_with_its_label(field_name, value, words):
    with pytest.raises(model.CourseError) as refused:
        make(**{field_name: value})
    assert words in str(refused.value)
    assert refused.value.field == field_name


def test_codes_are_read_as_people_type_them_and_joining_follows_the_window():
    course = make()
    assert model.normal_code(f" {course.code[:4].lower()}-{course.code[4:]} ") == course.code
    assert model.shown_code("K7QM3XPA") == "K7QM-3XPA"
    assert "No course has this code" in model.join_refusal(None, "bob", NOW)
    assert "opens an hour before" in model.join_refusal(course, "bob", course.starts_at - 7200)
    assert model.join_refusal(course, "bob", course.starts_at - 1800) is None
    assert "has ended" in model.join_refusal(course, "bob", course.ends_at)
    full = course
    for n in range(course.size):
        full = model.with_participant(full, f"p{n}", f"aifa-guest{n:02d}")
    assert "is full" in model.join_refusal(full, "bob", NOW + 700)
    assert model.join_refusal(full, "p3", NOW + 700) is None  # already in: joining again is fine
    assert "has not started" in model.spawn_refusal(course, NOW)
    assert model.spawn_refusal(course, NOW + 700) is None
    assert "less than 15 minutes" in model.spawn_refusal(course, course.ends_at - 600)
    assert model.session_fits(course, course.ends_at - 1000) == 0.25  # a session ends with the window
    assert model.session_fits(course, course.starts_at) == 2.0


def test_instructors_see_their_course_only_and_keep_nothing_else():
    course = model.with_participant(model.with_participant(make(), "dana", "aifa-guest01"), "erik", "erik")
    role = model.instructor_role(course)
    assert role["groups"] == ["course-intro-llm-instructors"]
    servers = [scope for scope in role["scopes"] if "!server=" in scope]
    assert sorted(servers) == sorted(
        f"{scope}!server={who}/course-intro-llm"
        for who in ("dana", "erik")
        for scope in ("read:servers", "delete:servers", "access:servers")
    )
    others = [scope for scope in role["scopes"] if scope not in servers]
    assert all(scope == "admin-ui" or scope.endswith("!group=course-intro-llm") for scope in others)
    assert not any(
        scope.startswith(("servers", "admin:", "access:servers!group", "read:servers!group"))
        for scope in role["scopes"]
    )  # never start one, never a participant's own server
    assert model.instructor_role(make())["scopes"] == others  # nobody joined: no server at all


def test_a_course_session_is_the_named_server_of_its_course():
    assert model.session_server("intro-llm") == "course-intro-llm"
    assert model.course_of_server("course-intro-llm") == "intro-llm"
    assert model.course_of_server("") is None and model.course_of_server("course-") is None
    assert model.course_of_server("my-course-x") is None


def test_the_form_is_read_as_the_api_json():
    data = model.request_from_form(
        {
            "id": "ws",
            "gpus": "2",
            "hours": "1.5",
            "instructors": "carol, dave",
            "starts_at": "1800000000",
            "size": "ten",
        }
    )
    assert data == {
        "id": "ws",
        "gpus": 2.0,
        "hours": 1.5,
        "instructors": ["carol", "dave"],
        "starts_at": 1800000000.0,
        "size": "ten",
    }


def test_each_guest_account_goes_to_one_person_and_people_with_an_account_keep_theirs(tmp_path):
    book = courses.CourseBook(tmp_path / "courses.json")
    config = courses.CoursesConfig(guest_count=2, users_group="no-such-group-here")
    course = make()
    book.put(course)
    first = courses.local_account_for(book, config, "u-1")
    book.put(model.with_participant(course, "u-1", first))
    second = courses.local_account_for(book, config, "u-2")
    assert (first, second) == ("aifa-guest01", "aifa-guest02")
    book.put(model.with_participant(book.courses[course.id], "u-2", second))
    with pytest.raises(model.CourseError, match="guest place"):
        courses.local_account_for(book, config, "u-3")
    assert book.local_account("u-2") == "aifa-guest02" and book.local_account("bob") == "bob"
    assert courses.CourseBook(tmp_path / "courses.json").courses[course.id].participants == {
        "u-1": "aifa-guest01",
        "u-2": "aifa-guest02",
    }
    assert (tmp_path / "courses.json").stat().st_mode & 0o777 == 0o600
    assert book.groups_of("u-1") == {"course-intro-llm"}
    assert book.groups_of("alice") == {"course-intro-llm-instructors"}


def test_the_cluster_commands_of_a_course():
    assert cli.course_account_argv("/usr/bin", "aifa-local", "course-ws", "proj_training", 6000, 120) == [
        "/usr/bin/sacctmgr",
        "-i",
        "add",
        "account",
        "course-ws",
        "cluster=aifa-local",
        "parent=proj_training",
        "GrpTRESMins=billing=6000",
        "MaxJobs=1",
        "MaxWall=120",
        "Description=course-ws",
        "Organization=aifa-course",
    ]
    assert cli.course_helper_argv("/usr/local/sbin/h", "unreserve", name="aifa-ws") == [
        "/usr/bin/sudo",
        "-n",
        "/usr/local/sbin/h",
        "unreserve",
        "--name",
        "aifa-ws",
    ]


def test_a_course_idle_timeout_is_well_above_how_often_servers_report_activity():
    assert make(idle_minutes=20).idle_minutes == 20
    assert make(idle_minutes=0).idle_minutes == 0
    with pytest.raises(model.CourseError, match="at least 15 minutes"):
        make(idle_minutes=5)


def test_settings_keep_course_group_names_for_the_hub(tmp_path):
    from aifa_workbench.model import settings

    data = {"login": "oidc", "oidc": {"allowed_groups": ["workbench", "course-x"]}}
    with pytest.raises(settings.SettingsError, match="oidc.allowed_groups: course-x starts with course-"):
        settings._validate_oidc(data, tmp_path / "workbench.yaml")


def test_a_course_on_a_remote_site_names_the_reservation_the_site_made():
    course = make(site="lumi", partition="small-g", reservation="lumi-ws-0412", project="project_465000123", size=60)
    assert (course.remote, course.reservation, course.account) == (True, "lumi-ws-0412", "project_465000123")
    assert model.session_options(course)["reservation"] == "lumi-ws-0412"
    for bad in ("", "x;rm", "-flag"):
        with pytest.raises(model.CourseError, match="the reservation LUMI"):
            make(site="lumi", partition="small-g", reservation=bad, project="project_465000123")
    with pytest.raises(model.CourseError, match="one of your projects on LUMI"):
        make(site="lumi", partition="small-g", reservation="lumi-ws", project="proj_training")
    assert model.course_from_dict(course.to_dict()) == course


def test_a_participant_may_use_the_courses_account_for_one_session_shaped_job_in_its_partition_only():
    from aifa_workbench.sites.slurm_cli import course_member_argv

    argv = course_member_argv("/usr/bin", "aifa", "aifa-guest03", "course-ws1", partition="small-g", gpus=1)
    assert argv[:7] == ["/usr/bin/sacctmgr", "-i", "add", "user", "aifa-guest03", "account=course-ws1", "cluster=aifa"]
    assert {"partition=small-g", "MaxSubmitJobs=1", "MaxTRESPerJob=gres/gpu=1"} <= set(argv)
    removal = course_member_argv("/usr/bin", "aifa", "aifa-guest03", "course-ws1", add=False)
    assert removal == [
        "/usr/bin/sacctmgr",
        "-i",
        "delete",
        "user",
        "aifa-guest03",
        "account=course-ws1",
        "cluster=aifa",
    ]


def test_named_servers_a_user_may_make_are_theirs_plus_one_per_course_session():
    from types import SimpleNamespace

    course = model.with_participant(make(), "dana", "aifa-guest01")
    book = SimpleNamespace(active_of=lambda user: [course] if user == "dana" else [])

    def asking(name, servers):
        orm_user = SimpleNamespace(orm_spawners={s: None for s in servers})
        return SimpleNamespace(current_user=SimpleNamespace(name=name, orm_user=orm_user))

    none_of_their_own = courses.named_server_limit(0, book)
    assert none_of_their_own(asking("erik", [""])) == 1  # never 0: JupyterHub's "no limit"
    assert none_of_their_own(asking("dana", [""])) == 1  # her course's session
    assert none_of_their_own(asking("dana", ["", "course-old", "course-intro-llm"])) == 2  # a past course's too
    assert courses.named_server_limit(2, book)(asking("dana", ["", "a", "b"])) == 3
