"""aifa-workbench: admin commands.

aifa-workbench render-script --site lumi --user alice --options '{"partition": "small-g", "gpus": 2}'
    prints the batch script the hub would submit, without submitting it
aifa-workbench check-catalogue [DIR]
    validates the site catalogue (the bundled one by default), as the hub does at start
aifa-workbench profiles
    lists the quick-start profiles and what each costs
aifa-workbench run-proxy [--settings FILE]
    runs configurable-http-proxy for the hub, on its own (as the hub's user)
aifa-workbench tunneld [--settings FILE]
    runs the tunnel daemon of forward-reach sites (JUPITER), on its own (as the hub's user)
aifa-workbench log-to FILE [--max-bytes N] [--backups K] [--max-line-bytes L]
    writes stdin to the log FILE line by line, rotating it (as the hub's user; see logwriter.py)
aifa-workbench user-key | runtime-key | install-runtime | check-runtime ...
    remote sites' keys and job runtime (see site_admin.py)
aifa-workbench course create|list|end --hub URL ...
    a trainer's courses through the hub's REST API (see courses/cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aifa_workbench.hub_config import logwriter, site_admin
from aifa_workbench.hub_config.courses import cli as course_cli
from aifa_workbench.hub_config.site_accounts.registry import registry_of
from aifa_workbench.hub_config.spawner_settings import spawner_traits
from aifa_workbench.model.catalogue import CatalogueError, load_catalogue
from aifa_workbench.model.settings import SettingsError, load_settings
from aifa_workbench.spawners.profiles import describe_cost, quick_start_profiles
from aifa_workbench.model.request import RequestError, UserContext, parse_job_request
from aifa_workbench.spawners.script import ScriptError


# what the help says of a remote site's env file (script_preview.ENV_FILE_PLACEHOLDER, which a test holds to it)
ENV_FILE_SHOWN = "X" * 16


def _render_script(args) -> int:
    # the hub's own spawner (jupyterhub, batchspawner, tornado): loaded for this command alone,
    # not by the long-lived ones (log-to, tunneld, run-proxy)
    from aifa_workbench.hub_config import script_preview

    options = json.loads(args.options)
    if not isinstance(options, dict):
        raise RequestError("--options must be a JSON object.")
    if args.site:
        options["site"] = args.site
    traits, bind_url, https, registry = _hub_spawner_settings(args.settings, args.catalogue)
    try:
        spawner = script_preview.preview_spawner(traits, args.user, options, bind_url, https, args.home or "")
        spawner.registry = registry
        sys.stdout.write(asyncio.run(script_preview.render(spawner, options)))
    except script_preview.PreviewError as e:
        print(f"aifa-workbench: {e}", file=sys.stderr)
        return 2
    request = spawner.job_request
    site = spawner.sites[request.site]
    cost = describe_cost(
        site, site.partitions[request.partition], request.gpus, request.cpus, request.memory_gb, request.hours
    )
    print(f"# {cost}", file=sys.stderr)
    return 0


def _hub_spawner_settings(path: str, catalogue: str | None) -> tuple[dict, str, bool, object]:
    """(the spawner's traits, the hub's bind_url, whether it serves https, its site-accounts
    registry or None) from the settings file; where none is readable, the spawner's defaults with
    every site of the catalogue enabled."""
    registry = None
    if not os.access(path, os.R_OK):
        print(
            f"aifa-workbench: no readable settings file {path}: the spawner's defaults, every site of the "
            "catalogue enabled",
            file=sys.stderr,
        )
        traits, bind_url, https = {"enabled_sites": list(load_catalogue(catalogue))}, "http://127.0.0.1:8000/", False
    else:
        settings = load_settings(path)
        traits, bind_url, https = spawner_traits(settings), settings.bind_url, settings.https
        # who users are on each site as the hub knows them: its registry (the settings' site_users,
        # what admins and the identity provider added), not the settings alone
        try:
            registry = registry_of(settings)
            traits["site_users"] = {user: registry[user] for user in registry}
        except OSError as e:
            print(
                f"aifa-workbench: the hub's site accounts are not readable ({e}): the settings' alone", file=sys.stderr
            )
            registry = None
    if catalogue:
        traits["catalogue_dir"] = catalogue
    return traits, bind_url, https, registry


def _check_catalogue(args) -> int:
    sites = load_catalogue(args.directory)
    for site in sites.values():
        print(f"{site.path}: OK ({len(site.partitions)} partitions: {', '.join(site.partitions)})")
    return 0


def _profiles(args) -> int:
    sites = load_catalogue(args.catalogue)
    profiles = quick_start_profiles(sites)
    by_slug = {p.slug: p.options for p in profiles}
    for p in profiles:
        site = sites[p.site]
        user = UserContext(accounts={site.name: (site.account_example,)})
        request = parse_job_request({"profile": p.slug}, sites, user, site.name, by_slug)
        part = site.partitions[request.partition]
        cost = describe_cost(site, part, request.gpus, request.cpus, request.memory_gb, request.hours)
        print(f"{p.slug:32} {p.title:40} {cost}")
    return 0


def _run_proxy(args) -> int:
    from .proxy import exec_proxy
    from aifa_workbench.model.settings import load_settings

    exec_proxy(load_settings(args.settings))
    return 0


def _tunneld(args) -> int:
    from .tunnels import main as tunneld_main
    from aifa_workbench.model.settings import load_settings

    tunneld_main(load_settings(args.settings))
    return 0


def _log_to(args) -> int:
    try:
        logwriter.main(args.file, args.max_bytes, args.backups, args.max_line_bytes)
    except logwriter.LogFileError as e:
        print(f"aifa-workbench log-to: {e}", file=sys.stderr)
        return 2
    return 0


def _at_least(minimum: int):
    def check(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="aifa-workbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render-script",
        help="print a job's batch script without submitting it",
        description="Prints the batch script the hub would submit for USER's request, made by the hub's spawner "
        "with the settings file's values. No site is asked anything: the account and reservation in "
        "--options are taken as the user's own, and no budget is checked. A remote site's env file "
        f"is named job-env-{ENV_FILE_SHOWN} (the hub draws that part at random "
        "for each job).",
    )
    render.add_argument("--site", help="the request's site (default: the settings' default_site)")
    render.add_argument("--user", required=True, help="the hub user (their site username: the settings' site_users)")
    render.add_argument("--home", help="the user's home on the local cluster where this host's passwd lacks them")
    render.add_argument("--options", default="{}", help="user_options as JSON, as the REST API takes them")
    render.add_argument(
        "--settings",
        default=os.environ.get("AIFA_WORKBENCH_SETTINGS", "/etc/aifa-workbench/workbench.yaml"),
        help="the hub's settings file (default: $AIFA_WORKBENCH_SETTINGS or /etc/aifa-workbench/workbench.yaml)",
    )
    render.add_argument("--catalogue", help="directory of site files (default: the settings' catalogue_dir)")
    render.set_defaults(run=_render_script)
    check = sub.add_parser("check-catalogue", help="validate the site catalogue")
    check.add_argument("directory", nargs="?")
    check.set_defaults(run=_check_catalogue)
    profiles = sub.add_parser("profiles", help="list the quick-start profiles and their cost")
    profiles.add_argument("--catalogue")
    profiles.set_defaults(run=_profiles)
    proxy = sub.add_parser("run-proxy", help="run configurable-http-proxy for the hub, on its own")
    proxy.add_argument(
        "--settings", default=os.environ.get("AIFA_WORKBENCH_SETTINGS", "/etc/aifa-workbench/workbench.yaml")
    )
    proxy.set_defaults(run=_run_proxy)
    tunneld = sub.add_parser("tunneld", help="run the tunnel daemon of forward-reach sites (JUPITER), on its own")
    tunneld.add_argument(
        "--settings", default=os.environ.get("AIFA_WORKBENCH_SETTINGS", "/etc/aifa-workbench/workbench.yaml")
    )
    tunneld.set_defaults(run=_tunneld)
    log = sub.add_parser("log-to", help="write stdin to a log file line by line, rotating it")
    log.add_argument("file")
    log.add_argument(
        "--max-bytes", type=_at_least(1), default=logwriter.MAX_BYTES, help="rotate before FILE passes this"
    )
    log.add_argument("--backups", type=_at_least(0), default=logwriter.BACKUPS, help="keep FILE.1 ... FILE.K")
    log.add_argument("--max-line-bytes", type=_at_least(1), default=logwriter.MAX_LINE_BYTES, help="cut longer lines")
    log.set_defaults(run=_log_to)
    site_admin.add_commands(sub)
    course_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (
        CatalogueError,
        RequestError,
        ScriptError,
        SettingsError,
        FileNotFoundError,
        json.JSONDecodeError,
    ) as e:
        print(f"aifa-workbench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
