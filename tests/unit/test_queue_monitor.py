import asyncio

from aifa_workbench.spawners.queue_monitor import JobInfo, QueueMonitor, describe_reason, parse_squeue
from aifa_workbench.spawners.transport import CommandResult


def test_parse_squeue():
    jobs = parse_squeue("12|PENDING|Resources|n/a|2026-11-22T10:00:00\n13|RUNNING|None|vm|2026-11-22T09:00:00\n"
                        "14|CANCELLED|None|vm|2026-11-22T09:00:01\nnoise\n")
    assert jobs["12"] == JobInfo("12", "PENDING", "Resources", "", "2026-11-22T10:00:00")
    assert jobs["12"].waiting and not jobs["12"].running
    assert jobs["13"].running and jobs["13"].active
    assert not jobs["14"].active


def test_reasons_in_words():
    assert describe_reason("Priority") == "waiting for jobs with a higher priority to start first"
    assert describe_reason("Reservation") == "waiting for the reservation to start"
    assert describe_reason("SomethingNew") == "Slurm says: SomethingNew"


class FakeTransport:
    """squeue answers from a script of outputs; None means 'Slurm did not answer'."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    async def run(self, argv, **kwargs):
        self.calls.append(argv)
        answer = self.answers.pop(0) if self.answers else self.last
        self.last = answer
        if answer is None:
            return CommandResult(tuple(argv), 1, "", "slurm_load_jobs error: Unable to contact slurm controller")
        return CommandResult(tuple(argv), 0, answer, "")


def test_one_squeue_covers_every_tracked_job_and_errors_are_not_gone():
    async def scenario():
        transport = FakeTransport(["1|RUNNING|None|vm|x\n2|PENDING|Priority|n/a|N/A\n", None,
                                   "1|RUNNING|None|vm|x\n"])
        monitor = QueueMonitor(("site", "hub"), transport=transport, interval=30, fast_interval=0.01)
        monitor.jobs = {"1": None, "2": None}
        await monitor.poll()
        assert len(transport.calls) == 1 and "--jobs=1,2" in transport.calls[0]
        assert monitor.info("2").reason == "Priority"
        await monitor.poll()                      # Slurm does not answer: nothing is gone
        assert not monitor.slurm_ok and monitor.info("1").running and monitor.info("2").waiting
        await monitor.poll()                      # job 2 left the queue
        assert monitor.slurm_ok and monitor.info("2").state == "GONE"

    asyncio.run(scenario())


def test_waiters_wake_on_change():
    async def scenario():
        transport = FakeTransport(["5|PENDING|Resources|n/a|N/A\n", "5|RUNNING|None|vm|x\n"])
        monitor = QueueMonitor(("site", "hub"), transport=transport, interval=30, fast_interval=0.01)
        monitor.track("5")
        first = await monitor.wait_change("5", None, timeout=5)
        second = await monitor.wait_change("5", first, timeout=5)
        assert first.waiting and second.running
        monitor._task.cancel()

    asyncio.run(scenario())


def test_tracking_a_known_job_again_does_not_poll():
    """JupyterHub polls every server every 30 s: that must not turn into one squeue per server."""
    async def scenario():
        transport = FakeTransport(["7|RUNNING|None|vm|x\n"])
        monitor = QueueMonitor(("site", "hub"), transport=transport, interval=30, fast_interval=0.01)
        monitor.track("7")
        await monitor.wait_change("7", None, timeout=5)
        calls = len(transport.calls)
        for _ in range(10):
            monitor.track("7")
            await asyncio.sleep(0.02)
        assert len(transport.calls) == calls
        monitor._task.cancel()

    asyncio.run(scenario())


def test_a_starting_job_is_watched_closely_even_once_running():
    monitor = QueueMonitor(("site", "hub"), transport=FakeTransport([]), interval=30, fast_interval=1)
    monitor.jobs = {"8": JobInfo("8", "RUNNING", "None", "vm")}
    assert monitor._next_delay() == 30
    monitor.starting.add("8")
    assert monitor._next_delay() == 1
    monitor.started("8")
    assert monitor._next_delay() == 30
