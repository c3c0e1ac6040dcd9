"""What the waiting page says while a job starts (pure): its bar and its line, and why a job
ended before JupyterLab started, with the last lines of its output."""

from __future__ import annotations

import html
import re
import time

from aifa_workbench.model import session as session_mod
from aifa_workbench.sites.slurm_cli import JobInfo, describe_reason

SUBMITTING = {"progress": 10, "message": "Submitting your job to Slurm…"}

_UNPRINTABLE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")  # terminal escapes first


def output_tail(text: str, lines: int, line_chars: int, cut_at_start: bool = False) -> str:
    """The last `lines` lines of a job's output, each at most `line_chars` characters, with
    terminal escapes and control characters removed. `cut_at_start`: the text is the end of a
    longer file, so its first line is a fragment and is dropped."""
    kept = text.splitlines()
    if cut_at_start and len(kept) > 1:
        kept = kept[1:]
    shown = []
    for line in kept[-lines:]:
        line = _UNPRINTABLE.sub("", line.replace("\t", "    ")).rstrip()
        shown.append(
            line if len(line) <= line_chars else line[:line_chars] + f"… ({len(line) - line_chars} more characters)"
        )
    return "\n".join(shown).strip("\n")


def died_early(job_id: str, info: JobInfo, tail: str) -> str:
    """Why a job ended before JupyterLab started, with the last lines it wrote (`tail`)."""
    why = info.state.lower() if info.state != "GONE" else "gone from the queue"
    if info.reason and info.reason != "None":
        why += f": {describe_reason(info.reason)}"
    message = f"Your job {job_id} ended before JupyterLab started ({why})."
    if tail:
        message += " The last lines it wrote:\n" + tail
    return message


def progress_event(
    job_id: str,
    info: JobInfo | None,
    *,
    partition: str | None,
    zone: str | None,
    reservation_start: float | None,
    port: int,
) -> dict:
    """The event of a submitted job; an expected start also as a <time> the page shows in the
    reader's own zone. `partition`: the request's (None: unknown), `zone`: its site's."""
    where = partition or "its"
    if info is None:
        return {"progress": 15, "message": f"Job {job_id} submitted; waiting for Slurm to report on it…"}
    if info.waiting:
        return _waiting_event(job_id, info, where, zone, reservation_start)
    if info.running and not port:
        return {"progress": 60, "message": f"Job {job_id} is running on {info.node}; JupyterLab is starting…"}
    if info.running:
        return {"progress": 85, "message": f"JupyterLab answered on {info.node}; connecting you…"}
    return {"progress": 90, "message": f"Job {job_id} is {info.state.lower()}."}


def _waiting_event(job_id: str, info: JobInfo, where: str, zone: str | None, reservation_start: float | None) -> dict:
    text = f"Job {job_id} is waiting in the {where} queue: {describe_reason(info.reason)}."
    expected = session_mod.expected_start(info, zone, reservation_start)
    if not expected:
        return {"progress": 25, "message": text}
    moment = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expected))
    return {
        "progress": 35,
        "message": f"{text} Slurm expects it to start at {moment}.",
        "html_message": f"{html.escape(text)} Slurm expects it to start at <time class=\"aifa-when\" "
        f"datetime=\"{int(expected)}\">{html.escape(moment)}</time>.",
    }
