"""Slurm's command line: the only module that builds Slurm argv, and the parsers of what Slurm
prints. Pure: no I/O. Used by the hub's job control (sites.control) and, inside a job, by the
notebook's helpers, so it imports nothing of the hub.

Fields a user chooses (a job name, a comment) are never printed by these queries except where
Slurm's own filter guarantees their value (the reconciler's --name), so no output line can be
forged into another job's."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

ACTIVE_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "SIGNALING",
    "STAGE_OUT",
}
WAITING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
SQUEUE_FORMAT = "%i|%T|%r|%B|%S|%L"
# What squeue says when it knows none of the ids asked for (a purged job): the job is gone.
UNKNOWN_JOB = re.compile(r"Invalid job id specified")
_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # accounts, reservations as Slurm prints them
_USER = r"[a-z][a-z0-9_-]{0,31}"
JOB_NAME_PREFIX = "aifa-wb-"
NAMES_PER_QUERY = 500  # one --name argument stays far below the kernel's 128 KiB per argument

REASONS = {
    "None": "about to start",
    "Resources": "waiting for free resources (the GPUs or cores it asks for are in use)",
    "Priority": "waiting for jobs with a higher priority to start first",
    "Reservation": "waiting for the reservation to start",
    "BeginTime": "waiting for its start time",
    "Dependency": "waiting for another job to finish",
    "ReqNodeNotAvail": "waiting for nodes that are down, drained or reserved",
    "PartitionDown": "waiting: the partition is down",
    "PartitionTimeLimit": "held: it asks for more time than the partition allows",
    "AssocGrpGRES": "waiting: your project has reached its GPU limit",
    "AssocMaxJobsLimit": "waiting: your project has reached its limit of running jobs",
    "AssocGrpBillingMinutes": "waiting: what is left of your project's budget does not cover the hours asked for",
    "AssocGrpBillingRunMinutes": "waiting: your project's running jobs hold the rest of its budget",
    "QOSMaxJobsPerUserLimit": "waiting: you have reached your limit of running jobs",
    "QOSMaxGRESPerUser": "waiting: you have reached your GPU limit",
    "JobHeldUser": "held by you (release it with scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "NodeFail": "a node it ran on failed",
    "NonZeroExitCode": "it ended with an error",
    "TimeLimit": "it reached its time limit",
}


def describe_reason(code: str) -> str:
    return REASONS.get(code, f"Slurm says: {code}")


def is_slurm_name(value: str) -> bool:
    """An account or reservation name as Slurm prints it, fit to be shown and sent back."""
    return bool(_SLURM_NAME.fullmatch(value))


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str  # Slurm's long state name, or GONE when Slurm no longer knows the job
    reason: str = ""
    node: str = ""
    start: str = ""  # actual start, or Slurm's estimate while pending ("" if none), site's local time
    # seconds of walltime left while it runs (None: not running, or unlimited); not part of a change
    time_left: int | None = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING") and bool(self.node)


# --- argv ---------------------------------------------------------------------------------------
def sbatch_argv(bin_dir: str) -> list[str]:
    return [f"{bin_dir}/sbatch", "--parsable"]


def jobs_argv(bin_dir: str, job_ids) -> list[str]:
    ids = ",".join(sorted(job_ids, key=int))
    return [f"{bin_dir}/squeue", "--noheader", "--states=all", f"--jobs={ids}", f"--format={SQUEUE_FORMAT}"]


def cancel_argv(bin_dir: str, job_id: str) -> list[str]:
    return [f"{bin_dir}/scancel", job_id]


def accounts_argv(bin_dir: str, username: str) -> list[str]:
    return [f"{bin_dir}/sacctmgr", "-nP", "show", "user", "withassoc", username, "format=defaultaccount,account"]


def reservations_argv(bin_dir: str) -> list[str]:
    return [f"{bin_dir}/scontrol", "show", "reservation", "--oneliner"]


def job_record_argv(bin_dir: str, job_id: str) -> list[str]:
    return [f"{bin_dir}/scontrol", "show", "job", "-o", job_id]


def load_argvs(bin_dir: str) -> tuple[list[str], list[str]]:
    """The two queries of partition load: GPUs per node, and pending jobs per partition."""
    return (
        [f"{bin_dir}/sinfo", "-h", "-N", "-O", "PartitionName:40,Gres:60,GresUsed:80,CPUsState:40"],
        [f"{bin_dir}/squeue", "-h", "-t", "PD", "-o", "%P"],
    )


def ping_argv(bin_dir: str) -> list[str]:
    return [f"{bin_dir}/scontrol", "ping"]


def partitions_argv(bin_dir: str) -> list[str]:
    return [f"{bin_dir}/sinfo", "--noheader", "--format=%R"]


def tail_argv(path: str, max_bytes: int) -> list[str]:
    # `timeout`: the user owns the file and may make it a FIFO or a link to /dev/zero
    return ["/usr/bin/timeout", "-s", "KILL", "10", "/usr/bin/tail", "-c", str(max_bytes), path]


def project_file_argv(path_pattern: str, project: str, max_bytes: int = 65536) -> list[str] | None:
    """Read a project's file (LUMI's billing data) as the user; None for a name that is not a project's."""
    if not is_slurm_name(project):
        return None
    return [
        "/usr/bin/timeout",
        "-s",
        "KILL",
        "10",
        "/usr/bin/head",
        "-c",
        str(max_bytes),
        path_pattern.replace("{project}", project),
    ]


# --- courses: their account (as the projects' coordinator) and reservation (the root helper) -------
def course_account_argv(
    bin_dir: str, cluster: str, account: str, parent: str, billing_minutes: int, max_wall_minutes: int
) -> list[str]:
    """The course's child account: its budget (GrpTRESMins on billing), one job per participant, no
    job longer than a session."""
    return [
        f"{bin_dir}/sacctmgr",
        "-i",
        "add",
        "account",
        account,
        f"cluster={cluster}",
        f"parent={parent}",
        f"GrpTRESMins=billing={int(billing_minutes)}",
        "MaxJobs=1",
        f"MaxWall={int(max_wall_minutes)}",
        f"Description={account}",
        "Organization=aifa-course",
    ]


def account_exists_argv(bin_dir: str, cluster: str, account: str) -> list[str]:
    return [
        f"{bin_dir}/sacctmgr",
        "-nP",
        "show",
        "assoc",
        "where",
        f"account={account}",
        f"cluster={cluster}",
        "format=account",
    ]


def course_coordinator_argv(bin_dir: str, account: str, user: str) -> list[str]:
    """The hub's user coordinates the course's account explicitly: slurmctld shows a coordinator
    the jobs of an account made under theirs (PrivateData=jobs) only then."""
    return [f"{bin_dir}/sacctmgr", "-i", "add", "coordinator", f"account={account}", f"names={user}"]


def course_member_argv(
    bin_dir: str, cluster: str, user: str, account: str, add: bool = True, partition: str = "", gpus: int = 0
) -> list[str]:
    """A participant's association with the course's account: on the course's partition only, one
    job (queued or running) at a time, no more GPUs than a session's; so that Slurm itself refuses
    a job a participant makes by hand on the course's account for anything else. A removal takes
    every association of the user with that account."""
    if not add:
        return [f"{bin_dir}/sacctmgr", "-i", "delete", "user", user, f"account={account}", f"cluster={cluster}"]
    return [
        f"{bin_dir}/sacctmgr",
        "-i",
        "add",
        "user",
        user,
        f"account={account}",
        f"cluster={cluster}",
        f"partition={partition}",
        "MaxSubmitJobs=1",
        f"MaxTRESPerJob=gres/gpu={int(gpus)}",
    ]


def cancel_account_jobs_argv(bin_dir: str, account: str) -> list[str]:
    """Every job of a course's account (the hub coordinates it): what its window's end leaves."""
    return [f"{bin_dir}/scancel", f"--account={account}"]


def course_account_removal_argv(bin_dir: str, cluster: str, account: str) -> list[str]:
    return [f"{bin_dir}/sacctmgr", "-i", "delete", "account", account, f"cluster={cluster}"]


def course_helper_argv(helper: str, action: str, **options) -> list[str]:
    """The root-owned helper (reservations, wiping a guest account) through its one sudo rule;
    it checks every argument again."""
    argv = ["/usr/bin/sudo", "-n", helper, action]
    for key, value in options.items():
        for one in value if isinstance(value, (list, tuple)) else [value]:
            argv += [f"--{key}", str(one)]
    return argv


# --- workbench job names: aifa-wb-<hub id>-<user> --------------------------------------------------
def job_name(hub_id: str, username: str) -> str:
    """The name of every job a hub submits for a user: it says which hub, so that a second hub on
    the same cluster never takes this hub's jobs for orphans."""
    return f"{JOB_NAME_PREFIX}{hub_id}-{username}"


def job_name_batches(hub_id: str, usernames) -> list[str]:
    """The --name filters of a hub's users, in batches."""
    names = [job_name(hub_id, name) for name in sorted(usernames) if re.fullmatch(_USER, name)]
    return [",".join(names[i : i + NAMES_PER_QUERY]) for i in range(0, len(names), NAMES_PER_QUERY)]


def workbench_jobs_argv(bin_dir: str, names: str) -> list[str]:
    return [
        f"{bin_dir}/squeue",
        "--noheader",
        "--format=%i|%u|%j",
        f"--name={names}",
        "--states=PENDING,CONFIGURING,RUNNING,SUSPENDED",
    ]


def confirm_argv(bin_dir: str, job_id: str, name: str, owner: str) -> list[str]:
    """squeue prints exactly the job id if job `job_id` is owner's and named `name`: Slurm's own
    filters, with no field of the job printed but its id."""
    return [f"{bin_dir}/squeue", "--noheader", f"--jobs={job_id}", f"--name={name}", f"--user={owner}", "--format=%i"]


# --- parsers ------------------------------------------------------------------------------------------
def parse_job_id(sbatch_output: str) -> str | None:
    """`sbatch --parsable` prints `<id>` or `<id>;<cluster>`."""
    match = re.fullmatch(r"(\d+)(;[\w.-]+)?", sbatch_output.strip())
    return match.group(1) if match else None


_DURATION = re.compile(r"(?:(\d{1,4})-)?(?:(\d{1,2}):)?(\d{1,2}):(\d{2})")


def parse_duration(text: str) -> int | None:
    """Slurm's [days-][hours:]minutes:seconds (squeue %L, %l) -> seconds; None for UNLIMITED,
    INVALID, NOT_SET and anything else."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_squeue(output: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6 or not (parts[0].isascii() and parts[0].isdigit()):
            continue
        job_id, state, reason, node, start, left = parts
        node = "" if node in ("n/a", "(null)") else node
        start = "" if start in ("N/A", "Unknown", "(null)") else start
        jobs[job_id] = JobInfo(
            job_id,
            state.split()[0],
            reason.strip("()"),
            node,
            start,
            parse_duration(left) if state.startswith("RUNNING") else None,
        )
    return jobs


def unknown_jobs(squeue_output: str, hub_id: str, known_job_ids: set[str]) -> list[tuple[str, str]]:
    """`squeue --name=... --format=%i|%u|%j` lines -> [(job id, owner)] of this hub's workbench jobs
    that no server owns.

    The job name is the only field a user chooses and may hold newlines or `|`; but squeue's --name
    filter keeps only jobs whose name is exactly one asked for, so every name printed is a plain
    aifa-wb-<hub>-<user>. A job counts only if its name names its own owner. Other lines (array or
    heterogeneous ids such as 17_1 or 17+0, names of other shapes) are skipped, and so is an id seen
    twice."""
    line_shape = re.compile(rf"([0-9]+)\|({_USER})\|{re.escape(JOB_NAME_PREFIX + hub_id)}-({_USER})")
    seen: Counter = Counter()
    candidates = []
    for line in squeue_output.splitlines():
        match = line_shape.fullmatch(line.strip())
        if not match:
            continue
        job_id, owner, named = match.groups()
        seen[job_id] += 1
        if named == owner and job_id not in known_job_ids:
            candidates.append((job_id, owner))
    return [(job_id, owner) for job_id, owner in candidates if seen[job_id] == 1]


def own_unknown_jobs(
    squeue_output: str, hub_id: str, hub_user: str, site_user: str, known_job_ids: set[str]
) -> list[str]:
    """The same, on a site where the hub reads each user's jobs with that user's own login (and
    names them by their site username): ids of `hub_user`'s jobs of this hub that no server owns."""
    line_shape = re.compile(rf"([0-9]+)\|{re.escape(site_user)}\|{re.escape(job_name(hub_id, hub_user))}")
    ids = Counter(m.group(1) for line in squeue_output.splitlines() if (m := line_shape.fullmatch(line.strip())))
    return [job_id for job_id, seen in ids.items() if seen == 1 and job_id not in known_job_ids]


def parse_user_accounts(sacctmgr_output: str) -> tuple[str, ...]:
    """`sacctmgr -nP show user withassoc U format=defaultaccount,account` -> default account first."""
    default, accounts = None, []
    for line in sacctmgr_output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 2 or not all(is_slurm_name(p) for p in parts):
            continue
        default = default or parts[0]
        if parts[1] not in accounts:
            accounts.append(parts[1])
    if default in accounts:
        accounts.remove(default)
        accounts.insert(0, default)
    return tuple(accounts)


def _fields(line: str) -> dict:
    return dict(token.split("=", 1) for token in line.split() if "=" in token)


def budgets_argv(bin_dir: str, accounts) -> list[str]:
    """Limits and usage of the accounts' associations (GrpTRESMins: limit(used) per TRES)."""
    return [f"{bin_dir}/scontrol", "show", "assoc_mgr", "accounts=" + ",".join(accounts), "flags=assoc"]


_TRES_MINUTES = re.compile(r"^(N|\d+)\((\d+)\)$")


def _tres_minutes(value: str, tres: str) -> tuple[int | None, int]:
    """`cpu=N(0),billing=6000(2975),…` -> (limit or None, used) of one TRES."""
    for item in value.split(","):
        name, _, numbers = item.partition("=")
        match = _TRES_MINUTES.match(numbers)
        if name == tres and match:
            return (None if match.group(1) == "N" else int(match.group(1))), int(match.group(2))
    return None, 0


def shows_account_record(assoc_output: str, account: str) -> bool:
    """Whether the listing holds the account's own association (not only a user's in it)."""
    return any(
        _fields(line).get("Account") == account and _fields(line).get("UserName", None) == ""
        for line in assoc_output.splitlines()
        if line.startswith("ClusterName=")
    )


def parse_assoc_records(assoc_output: str, tres: str = "billing") -> list[dict]:
    """`scontrol show assoc_mgr … flags=assoc` -> one record per association: account, user ("" for
    the account's own), parent account, and the limit (None: none), used and running minutes of `tres`."""
    records, current = [], None
    for line in assoc_output.splitlines():
        if line.startswith("ClusterName="):
            fields = _fields(line)
            current = {
                "account": fields.get("Account", ""),
                "user": fields.get("UserName", "").split("(")[0],
                "parent": "",
                "limit": None,
                "used": 0,
                "running": 0,
            }
            records.append(current)
        elif current is not None:
            for token in line.split():
                key, _, value = token.partition("=")
                if key == "ParentAccount":
                    current["parent"] = value.split("(")[0]
                elif key == "GrpTRESMins":
                    current["limit"], current["used"] = _tres_minutes(value, tres)
                elif key == "GrpTRESRunMins":
                    current["running"] = _tres_minutes(value, tres)[1]
    return [r for r in records if is_slurm_name(r["account"])]


def parents_to_ask(records: list[dict], known) -> set[str]:
    """Parent accounts of the listed accounts whose own records are not listed yet."""
    listed = {r["account"] for r in records if r["user"] == ""} | set(known)
    return {
        r["parent"]
        for r in records
        if r["user"] == "" and is_slurm_name(r["parent"]) and r["parent"] not in listed and r["parent"] != "root"
    }


def budgets_from_records(records: list[dict], accounts, username: str) -> dict[str, dict]:
    """Per account, the tightest `billing` limit that binds `username` there, as Slurm checks it:
    the user's association, the account's, and every parent account's up the tree.
    {account: {"limit", "used", "running"}} in TRES-minutes; accounts no limit binds are left out."""
    own = {r["account"]: r for r in records if r["user"] == ""}
    budgets: dict[str, dict] = {}
    for account in accounts:
        chain = [r for r in records if r["account"] == account and r["user"] == username]
        name, seen = account, set()
        while name in own and name not in seen:
            seen.add(name)
            chain.append(own[name])
            name = own[name]["parent"]
        for r in chain:
            if r["limit"] is None:
                continue
            left = r["limit"] - r["used"] - r["running"]
            known = budgets.get(account)
            if known is None or left < known["limit"] - known["used"] - known["running"]:
                budgets[account] = {"limit": r["limit"], "used": r["used"], "running": r["running"]}
    return budgets


def parse_budgets(assoc_output: str, username: str, tres: str = "billing") -> dict[str, dict]:
    """The budgets of every account the listing shows (its parents as far as they are listed)."""
    records = parse_assoc_records(assoc_output, tres)
    return budgets_from_records(records, sorted({r["account"] for r in records}), username)


def parse_reservations(scontrol_output: str, username: str, accounts) -> tuple[str, ...]:
    """`scontrol show reservation --oneliner` -> the reservations `username` may use."""
    usable = []
    for line in scontrol_output.splitlines():
        fields = _fields(line)
        name = fields.get("ReservationName", "")
        if not is_slurm_name(name) or fields.get("State") not in ("ACTIVE", "INACTIVE"):
            continue
        users = set(fields.get("Users", "").split(","))
        res_accounts = set(fields.get("Accounts", "").split(","))
        if username in users or res_accounts & set(accounts):
            usable.append(name)
    return tuple(usable)


def reservation_windows(scontrol_output: str, names) -> dict[str, dict]:
    """`scontrol show reservation --oneliner` -> for each of `names`: its partition ("" when it
    reserves nodes only), start and end (the site's local time, as Slurm prints them)."""
    windows = {}
    for line in scontrol_output.splitlines():
        fields = _fields(line)
        name = fields.get("ReservationName", "")
        if name in names:
            partition = fields.get("PartitionName", "")
            windows[name] = {
                "partition": partition if is_slurm_name(partition) else "",
                "start": fields.get("StartTime", ""),
                "end": fields.get("EndTime", ""),
                "active": fields.get("State") == "ACTIVE",
            }
    return windows


def _gpu_count(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isascii() and parts[-1].isdigit():
            total += int(parts[-1])
    return total


_EMPTY_LOAD = {"idle_gpus": 0, "total_gpus": 0, "idle_cpus": 0, "total_cpus": 0, "pending": 0}
_CPUS_STATE = re.compile(r"([0-9]+)/([0-9]+)/([0-9]+)/([0-9]+)")  # allocated/idle/other/total


def parse_partition_load(sinfo_output: str, squeue_pending_output: str) -> dict[str, dict]:
    """The outputs of `load_argvs` -> {partition: {"idle_gpus", "total_gpus", "idle_cpus",
    "total_cpus", "pending"}}, each a count."""
    load: dict[str, dict] = {}
    for line in sinfo_output.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        entry = load.setdefault(parts[0].rstrip("*"), dict(_EMPTY_LOAD))
        total, used = _gpu_count(parts[1]), _gpu_count(parts[2])
        entry["total_gpus"] += total
        entry["idle_gpus"] += max(total - used, 0)
        cpus = _CPUS_STATE.fullmatch(parts[3]) if len(parts) > 3 else None
        if cpus:
            entry["idle_cpus"] += int(cpus.group(2))
            entry["total_cpus"] += int(cpus.group(4))
    for partition, count in Counter(squeue_pending_output.split()).items():
        load.setdefault(partition, dict(_EMPTY_LOAD))["pending"] = count
    return load
