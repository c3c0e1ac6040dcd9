"""The hub's root helper for courses (ansible/roles/workbench_hub/files/aifa-course-helper): what
it refuses before anything runs as root, and that a guest's home is emptied without leaving it."""

import argparse
import datetime
import importlib.util
import os
import pathlib
import pwd
import stat
import sys
from importlib.machinery import SourceFileLoader
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit

PATH = pathlib.Path(__file__).resolve().parents[2] / "ansible/roles/workbench_hub/files/aifa-course-helper"


def load_helper():
    loader = SourceFileLoader("aifa_course_helper", str(PATH))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


helper = load_helper()
Refused = helper.Refused
NOW = datetime.datetime(2030, 1, 1, 8, 0, 0)
CONFIG = {
    "cluster": "aifa-local",
    "partitions": ["cpu", "small-g"],
    "guest_prefix": "aifa-guest",
    "guest_count": 40,
    "max_window_hours": 12,
    "max_cores": 64,
    "scontrol": "/usr/bin/scontrol",
    "scancel": "/usr/bin/scancel",
}
GOOD = dict(
    name="aifa-ml101",
    account="course-ml101",
    partition="cpu",
    start="2030-01-01T09:00:00",
    end="2030-01-01T17:00:00",
    cores="16",
)


def reserve(**changes):
    return helper.check_reserve(argparse.Namespace(**{**GOOD, **changes}), CONFIG, NOW)


def test_the_shebang_isolates_python():
    assert PATH.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"


def test_a_good_reservation_becomes_one_scontrol_argv():
    assert reserve() == [
        "/usr/bin/scontrol",
        "create",
        "reservation",
        "ReservationName=aifa-ml101",
        "StartTime=2030-01-01T09:00:00",
        "EndTime=2030-01-01T17:00:00",
        "Accounts=course-ml101",
        "PartitionName=cpu",
        "CoreCnt=16",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        dict(start="2030-01-01T07:00:00", end="2030-01-01T19:00:00"),  # exactly the longest window
        dict(start="2030-01-01T07:30:00"),  # started already, ends later
        dict(cores="1"),
        dict(cores="64"),
        dict(partition="small-g"),
        dict(name="aifa-a-b-1", account="course-a-b-1"),
    ],
)
def test_edges_that_are_accepted(changes):
    assert reserve(**changes)[0] == "/usr/bin/scontrol"


@pytest.mark.parametrize(
    "changes, why",
    [
        (dict(name="aifa-ML101", account="course-ML101"), "name"),
        (dict(name="ml101"), "name"),
        (dict(name="aifa-1ab", account="course-1ab"), "name"),
        (dict(name="aifa-ab", account="course-ab"), "name"),  # too short
        (dict(name="aifa-" + "a" * 32, account="course-" + "a" * 32), "name"),  # too long
        (dict(account="course-ml102"), "same course"),
        (dict(account="proj_sme"), "account"),
        (dict(account="course-ml101\n"), "account"),
        (dict(partition="standard-g"), "partition"),
        (dict(partition="cpu,small-g"), "partition"),
        (dict(start="2030-01-01 09:00:00"), "start"),
        (dict(start="2030-1-1T09:00:00"), "start"),
        (dict(start="2030-01-01T09:00"), "start"),
        (dict(start="2030-01-01T09:00:00\n"), "start"),
        (dict(start="now"), "start"),
        (dict(end="2030-02-30T17:00:00"), "valid time"),
        (dict(end="2030-01-01T25:00:00"), "valid time"),
        (dict(end="2030-01-01T09:00:00"), "after start"),
        (dict(end="2030-01-01T08:59:59"), "after start"),
        (dict(start="2029-12-31T20:00:00", end="2030-01-01T07:59:59"), "past"),
        (dict(start="2030-01-01T07:00:00", end="2030-01-01T19:00:01"), "longer than 12"),
        (dict(cores="0"), "between"),
        (dict(cores="65"), "between"),
        (dict(cores="-1"), "whole number"),
        (dict(cores="+4"), "whole number"),
        (dict(cores="4 "), "whole number"),
        (dict(cores="0x10"), "whole number"),
        (dict(cores="\u0664"), "whole number"),  # an Arabic-Indic four
        (dict(cores="9" * 100), "whole number"),
    ],
)
def test_bad_reservations_are_refused(changes, why):
    with pytest.raises(Refused, match=why):
        reserve(**changes)


@pytest.mark.parametrize(
    "key, value",
    [
        ("name", "aifa-ml101;id"),
        ("name", "aifa-ml101 Users=root"),
        ("name", "aifa-$(id)"),
        ("account", "course-ml101`id`"),
        ("account", "course-ml101,root"),
        ("partition", "cpu;id"),
        ("partition", "cpu Flags=maint"),
        ("start", "2030-01-01T09:00:00|id"),
        ("end", "2030-01-01T17:00:00 Flags=ignore_jobs"),
        ("cores", "4;id"),
        ("cores", "4 Nodes=ALL"),
        ("cores", "$(id)"),
    ],
)
def test_shell_metacharacters_and_extra_fields_are_refused(key, value):
    with pytest.raises(Refused):
        reserve(**{key: value})


def test_unreserve_checks_the_name():
    argv = helper.check_unreserve(argparse.Namespace(name="aifa-ml101"), CONFIG)
    assert argv == ["/usr/bin/scontrol", "delete", "ReservationName=aifa-ml101"]


@pytest.mark.parametrize(
    "name",
    [
        "ml101",
        "aifa-",
        "aifa-ml101 ",
        "aifa-ml101\n",
        "aifa-../x",
        "aifa-ml101;id",
        "root",
        "aifa-Ml101",
        "-aifa-ml101",
        "",
    ],
)
def test_unreserve_refuses_other_names(name):
    with pytest.raises(Refused, match="name"):
        helper.check_unreserve(argparse.Namespace(name=name), CONFIG)


@pytest.mark.parametrize(
    "stderr, absent",
    [
        ("delete_reservation ReservationName=aifa-ml101: Requested reservation is invalid", True),  # Slurm 22.05
        ("Reservation aifa-ml101 not found", True),
        ("Invalid reservation name", True),
        ("delete_reservation ReservationName=aifa-ml101: Reservation is in use", False),
        ("Unable to contact slurm controller (connect failure)", False),
    ],
)
def test_a_reservation_that_is_not_there_is_deleted_already(stderr, absent):
    assert helper.reservation_absent(stderr) is absent


# ---- release-guest ----


@pytest.mark.parametrize("user", ["aifa-guest01", "aifa-guest40", "aifa-guest007"])
def test_guest_names_of_the_pool(user):
    assert helper.check_guest_name(user, CONFIG) == user


@pytest.mark.parametrize(
    "user",
    [
        "aifa-guest00",
        "aifa-guest41",
        "aifa-guest99",
        "aifa-guest1",
        "aifa-guest0001",
        "aifa-guest",
        "aifa-guest01/../root",
        "../aifa-guest01",
        "aifa-guest01/..",
        "aifa-guest01\n",
        "aifa-guest\u0660\u0661",
        "aifa-guest-1",
        "aifa-guestab",
        "Aifa-guest01",
        "root",
        "alice",
        "aifa-hub",
        "slurm",
        "",
    ],
)
def test_other_users_are_not_guests(user):
    with pytest.raises(Refused):
        helper.check_guest_name(user, CONFIG)


def test_a_pool_of_none_has_no_guests():
    with pytest.raises(Refused):
        helper.check_guest_name("aifa-guest01", {**CONFIG, "guest_count": 0})


def entry(name="aifa-guest01", uid=2001, gid=2001, home="/home/aifa-guest01"):
    return pwd.struct_passwd((name, "x", uid, gid, "", home, "/bin/bash"))


def dir_stat(uid=2001, kind=stat.S_IFDIR):
    return SimpleNamespace(st_uid=uid, st_mode=kind | 0o700)


def same(path):
    return path


def test_a_guest_with_their_own_home_may_be_released():
    assert helper.check_guest_account("aifa-guest01", entry(), dir_stat(), same) == "/home/aifa-guest01"


@pytest.mark.parametrize(
    "account, home_stat, realpath, why",
    [
        (None, dir_stat(), same, "does not exist"),
        (entry(uid=0), dir_stat(uid=0), same, "ordinary"),
        (entry(uid=999), dir_stat(uid=999), same, "ordinary"),
        (entry(uid=65534), dir_stat(uid=65534), same, "ordinary"),
        (entry(gid=0), dir_stat(), same, "ordinary"),
        (entry(name="alice"), dir_stat(), same, "ordinary"),
        (entry(home="/root"), dir_stat(), same, "home"),
        (entry(home="/home/aifa-guest01/"), dir_stat(), same, "home"),
        (entry(home="/home/alice"), dir_stat(), same, "home"),
        (entry(), dir_stat(), lambda p: "/etc", "home"),  # a symlink above or at the home
        (entry(), dir_stat(kind=stat.S_IFLNK), same, "directory"),
        (entry(), None, same, "directory"),
        (entry(), dir_stat(uid=1001), same, "owned"),
    ],
)
def test_a_guest_account_that_is_not_as_made_is_refused(account, home_stat, realpath, why):
    with pytest.raises(Refused, match=why):
        helper.check_guest_account("aifa-guest01", account, home_stat, realpath)


def test_check_release_reads_passwd_and_the_home_itself():
    def getpwnam(name):
        raise KeyError(name)

    args = argparse.Namespace(user="aifa-guest01")
    with pytest.raises(Refused, match="does not exist"):
        helper.check_release(args, CONFIG, getpwnam=getpwnam, lstat=lambda p: dir_stat())
    with pytest.raises(Refused, match="guest"):
        helper.check_release(argparse.Namespace(user="root"), CONFIG, getpwnam=pwd.getpwnam)


# ---- the config ----


def fake_stat(uid, mode):
    return SimpleNamespace(st_uid=uid, st_mode=mode)


@pytest.mark.parametrize(
    "uid, mode, ok",
    [
        (0, stat.S_IFREG | 0o644, True),
        (0, stat.S_IFREG | 0o600, True),
        (0, stat.S_IFDIR | 0o755, True),
        (0, stat.S_IFREG | 0o664, False),
        (0, stat.S_IFREG | 0o646, False),
        (0, stat.S_IFDIR | 0o1777, False),
        (0, stat.S_IFDIR | 0o775, False),
        (999, stat.S_IFREG | 0o644, False),
        (1000, stat.S_IFREG | 0o600, False),
    ],
)
def test_only_roots_unshared_files_are_trusted(uid, mode, ok):
    if ok:
        helper.check_owner(fake_stat(uid, mode), "f")
    else:
        with pytest.raises(Refused):
            helper.check_owner(fake_stat(uid, mode), "f")


def test_every_directory_above_the_config_is_roots():
    stats = {
        "/etc/aifa-workbench": fake_stat(0, stat.S_IFDIR | 0o750),
        "/etc": fake_stat(0, stat.S_IFDIR | 0o755),
        "/": fake_stat(0, stat.S_IFDIR | 0o755),
    }
    helper.check_directories("/etc/aifa-workbench/course-helper.json", stats.__getitem__)
    for path, bad in [
        ("/etc/aifa-workbench", fake_stat(998, stat.S_IFDIR | 0o750)),  # the hub's own
        ("/etc/aifa-workbench", fake_stat(0, stat.S_IFDIR | 0o770)),
        ("/etc/aifa-workbench", fake_stat(0, stat.S_IFLNK | 0o777)),
        ("/etc", fake_stat(0, stat.S_IFDIR | 0o777)),
    ]:
        with pytest.raises(Refused):
            helper.check_directories("/etc/aifa-workbench/course-helper.json", {**stats, path: bad}.__getitem__)


def write_config(tmp_path, content, mode=0o644):
    path = tmp_path / "course-helper.json"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_a_config_under_a_world_writable_directory_is_refused(tmp_path):
    path = write_config(tmp_path, '{"cluster": "x"}')  # /tmp is 1777
    with pytest.raises(Refused, match="writable"):
        helper.load_config(str(path), root_uid=os.getuid())


def test_the_config_file_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(helper, "check_directories", lambda path, **kw: None)
    import json

    path = write_config(tmp_path, json.dumps(CONFIG))
    assert helper.load_config(str(path), root_uid=os.getuid()) == CONFIG
    with pytest.raises(Refused, match="owned"):
        helper.load_config(str(path), root_uid=os.getuid() + 1)
    path.chmod(0o666)
    with pytest.raises(Refused, match="writable"):
        helper.load_config(str(path), root_uid=os.getuid())
    path.chmod(0o644)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(Refused):
        helper.load_config(str(link), root_uid=os.getuid())
    with pytest.raises(Refused, match="JSON"):
        helper.load_config(str(write_config(tmp_path, "{")), root_uid=os.getuid())


@pytest.mark.parametrize(
    "key, value",
    [
        ("partitions", "cpu"),
        ("partitions", ["cpu;id"]),
        ("guest_count", True),
        ("guest_count", -1),
        ("max_window_hours", 0),
        ("max_window_hours", float("nan")),
        ("max_cores", 0),
        ("max_cores", 1.5),
        ("scontrol", "scontrol"),
        ("scancel", "/usr/bin/../tmp/scancel"),
        ("guest_prefix", "../x"),
        ("cluster", None),
    ],
)
def test_a_bad_config_is_refused(key, value):
    with pytest.raises(Refused, match=key):
        helper.check_config({**CONFIG, key: value})


# ---- the command line ----


def run_main(monkeypatch, capsys, argv, ran=None, fail=None):
    monkeypatch.setattr(helper, "load_config", lambda path: CONFIG)

    def run(argv, ok_codes=(0,)):
        if ran is not None:
            ran.append(argv)
        if fail:
            raise helper.Failed(fail)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(helper, "run", run)
    monkeypatch.setattr(helper, "local_now", lambda: NOW)
    code = helper.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def reserve_argv(**changes):
    options = {**GOOD, **changes}
    return ["reserve"] + [f"--{key}={value}" for key, value in options.items()]


def test_main_runs_a_good_reservation(monkeypatch, capsys):
    ran = []
    code, out, err = run_main(monkeypatch, capsys, reserve_argv(), ran)
    assert (code, err) == (0, "") and out.count("\n") == 1 and "aifa-ml101" in out
    assert ran == [reserve()]


@pytest.mark.parametrize(
    "argv",
    [
        reserve_argv(cores="1000"),
        reserve_argv(name="x" * 100000),
        ["reserve", "--nam=aifa-ml101"],  # no abbreviations
        ["reserve", "--name", "aifa-ml101"],  # missing options
        ["unreserve", "--name", "aifa-ml101", "x" * 100000],
        ["release-guest", "--user", "root"],
        ["rm", "-rf", "/"],
        [],
    ],
)
def test_main_refuses_with_one_short_line_and_exit_2(monkeypatch, capsys, argv):
    ran = []
    code, out, err = run_main(monkeypatch, capsys, argv, ran)
    assert code == 2 and out == "" and ran == []
    assert err.startswith("refused: ") and err.count("\n") == 1 and len(err) < 400


def test_main_reports_a_failed_command_with_exit_1(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, reserve_argv(), fail="Error creating the reservation: " + "e" * 5000)
    assert code == 1 and out == "" and err.startswith("Error creating") and len(err) <= 510


def test_unreserving_a_reservation_that_is_gone_succeeds(monkeypatch, capsys):
    gone = "delete_reservation ReservationName=aifa-ml101: Requested reservation is invalid"
    code, out, err = run_main(monkeypatch, capsys, ["unreserve", "--name=aifa-ml101"], fail=gone)
    assert (code, out, err) == (0, "no reservation aifa-ml101\n", "")
    code, out, err = run_main(monkeypatch, capsys, ["unreserve", "--name=aifa-ml101"], fail="Reservation is in use")
    assert code == 1 and "in use" in err


# ---- wiping a home (in a temporary directory, as whoever runs the tests) ----


def test_a_home_is_emptied_without_following_symlinks_and_gets_skel(tmp_path):
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep").write_text("not the guest's")
    (outside / "file").write_text("not the guest's")
    home = tmp_path / "home"
    (home / "a" / "b").mkdir(parents=True)
    (home / "a" / "b" / "notes.txt").write_text("a stranger's")
    (home / ".bashrc").write_text("alias ls='rm -rf ~'")
    (home / "to-dir").symlink_to(outside / "dir")
    (home / "a" / "to-file").symlink_to(outside / "file")
    (home / "dangling").symlink_to(tmp_path / "nowhere")
    deep = home / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(1200):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        next_fd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    os.close(fd)
    home.chmod(0o755)
    skel = tmp_path / "skel"
    (skel / ".config").mkdir(parents=True)
    (skel / ".bashrc").write_text("# skel\n")
    (skel / ".bashrc").chmod(0o644)
    (skel / ".config" / "x").write_text("x")
    (skel / ".link").symlink_to(".bashrc")

    fds = len(os.listdir("/proc/self/fd"))
    helper.reset_home(str(home), os.getuid(), os.getgid(), skel=str(skel))
    assert len(os.listdir("/proc/self/fd")) == fds  # none left open

    assert sorted(p.name for p in home.iterdir()) == [".bashrc", ".config", ".link"]
    assert (home / ".bashrc").read_text() == "# skel\n" and stat.S_IMODE((home / ".bashrc").stat().st_mode) == 0o644
    assert (home / ".config" / "x").read_text() == "x" and os.readlink(home / ".link") == ".bashrc"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (outside / "dir" / "keep").read_text() == "not the guest's" and (outside / "file").exists()


def test_a_home_that_is_a_symlink_is_not_entered(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    (tmp_path / "home").symlink_to(target)
    with pytest.raises(OSError):
        helper.reset_home(str(tmp_path / "home"), os.getuid(), os.getgid(), skel=str(tmp_path))
    assert (target / "keep").exists()


def test_the_helper_refuses_to_run_unless_root():
    if os.geteuid() == 0:
        pytest.skip("runs as root here: the helper would act for real")
    import subprocess

    result = subprocess.run(
        [sys.executable, "-I", str(PATH), "unreserve", "--name=aifa-ml101"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.startswith("refused: must run as root")


# ---- release-guest: what is searched and removed beyond the home ----

MOUNTS_TEXT = """\
proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
mqueue /dev/mqueue mqueue rw,relatime 0 0
/dev/vdb /srv/scratch\\040space xfs rw 0 0
/dev/vdc /usr/share/ro ext4 ro,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
"""


def test_every_read_write_filesystem_a_user_may_write_is_searched():
    assert helper.writable_mounts(MOUNTS_TEXT) == ["/", "/dev/mqueue", "/dev/shm", "/srv/scratch space"]


SHM = """\
       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0         7  1600                  4096   900   900      0  1004  1005  1004  1005          0          0 1765000000                     0                     0
         0         8  1600                  4096   901   901      0  1002  1003  1002  1003          0          0 1765000000                     0                     0
         0         9  1600                  4096   902   902      0  1002  1003  1004  1005          0          0 1765000000                     0                     0
"""
MSG = """\
       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
 123456789         3   644           0          0     0     0  1004  1005  1004  1005          0          0 1765000000
"""


def test_sysv_ipc_objects_owned_or_made_by_a_guest_are_found_by_their_columns():
    assert helper.ipc_ids(SHM, "shmid", {1004}) == ["7", "9"]
    assert helper.ipc_ids(MSG, "msqid", {1004}) == ["3"]
    assert helper.ipc_ids(MSG, "semid", {1004}) == []  # not this table's column
    assert helper.ipc_ids("", "shmid", {1004}) == []


def test_the_search_deletes_the_guests_own_files_only_and_never_their_homes(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS_TEXT + "fusedemo /tmp/fuse fuse.sshfs rw,user_id=1002 0 0\n")
    monkeypatch.setattr(helper, "MOUNTS", str(mounts))
    ran = []
    monkeypatch.setattr(helper, "run", lambda argv, ok_codes=(0,): ran.append(argv))
    helper.remove_files_everywhere(
        [("aifa-guest01", 1004, 1005, "/home/aifa-guest01"), ("aifa-guest02", 1006, 1007, "/home/aifa-guest02")]
    )
    [argv] = ran
    assert argv[:6] == ["/usr/bin/find", "/", "/dev/mqueue", "/dev/shm", "/srv/scratch space", "-xdev"]
    assert argv[6:] == [
        "!",
        "-samefile",
        "/home/aifa-guest01",
        "!",
        "-samefile",
        "/home/aifa-guest02",
        "(",
        "-user",
        "1004",
        "-o",
        "-user",
        "1006",
        ")",
        "-delete",
    ]  # never -group: others' files


def test_one_release_names_several_guests_but_never_one_twice(tmp_path):
    args = helper.parser().parse_args(["release-guest", "--user", "aifa-guest01", "--user", "aifa-guest02"])
    assert args.user == ["aifa-guest01", "aifa-guest02"]
    twice = argparse.Namespace(user=["aifa-guest01", "aifa-guest01"])
    entry = SimpleNamespace(pw_name="aifa-guest01", pw_uid=1004, pw_gid=1005, pw_dir="/home/aifa-guest01")
    original = helper.check_release
    try:
        helper.check_release = lambda a, c: ("aifa-guest01", 1004, 1005, "/home/aifa-guest01")
        with pytest.raises(Refused, match="named twice"):
            helper.do_release_guest(twice, CONFIG)
    finally:
        helper.check_release = original
    assert entry.pw_uid == 1004
