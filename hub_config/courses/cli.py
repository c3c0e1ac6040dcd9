"""aifa-workbench course: a trainer's courses from a terminal, through the hub's REST API.

  aifa-workbench course create --hub URL --id intro-llm --title "Intro to LLMs" --partition gpu \\
      --gpus 1 --hours 2 --start 2026-12-04T09:00 --end 2026-12-04T12:00 --size 30 --project proj_training
  aifa-workbench course list --hub URL
  aifa-workbench course end --hub URL intro-llm

The token is a personal API token of the hub (its Token page), read from $AIFA_WORKBENCH_TOKEN or
--token-file: never from the command line, where `ps` shows it. Times are in this machine's
time zone unless they name one (2026-12-04T09:00+01:00).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import datetime

FIELDS = {
    "id": "id",
    "title": "title",
    "site": "site",
    "partition": "partition",
    "gpus": "gpus",
    "hours": "hours",
    "size": "size",
    "project": "project",
    "budget": "budget",
    "materials": "materials_repo",
    "branch": "materials_branch",
    "idle_minutes": "idle_minutes",
    "reservation": "reservation",
}


def add_parser(sub) -> None:
    course = sub.add_parser("course", help="make, list and end courses through the hub (trainers)")
    actions = course.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a course: its reservation, account and join code")
    listing = actions.add_parser("list", help="the courses you teach or joined")
    end = actions.add_parser("end", help="end a course now: its sessions stop")
    end.add_argument("course", help="the course's short name")
    for parser in (create, listing, end):
        parser.add_argument("--hub", required=True, help="the hub's address, e.g. https://workbench.aifa.be/")
        parser.add_argument("--token-file", help="file holding your API token (else $AIFA_WORKBENCH_TOKEN)")
        parser.set_defaults(run=run)
    for name in ("id", "title", "partition", "project", "materials", "branch", "reservation"):
        create.add_argument(f"--{name}", required=name in ("id", "title", "partition", "project"))
    create.add_argument("--site", default="local")
    create.add_argument("--gpus", type=int)
    create.add_argument("--hours", type=float, default=1)
    create.add_argument("--size", type=int, default=20)
    create.add_argument("--budget", type=float)
    create.add_argument("--idle-minutes", dest="idle_minutes", type=int)
    create.add_argument("--start", required=True, help="YYYY-MM-DDTHH:MM (this machine's time zone unless given)")
    create.add_argument("--end", required=True, help="YYYY-MM-DDTHH:MM")
    create.add_argument("--instructors", default="", help="hub names, comma separated")


def epoch(text: str | None, what: str) -> float:
    if not text:
        raise SystemExit(f"aifa-workbench course: give --{what} (YYYY-MM-DDTHH:MM).")
    try:
        return datetime.fromisoformat(text).astimezone().timestamp()
    except ValueError:
        raise SystemExit(
            f"aifa-workbench course: --{what} {text[:40]!r} is not a time like 2026-12-04T09:00."
        ) from None


def token_of(args) -> str:
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    token = os.environ.get("AIFA_WORKBENCH_TOKEN", "").strip()
    if not token:
        raise SystemExit(
            "aifa-workbench course: put your API token in $AIFA_WORKBENCH_TOKEN or a file "
            "named by --token-file (the hub's Token page makes one)."
        )
    return token


def call(args, method: str, path: str, body=None) -> dict:
    url = args.hub.rstrip("/") + "/hub/api/" + path
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"token {token_of(args)}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", "")
        except ValueError:
            message = ""
        raise SystemExit(f"The hub refused ({e.code}): {message or e.reason}") from None


def course_body(args) -> dict:
    body = {key: getattr(args, name) for name, key in FIELDS.items() if getattr(args, name) is not None}
    body.update(
        starts_at=epoch(args.start, "start"),
        ends_at=epoch(args.end, "end"),
        instructors=[n for n in args.instructors.replace(" ", ",").split(",") if n],
    )
    return body


def run(args) -> int:
    if args.action == "create":
        made = call(args, "POST", "courses", course_body(args))
        print(f"Course {made['id']} is ready: code {made['code']}, link {made['join_url']}")
    elif args.action == "list":
        for c in call(args, "GET", "courses")["courses"]:
            when = f"{datetime.fromtimestamp(c['starts_at']):%Y-%m-%d %H:%M} to {datetime.fromtimestamp(c['ends_at']):%H:%M}"
            extra = f", code {c['code']}, {len(c['participants'])}/{c['size']} joined" if "code" in c else ""
            print(f"{c['id']}: {c['title']} ({c['state']}), {when}, {c['session']}{extra}")
    else:
        ended = call(args, "POST", f"courses/{args.course}/end")
        print(f"Course {ended['id']} has ended ({ended['state']}).")
    return 0
