"""What users and jobs send, bounded and unforgeable: the reconciler's squeue lines, job output
tails, echoed values, form numbers, shared Slurm answers, logins, origins, body caps."""

import asyncio

import pytest

from aifa_workbench.hub_config.login import PerUserPasswordAuthenticator, password_matches, read_passwords
from aifa_workbench.hub_config.origins import hub_page_allowed, user_host_hook
from aifa_workbench.hub_config.proxy import proxy_argv
from aifa_workbench.model.settings import SettingsError, load_settings
from aifa_workbench.spawners.profiles import options_from_form
from aifa_workbench.model.request import RequestError, parse_job_request, shown
from aifa_workbench.spawners.server_identity import identity_name
from aifa_workbench.spawners.slurm import output_tail
from aifa_workbench.sites.slurm_facts import SharedAnswers
from aifa_workbench.sites.commands import LocalRunner, bounded
from aifa_workbench.sites.slurm_cli import confirm_argv, job_name, job_name_batches, unknown_jobs

from .test_settings import GOOD, write


# --- the reconciler: no field a user chooses can forge a line ---------------------------------
H = "h1"  # the hub's id in its job names


def test_only_exact_id_user_name_lines_count():
    out = "17|alice|aifa-wb-h1-alice\n18|bob|aifa-wb-h1-bob\n19|carol|aifa-wb-h1-alice\n"
    assert unknown_jobs(out, H, known_job_ids={"18"}) == [("17", "alice")]  # 19: carol's job named for alice


def test_another_hubs_jobs_are_not_this_hubs_orphans():
    out = "17|alice|aifa-wb-h2-alice\n18|bob|aifa-wb-bob\n19|bob|aifa-wb-h1-bob\n"
    assert unknown_jobs(out, H, known_job_ids=set()) == [("19", "bob")]


@pytest.mark.parametrize(
    "forged",
    [
        "x\n17|aifa-wb-h1-alice|alice\ny",  # the old %i|%j|%u format
        "x\n17|alice|aifa-wb-h1-alice\ny",  # the new one
        "17|alice|aifa-wb-h1-alice",  # a whole line as a name
    ],
)
def test_a_forged_line_cancels_nothing_of_others(forged):
    # squeue's --name filter never prints such a name; were one printed, its lines still name 17 twice
    out = f"17|alice|aifa-wb-h1-alice\n20|carol|{forged}\n21|bob|aifa-wb-h1-bob\n"
    assert unknown_jobs(out, H, known_job_ids={"17"}) == [("21", "bob")]  # and each is confirmed: confirm_argv


def test_odd_lines_are_skipped_not_a_reason_to_stop():
    out = "17_1|carol|aifa-wb-h1-carol\n18+0|carol|aifa-wb-h1-carol\n19|bob|aifa-wb-h1-bob\n"
    assert unknown_jobs(out, H, known_job_ids=set()) == [("19", "bob")]


def test_a_job_id_seen_twice_is_not_cancelled():
    out = "17|alice|aifa-wb-h1-alice\n17|alice|aifa-wb-h1-alice\n18|bob|aifa-wb-h1-bob\n"
    assert unknown_jobs(out, H, set()) == [("18", "bob")]


def test_each_orphan_is_confirmed_by_a_query_no_name_can_forge():
    assert confirm_argv("/usr/bin", "17", job_name(H, "alice"), "alice") == [
        "/usr/bin/squeue",
        "--noheader",
        "--jobs=17",
        "--name=aifa-wb-h1-alice",
        "--user=alice",
        "--format=%i",
    ]


def test_the_name_filter_holds_plain_names_only_in_batches():
    assert job_name_batches(H, {"bob", "alice", "x\ny", "Eve"}) == ["aifa-wb-h1-alice,aifa-wb-h1-bob"]
    assert [len(b.split(",")) for b in job_name_batches(H, {f"u{i}" for i in range(1200)})] == [500, 500, 200]


# --- job output and echoed values: bounded, one line in logs ---------------------------------------
def test_a_job_output_tail_is_bounded_and_clean():
    text = "start fragment\n" + "x" * 5_000_000 + "\n\x1b[31mred\x1b[0m\tdone\r\n" + "last\n"
    tail = output_tail(text, lines=15, line_chars=300, cut_at_start=True)
    assert len(tail) < 400 and "start fragment" not in tail
    assert tail.endswith("red    done\nlast") and "more characters" in tail


def test_bounded_text_cannot_forge_log_lines():
    text = bounded("ok\nFAKE LOG LINE\x1b[2J" + "y" * 1000, limit=50)
    assert "\n" not in text and "\x1b" not in text and text.endswith("more characters)")


def test_a_refused_value_is_echoed_short(sites, user):
    with pytest.raises(RequestError) as info:
        parse_job_request({"site": "local", "partition": "p" * 2_000_000}, sites, user, "local")
    assert len(str(info.value)) < 400 and "…" in str(info.value)
    assert shown("abc") == "'abc'"


def test_many_unknown_keys_are_named_briefly(sites, user):
    with pytest.raises(RequestError) as info:
        parse_job_request({f"k{i}" * 100: 1 for i in range(1000)}, sites, user, "local")
    assert len(str(info.value)) < 500 and "and 997 more" in str(info.value)


@pytest.mark.parametrize("typed", ["²", "٣", "1e3", "-1", "1234567"])
def test_form_numbers_are_ascii_digits_or_left_for_the_sentence(typed):
    assert options_from_form({"profile": ["custom"], "gpus": [typed]}) == {"gpus": typed}  # no crash


async def test_the_runner_keeps_only_the_start_of_a_huge_output():
    result = await LocalRunner(max_output_bytes=1000).run(["/bin/sh", "-c", "head -c 10000000 /dev/zero; echo err >&2"])
    assert result.ok and len(result.stdout) == 1000 and result.stderr == "err\n"


# --- Slurm answers shared between form renders and refused spawns --------------------------
async def test_concurrent_askers_share_one_query_and_answers_are_reused():
    answers, calls = SharedAnswers(ttl=60), []

    async def query():
        calls.append(1)
        await asyncio.sleep(0.05)
        return "listing"

    results = await asyncio.gather(*(answers.get(("bin", "reservations"), query) for _ in range(40)))
    assert results == ["listing"] * 40 and len(calls) == 1
    assert await answers.get(("bin", "reservations"), query) == "listing" and len(calls) == 1
    assert await answers.get(("bin", "reservations"), query, fresh=True) == "listing" and len(calls) == 1  # < 2 s old
    answers.min_fresh = 0
    assert await answers.get(("bin", "reservations"), query, fresh=True) == "listing" and len(calls) == 2


async def test_a_caller_giving_up_does_not_cancel_the_query_for_the_others():
    answers = SharedAnswers(ttl=60)

    async def query():
        await asyncio.sleep(0.1)
        return "listing"

    first = asyncio.ensure_future(answers.get(("k",), query))
    second = asyncio.ensure_future(answers.get(("k",), query))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "listing"


async def test_a_failed_query_is_not_kept():
    answers = SharedAnswers(ttl=60)

    async def broken():
        raise RuntimeError("slurm down")

    with pytest.raises(RuntimeError):
        await answers.get(("k",), broken)

    async def good():
        return "ok"

    assert await answers.get(("k",), good) == "ok"


# --- login: one password per user ---------------------------------------------------------------
async def test_a_users_password_logs_in_that_user_only(tmp_path):
    (tmp_path / "bob").write_text("bobs-secret\n")
    (tmp_path / "carol").write_text("carols-secret\n")
    auth = PerUserPasswordAuthenticator(passwords=read_passwords(tmp_path, ["bob", "carol"]))
    assert await auth.authenticate(None, {"username": "bob", "password": "bobs-secret"}) == "bob"
    assert await auth.authenticate(None, {"username": "bob", "password": "carols-secret"}) is None
    assert await auth.authenticate(None, {"username": "mallory", "password": ""}) is None
    assert not password_matches(None, "x") and not password_matches("a", None)


def test_the_shared_password_needs_the_setting_that_says_single_person(tmp_path):
    assert load_settings(write(tmp_path, GOOD)).login == "per-user-password"
    assert (
        load_settings(write(tmp_path, {**GOOD, "login": "shared-password-single-person-demo"})).login
        == "shared-password-single-person-demo"
    )
    with pytest.raises(SettingsError, match="login: 'shared-password' is not one of"):
        load_settings(write(tmp_path, {**GOOD, "login": "shared-password"}))


def test_a_missing_password_file_names_it(tmp_path):
    settings = load_settings(write(tmp_path, {**GOOD, "secrets_dir": str(tmp_path)}))
    with pytest.raises(SettingsError, match=f"cannot read {tmp_path}/passwords/alice"):
        settings.passwords()


# --- origins: each user's server on a host of its own ---------------------------------------
def test_servers_get_hosts_of_their_own():
    hook = user_host_hook("users.example-usercontent.be")
    assert hook("alice", "workbench.example.be", "user") == "alice.users.example-usercontent.be"
    assert (
        hook("a.b", "x", "user").endswith(".users.example-usercontent.be")
        and "." not in hook("a.b", "x", "user").split(".")[0]
    )


@pytest.mark.parametrize(
    "host, path, allowed",
    [
        ("localhost:8000", "/hub/login", True),
        ("carol.localhost:8000", "/hub/login", False),  # the hub's pages are not served on a user's host
        ("carol.localhost:8000", "/hub/api/users/alice/tokens", False),
        ("carol.localhost:8000", "/user/carol/lab", True),  # JupyterHub redirects these to the hub's host
        ("127.0.0.1:8081", "/hub/api/job-report", True),  # jobs and the proxy, on the internal address
        ("127.0.0.1:8000", "/hub/home", False),
        ("LOCALHOST:8000", "/hub/home", True),
    ],
)
def test_the_hub_answers_on_its_own_host_only(host, path, allowed):
    assert hub_page_allowed(host, path, "http://localhost:8000", "/hub/", {"127.0.0.1:8081"}) is allowed
    assert hub_page_allowed("hub.example.be:443", "/hub/", "https://hub.example.be", "/hub/", set())


def test_the_demo_hub_is_localhost_and_needs_a_host_name(tmp_path):
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.public_host == "http://localhost:8000" and settings.user_domain == "localhost"
    with pytest.raises(SettingsError, match="public_host: 'http://10.0.0.1:8000' is an IP address"):
        load_settings(write(tmp_path, {**GOOD, "public_host": "http://10.0.0.1:8000"}))


def test_https_needs_a_certificate_and_gives_it_to_the_proxy(tmp_path):
    https = {**GOOD, "bind_url": "https://0.0.0.0:443/", "public_host": "https://workbench.example.be"}
    with pytest.raises(SettingsError, match="tls_cert_file: an https bind_url needs"):
        load_settings(write(tmp_path, https))
    settings = load_settings(write(tmp_path, {**https, "tls_cert_file": "/c.pem", "tls_key_file": "/k.pem"}))
    argv = proxy_argv(settings)
    assert argv[argv.index("--ssl-cert") + 1] == "/c.pem" and argv[argv.index("--ssl-key") + 1] == "/k.pem"
    assert "--host-routing" in argv and argv[argv.index("--port") + 1] == "443"
    with pytest.raises(SettingsError, match="tls_cert_file: cannot read /c.pem"):
        settings.check_tls_files()


def test_the_identity_answer_names_the_user_or_nothing():
    assert identity_name(b'{"identity": {"username": "alice"}, "permissions": {}}') == "alice"
    assert identity_name(b"<html>404</html>") is None and identity_name(b'{"identity": "x"}') is None
    assert identity_name(b'{"identity": {"username": "a"}}' + b" " * 70_000) is None


@pytest.fixture
def sites():
    from aifa_workbench.model.catalogue import load_catalogue

    return load_catalogue(None, ("local",))


@pytest.fixture
def user():
    from aifa_workbench.model.request import UserContext

    return UserContext(accounts={"local": ("proj_sme",)}, reservations={"local": ()})


async def test_a_server_reports_its_port_once_per_start():
    from types import SimpleNamespace

    from aifa_workbench.spawners.slurm import WorkbenchSlurmSpawner

    spawner = SimpleNamespace(_port_reported=asyncio.Event(), port=0, job_id="")
    assert WorkbenchSlurmSpawner.port_reported(spawner, 4242) is True and spawner.port == 4242
    assert WorkbenchSlurmSpawner.port_reported(spawner, 5353) is False and spawner.port == 4242
    assert WorkbenchSlurmSpawner.port_reported(SimpleNamespace(_port_reported=None, port=0, job_id=""), 1) is False


def test_on_a_private_site_only_the_users_own_well_formed_lines_count():
    from aifa_workbench.sites.slurm_cli import own_unknown_jobs

    out = (
        "17|alicelum|aifa-wb-h1-alice\n18|alicelum|aifa-wb-h1-alice\n18|alicelum|aifa-wb-h1-alice\n"
        "19|boblumi|aifa-wb-h1-alice\n20|alicelum|aifa-wb-h2-alice\n21|alicelum|aifa-wb-h1-alice\n"
    )
    assert own_unknown_jobs(out, H, "alice", "alicelum", known_job_ids={"21"}) == ["17"]
