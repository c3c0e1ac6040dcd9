"""The hub's log writer (`aifa-workbench log-to`): rotation, the line cap, and no symlink followed."""

import io
import os
import subprocess
import sys
import threading
import tracemalloc

import pytest

from aifa_workbench.hub_config import logwriter


def lines_of(*lines: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(lines))


def test_lines_are_copied_and_appended_to_an_existing_log(tmp_path):
    log = tmp_path / "hub.log"
    log.write_bytes(b"old\n")
    logwriter.copy_lines(lines_of(b"one\n", b"two\n", b"last line without newline"), str(log))
    assert log.read_bytes() == b"old\none\ntwo\nlast line without newline\n"
    assert not (tmp_path / "hub.log.1").exists()


def test_a_new_log_is_created_private(tmp_path):
    log = tmp_path / "hub.log"
    logwriter.copy_lines(lines_of(b"x\n"), str(log))
    assert log.stat().st_mode & 0o777 == 0o600


def test_rotates_before_passing_max_bytes_and_keeps_k_backups(tmp_path):
    log = tmp_path / "hub.log"
    lines = [b"line %02d ......\n" % n for n in range(20)]  # 16 bytes each
    logwriter.copy_lines(lines_of(*lines), str(log), max_bytes=40, backups=3)
    files = [log, *(tmp_path / f"hub.log.{n}" for n in (1, 2, 3))]
    assert [f.read_bytes() for f in files] == [b"".join(lines[i : i + 2]) for i in (18, 16, 14, 12)]
    assert all(f.stat().st_size <= 40 for f in files)
    assert not (tmp_path / "hub.log.4").exists()  # older lines are gone, not kept in a fifth file


def test_rotation_without_backups_starts_the_file_again(tmp_path):
    log = tmp_path / "hub.log"
    logwriter.copy_lines(lines_of(b"aaaa\n", b"bbbb\n", b"cccc\n"), str(log), max_bytes=8, backups=0)
    assert log.read_bytes() == b"cccc\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.log"]


def test_a_long_line_keeps_its_start_and_says_how_much_was_cut(tmp_path):
    log = tmp_path / "hub.log"
    logwriter.copy_lines(
        lines_of(b"short\n", b"x" * 100 + b"\n", b"y" * 10 + b"\n", b"z" * 30), str(log), max_line_bytes=10
    )
    assert log.read_bytes().decode().splitlines() == [
        "short",
        "x" * 10 + " … (90 bytes cut)",
        "y" * 10,
        "z" * 10 + " … (20 bytes cut)",
    ]


def feed(fd: int, data: bytes) -> threading.Thread:
    """Write `data` into the pipe `fd` from a thread, in slices of one buffer (no copies of it)."""

    def run():
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            os.write(fd, view[start : start + 65536])
        os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_5_mb_line_costs_no_more_than_the_cap_in_memory_and_becomes_one_cut_line(tmp_path):
    log, cap = tmp_path / "hub.log", 256 * 1024
    data = b"before\n" + b"x" * (5 * 1024 * 1024) + b"\nafter\n"
    r, w = os.pipe()
    with open(r, "rb") as src:
        tracemalloc.start()
        thread = feed(w, data)
        logwriter.copy_lines(src, str(log), max_line_bytes=cap)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        thread.join()
    assert log.read_bytes().split(b"\n") == [
        b"before",
        b"x" * cap + f" … ({5 * 1024 * 1024 - cap} bytes cut)".encode(),
        b"after",
        b"",
    ]
    # the kept start, one 8 KiB piece being read (twice, inside readline) and small change; not 5 MB
    assert peak < cap + 48 * 1024, f"{peak} bytes held for a line capped at {cap}"


def test_a_symlink_in_place_of_the_log_is_refused_not_followed(tmp_path):
    target = tmp_path / "not-a-log"
    target.write_bytes(b"precious\n")
    (tmp_path / "hub.log").symlink_to(target)
    with pytest.raises(logwriter.LogFileError, match="symbolic link"):
        logwriter.copy_lines(lines_of(b"written through the link?\n"), str(tmp_path / "hub.log"))
    assert target.read_bytes() == b"precious\n"


def test_a_fifo_in_place_of_the_log_is_refused(tmp_path):
    os.mkfifo(tmp_path / "hub.log")
    with pytest.raises(logwriter.LogFileError):
        logwriter.open_log(str(tmp_path / "hub.log"))


def test_rotation_moves_a_planted_backup_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "not-a-log"
    target.write_bytes(b"precious\n")
    (tmp_path / "hub.log.1").symlink_to(target)
    logwriter.copy_lines(lines_of(b"aaaa\n", b"bbbb\n"), str(tmp_path / "hub.log"), max_bytes=5, backups=2)
    assert target.read_bytes() == b"precious\n"
    assert (tmp_path / "hub.log.2").is_symlink() and (tmp_path / "hub.log.1").read_bytes() == b"aaaa\n"


def test_the_command_line_copies_stdin_with_its_options(tmp_path):
    log = tmp_path / "proxy.log"
    done = subprocess.run(
        [sys.executable, "-m", "aifa_workbench.hub_config.cli", "log-to", str(log), "--max-line-bytes", "4"],
        input=b"hello\nok\n",
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert log.read_bytes() == "hell … (1 bytes cut)\nok\n".encode()


def test_the_command_line_refuses_a_symlink_with_a_sentence(tmp_path, monkeypatch, capsys):
    from aifa_workbench.hub_config import cli

    monkeypatch.setattr(logwriter.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    target = tmp_path / "not-a-log"
    target.write_bytes(b"precious\n")
    (tmp_path / "hub.log").symlink_to(target)
    assert cli.main(["log-to", str(tmp_path / "hub.log")]) == 2
    assert "is a symbolic link; it is not followed" in capsys.readouterr().err
    assert target.read_bytes() == b"precious\n"
