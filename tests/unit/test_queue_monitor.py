import asyncio

from aifa_workbench.sites.slurm_cli import JobInfo, describe_reason, parse_duration, parse_squeue
from aifa_workbench.spawners.queue_monitor import QueueMonitor

from .fakes import DOWN, ok, scripted_control

UNKNOWN = (1, "", "slurm_load_jobs error: Invalid job id specified")


def test_parse_squeue():
    jobs = parse_squeue(
        "12|PENDING|Resources|n/a|2026-11-22T10:00:00|2:00:00\n"
        "13|RUNNING|None|vm|2026-11-22T09:00:00|1:58:30\n"
        "14|CANCELLED|None|vm|2026-11-22T09:00:01|0:00\nnoise\n15|RUNNING|None|vm|N/A\n"
    )
    assert jobs["12"] == JobInfo("12", "PENDING", "Resources", "", "2026-11-22T10:00:00")
    assert jobs["12"].waiting and not jobs["12"].running and jobs["12"].time_left is None
    assert jobs["13"].running and jobs["13"].active and jobs["13"].time_left == 7110
    assert not jobs["14"].active
    assert "15" not in jobs  # a line of another shape is not read


def test_durations_as_slurm_prints_them():
    assert parse_duration("1-02:03:04") == 93784
    assert parse_duration("58:30") == 3510
    assert parse_duration("0:05") == 5
    for text in ("UNLIMITED", "INVALID", "NOT_SET", "", "1:2:3:4"):
        assert parse_duration(text) is None


def test_time_left_is_not_a_change():
    assert JobInfo("1", "RUNNING", "None", "n", "", 100) == JobInfo("1", "RUNNING", "None", "n", "", 90)


def test_reasons_in_words():
    assert describe_reason("Priority") == "waiting for jobs with a higher priority to start first"
    assert describe_reason("Reservation") == "waiting for the reservation to start"
    assert describe_reason("SomethingNew") == "Slurm says: SomethingNew"


def monitor_of(answers, **kwargs):
    control, runner = scripted_control(answers)
    return QueueMonitor(("site", "hub"), control=control, interval=30, fast_interval=0.01, **kwargs), runner


async def test_one_squeue_covers_every_tracked_job_and_errors_are_not_gone():
    monitor, runner = monitor_of(
        [
            ok("1|RUNNING|None|vm|x|1:00:00\n2|PENDING|Priority|n/a|N/A|2:00:00\n"),
            DOWN,
            ok("1|RUNNING|None|vm|x|1:00:00\n"),
        ]
    )
    monitor.jobs = {"1": None, "2": None}
    await monitor.poll()
    assert len(runner.calls) == 1 and "--jobs=1,2" in runner.argvs[0]
    assert monitor.info("2").reason == "Priority"
    await monitor.poll()  # Slurm does not answer: nothing is gone
    assert not monitor.slurm_ok and monitor.info("1").running and monitor.info("2").waiting
    await monitor.poll()  # job 2 left the queue
    assert monitor.slurm_ok and monitor.info("2").state == "GONE"


async def test_a_single_purged_job_is_gone_not_slurm_down():
    """squeue --jobs=<one unknown id> exits 1 ("Invalid job id specified"): the job is gone."""
    monitor, runner = monitor_of([UNKNOWN])
    monitor.jobs = {"41": JobInfo("41", "RUNNING", "None", "vm")}
    await monitor.poll()
    assert monitor.slurm_ok and monitor.info("41").state == "GONE"
    assert monitor._next_delay() == 30  # and the queue is not asked every second for it


async def test_waiters_wake_on_change():
    monitor, _ = monitor_of([ok("5|PENDING|Resources|n/a|N/A|2:00:00\n"), ok("5|RUNNING|None|vm|x|1:00:00\n")])
    monitor.track("5")
    first = await monitor.wait_change("5", None, timeout=5)
    second = await monitor.wait_change("5", first, timeout=5)
    assert first.waiting and second.running
    monitor._task.cancel()


async def test_the_time_left_is_the_last_polls_without_waking_waiters():
    monitor, _ = monitor_of([ok("6|RUNNING|None|vm|x|1:00:00\n"), ok("6|RUNNING|None|vm|x|0:59:30\n")])
    monitor.jobs = {"6": None}
    await monitor.poll()
    event = monitor._changed
    await monitor.poll()
    assert monitor.info("6").time_left == 3570 and not event.is_set()


async def test_tracking_a_known_job_again_does_not_poll():
    """JupyterHub polls every server every 30 s: that must not turn into one squeue per server."""
    monitor, runner = monitor_of([ok("7|RUNNING|None|vm|x|1:00:00\n")])
    monitor.track("7")
    await monitor.wait_change("7", None, timeout=5)
    calls = len(runner.calls)
    for _ in range(10):
        monitor.track("7")
        await asyncio.sleep(0.02)
    assert len(runner.calls) == calls
    monitor._task.cancel()


async def test_a_bug_in_a_poll_is_logged_and_polling_goes_on(caplog):
    monitor, runner = monitor_of([ok("9|RUNNING|None|vm|x|1:00:00\n")])
    broken = iter([True])

    async def poll_once_broken():
        if next(broken, False):
            raise KeyError("a bug")
        return await QueueMonitor.poll(monitor)

    monitor.poll = poll_once_broken
    monitor.track("9")
    info = await monitor.wait_change("9", None, timeout=5)
    assert info is not None and info.running
    assert "Polling the queue of ('site', 'hub') failed" in caplog.text
    monitor._task.cancel()


def test_a_starting_job_is_watched_closely_even_once_running():
    monitor, _ = monitor_of([])
    monitor.fast_interval = 1
    monitor.jobs = {"8": JobInfo("8", "RUNNING", "None", "vm")}
    assert monitor._next_delay() == 30
    monitor.starting.add("8")
    assert monitor._next_delay() == 1
    monitor.started("8")
    assert monitor._next_delay() == 30


async def test_a_monitor_whose_last_job_left_stops_polling_and_leaves_the_registry():
    """A failed poll makes the monitor poll at fast_interval: once its last job left, it must stop
    (not wake every second forever) and make way for a new monitor when a job comes."""
    key = ("site-emptied", "hub")
    control, runner = scripted_control([DOWN])
    monitor = QueueMonitor.for_key(key, control=control, interval=30, fast_interval=0.01)
    try:
        monitor.track("3")
        async with asyncio.timeout(5):
            while monitor.polls == 0:
                await asyncio.sleep(0.01)
        assert not monitor.slurm_ok
        monitor.untrack("3")
        await asyncio.wait_for(asyncio.shield(monitor._task), 1)  # its loop ended
        assert key not in QueueMonitor._registry
        assert QueueMonitor.for_key(key, control=control) is not monitor
    finally:
        QueueMonitor._registry.pop(key, None)
        monitor._task.cancel()


async def test_a_monitor_tracking_again_after_it_emptied_is_the_sites_monitor_again():
    """A spawner holding the monitor may track a job on it after its last job left: it polls for
    that job and is the one monitor of its key again, not one beside a second."""
    key = ("site-retracked", "hub")
    control, runner = scripted_control([ok("4|RUNNING|None|vm|x|1:00:00\n")])
    monitor = QueueMonitor.for_key(key, control=control, interval=30, fast_interval=0.01)
    try:
        monitor.track("3")
        monitor.untrack("3")
        monitor.track("4")
        assert QueueMonitor.for_key(key, control=control) is monitor
        assert (await monitor.wait_change("4", None, timeout=5)).running
    finally:
        QueueMonitor._registry.pop(key, None)
        monitor._task.cancel()
