"""Fakes for unit tests: a runner that answers from a script, as a site's commands would."""

from aifa_workbench.sites.commands import CommandResult, CommandTimeout
from aifa_workbench.sites.control import JobControl

DOWN = (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
TIMEOUT = "timeout"


class ScriptedRunner:
    """Answers each command with the next (returncode, stdout, stderr) of `answers` (the last one
    again once they run out); TIMEOUT raises CommandTimeout. Records every call."""

    def __init__(self, answers):
        self.answers, self.calls, self.last = list(answers), [], None

    async def run(self, argv, *, as_user=None, stdin=None, env=None, timeout=30.0):
        self.calls.append({"argv": list(argv), "as_user": as_user, "stdin": stdin, "env": env})
        answer = self.answers.pop(0) if self.answers else self.last
        self.last = answer
        if answer == TIMEOUT:
            raise CommandTimeout(argv, timeout)
        return CommandResult(tuple(argv), *answer)

    @property
    def argvs(self):
        return [call["argv"] for call in self.calls]


def scripted_control(answers, shared_queries=True) -> tuple[JobControl, ScriptedRunner]:
    runner = ScriptedRunner(answers)
    return JobControl("site", "Test site", runner, "/bin-dir", timeout=5, shared_queries=shared_queries), runner


def ok(stdout=""):
    return (0, stdout, "")
