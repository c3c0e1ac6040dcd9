"""The site catalogue: one YAML file per site (bundled: model/sites/), validated by one schema.

A bad file stops the hub with the file, the key and the reason (CatalogueError).
"""

from __future__ import annotations

import zoneinfo
from importlib import resources
from pathlib import Path

from aifa_workbench.model.request import RequestError, UserContext, parse_job_request
from aifa_workbench.model.site import DaskPreset, Environment, Login, Partition, Reach, Site, SitePaths
from aifa_workbench.model.yaml_files import check_schema, load_yaml

SLUG = r"^[a-z][a-z0-9_-]{0,31}$"
_INT = {"type": "integer", "minimum": 0}
_POS = {"type": "integer", "minimum": 1}

BILLING_SCHEMA = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "per_node_hour"],
            "properties": {
                "kind": {"const": "node_hours"},
                "per_node_hour": {"type": "number", "exclusiveMinimum": 0},
                # what per_node_hour counts in (LUMI: 4 GPU-hours per node-hour)
                "unit": {"enum": ["node-hours", "GPU-hours", "core-hours", "billing-unit hours"]},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "factor"],
            "properties": {
                "kind": {"enum": ["gpu_hours", "core_hours"]},
                "factor": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "weight"],
            "properties": {"kind": {"const": "lucia_bu"}, "weight": {"type": "number", "exclusiveMinimum": 0}},
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "factor", "cores_per_unit", "memory_gb_per_unit"],
            "properties": {
                "kind": {"const": "lumi_shared"},
                "factor": {"type": "number", "exclusiveMinimum": 0},
                "cores_per_unit": _POS,
                "memory_gb_per_unit": _POS,
            },
        },
    ]
}

PARTITION_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "title",
        "gpu_model",
        "gpus_per_node",
        "cores_per_node",
        "memory_gb_per_node",
        "max_hours",
        "allocation",
        "billing",
    ],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        # what a newcomer uses it for, on the spawn page's card ("Try a model on one GPU")
        "purpose": {"type": "string", "minLength": 1, "maxLength": 80},
        "family": {"enum": ["lumi", "jupiter", "lucia"]},
        "gpu_model": {"type": "string"},
        "gpus_per_node": {"type": "integer", "minimum": 0, "maximum": 16},
        "cores_per_node": _POS,
        "memory_gb_per_node": _POS,
        "max_hours": {"type": "integer", "minimum": 1, "maximum": 168},
        "allocation": {"enum": ["shared", "whole_node"]},
        "cpus_per_gpu": _POS,
        "memory_gb_per_gpu": _POS,
        "default_cpus": _POS,
        "default_memory_gb": _POS,
        "billing": BILLING_SCHEMA,
    },
}

DASK_PRESET_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "partition"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "partition": {"type": "string", "pattern": SLUG},
        "gpus": _INT,
        "cpus": _POS,
        "memory_gb": _POS,
        "hours": _POS,
    },
}

LOGIN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host", "host_keys"],
    "properties": {
        "host": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.-]*$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        # The login node's public host keys, as OpenSSH prints them (ssh-keyscan, the site's
        # published fingerprints): the hub logs in only to a node presenting one of them.
        "host_keys": {
            "type": "array",
            "items": {
                "type": "string",
                "pattern": r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|rsa-sha2-(256|512)|ssh-rsa) [A-Za-z0-9+/]+=*( [^\n]*)?$",
            },
        },
    },
}

# a project's folder: plain absolute path segments, one of them holding {account}, none empty, "." or ".."
_SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9_.-]+"
PROJECT_FOLDER = rf"^(?:/{_SEGMENT})*/(?!\.\.?(?:/|$))[A-Za-z0-9_.-]*\{{account\}}[A-Za-z0-9_.-]*(?:/{_SEGMENT})*$"
# or the variable the site's login shell sets to it, as JSC's $PROJECT_<project> and $SCRATCH_<project>
PROJECT_VARIABLE = r"^\$[A-Za-z_][A-Za-z0-9_]*\{account\}[A-Za-z0-9_]*$"

PATHS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "runtime": {"type": "string", "pattern": r"^/[A-Za-z0-9_./-]+$"},
        "slurm_bin": {"type": "string", "pattern": r"^/[A-Za-z0-9_./-]+$"},
        # the project's shared folder and its scratch ({account}: the job's account), as the site
        # publishes them: a path, or $VARIABLE, read from the user's login shell on the site; a
        # start keeps those the site has and the user may write in (the scratch takes PyTorch's and
        # Hugging Face's caches)
        "project": {"type": "string", "pattern": f"{PROJECT_FOLDER}|{PROJECT_VARIABLE}"},
        "scratch": {"type": "string", "pattern": f"{PROJECT_FOLDER}|{PROJECT_VARIABLE}"},
    },
}

REACH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["mode"],
    "properties": {
        # direct: the hub routes to the compute node's address (nodes the hub can dial).
        # reverse: the job dials out to the hub's tunnel gateway (at `gateway`, as the site's
        # nodes reach it) and listens there on the port the hub granted (nodes with egress: LUMI).
        # Both: the job calls the hub's API at hub_url ({hub_port}: the hub's API port).
        # forward: the hub's tunnel daemon forwards to the node through the user's login-node
        # connection (nodes with no way out: JUPITER), and holds a remote forward on the login
        # node, at hub_forward_host (its name as the nodes know it), by which jobs call the hub.
        "mode": {"enum": ["direct", "reverse", "forward"]},
        "hub_url": {"type": "string", "pattern": r"^https?://[A-Za-z0-9.-]+(:([0-9]{1,5}|\{hub_port\}))?$"},
        "gateway": {"type": "string", "pattern": r"^[A-Za-z0-9.-]+$"},
        "hub_forward_host": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$"},
    },
    "allOf": [
        {"if": {"properties": {"mode": {"const": "reverse"}}}, "then": {"required": ["gateway", "hub_url"]}},
        {"if": {"properties": {"mode": {"const": "direct"}}}, "then": {"required": ["hub_url"]}},
        {"if": {"properties": {"mode": {"const": "forward"}}}, "then": {"required": ["hub_forward_host"]}},
    ],
}

SITE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "title",
        "family",
        "login",
        "transport",
        "account_example",
        "accounts_from",
        "reservations_allowed",
        "dask_interface",
        "gpu_label",
        "billing_unit",
        "default_environment",
        "environments",
        "partitions",
    ],
    "properties": {
        "name": {"type": "string", "pattern": SLUG},
        "title": {"type": "string", "minLength": 1},
        "family": {"enum": ["lumi", "jupiter", "lucia"]},
        # the zone of the times Slurm prints there (IANA name); unset: the hub host's own
        "timezone": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z0-9_+-]{1,30}){0,2}$"},
        "login": LOGIN_SCHEMA,
        "paths": PATHS_SCHEMA,
        "key_instructions": {"type": "string", "minLength": 1, "maxLength": 1000},
        "key_from_clause": {"type": "boolean"},
        "reach": REACH_SCHEMA,
        "transport": {"enum": ["local", "ssh"]},
        "account_example": {"type": "string"},
        "accounts_from": {"enum": ["slurm", "settings"]},
        "reservations_allowed": {"type": "boolean"},
        "dask_interface": {"type": "string", "pattern": r"^[a-z][a-z0-9]{0,14}$"},
        "dask_local_directory": {"type": "string", "pattern": r"^(/|\$)[A-Za-z0-9_/.${}-]*$"},
        "dask_presets": {
            "type": "object",
            "propertyNames": {"pattern": SLUG},
            "additionalProperties": DASK_PRESET_SCHEMA,
        },
        "gpu_label": {"type": "string", "pattern": r"^[A-Za-z]+$"},
        "billing_unit": {"enum": ["GPU-hours", "node-hours", "core-hours", "billing-unit hours"]},
        # where a project's remaining allocation is read: Slurm's budget on the `billing` TRES
        # (GrpTRESMins=billing=N), its partitions' TRESBillingWeights making `per_unit_hour`
        # billing per hour of the site's unit (model/budget.py)
        # or LUMI's billing file of each project (lumi-allocations' data: `path` with {project})
        "budget": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source"],
            "properties": {
                "source": {"enum": ["slurm", "lumi_project_info"]},
                "per_unit_hour": {"type": "number", "exclusiveMinimum": 0},
                "path": {"type": "string", "pattern": r"^/[A-Za-z0-9_./-]*\{project\}[A-Za-z0-9_./{}-]*$"},
            },
            "if": {"properties": {"source": {"const": "lumi_project_info"}}},
            "then": {"required": ["path"]},
        },
        "default_environment": {"type": "string", "pattern": SLUG},
        "environments": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["slug", "title", "setup"],
                "properties": {
                    "slug": {"type": "string", "pattern": SLUG},
                    "title": {"type": "string"},
                    "setup": {"type": "array", "items": {"type": "string", "pattern": r"^[^\n]+$"}},
                    "container": {"type": "string", "pattern": r"^/[^\s]+$"},
                },
            },
        },
        "partitions": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": SLUG},
            "additionalProperties": PARTITION_SCHEMA,
        },
    },
}


class CatalogueError(ValueError):
    """The catalogue cannot be used; the message names file, key and reason."""


def _check_consistency(data: dict, path) -> None:
    if "timezone" in data:
        try:
            zoneinfo.ZoneInfo(data["timezone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CatalogueError(
                f"{path}: timezone: {data['timezone']!r} is not a time zone this host knows "
                "(an IANA name such as Europe/Helsinki)."
            ) from None
    slugs = [e["slug"] for e in data["environments"]]
    if len(set(slugs)) != len(slugs):
        raise CatalogueError(f"{path}: environments: slugs must be unique ({', '.join(slugs)}).")
    if data["default_environment"] not in slugs:
        raise CatalogueError(
            f"{path}: default_environment: {data['default_environment']!r} is not one of "
            f"the environments ({', '.join(slugs)})."
        )
    for index, environment in enumerate(data["environments"]):
        if environment.get("container") and (data["transport"] != "ssh" or not data.get("paths", {}).get("runtime")):
            raise CatalogueError(
                f"{path}: environments[{index}].container: a container environment needs a remote "
                "site (transport: ssh) with paths.runtime, where install-runtime makes its runtime "
                "inside the image."
            )
    for name, part in data["partitions"].items():
        key = f"partitions.{name}"
        if part["allocation"] == "shared" and part["gpus_per_node"] > 0:
            for needed in ("cpus_per_gpu", "memory_gb_per_gpu"):
                if needed not in part:
                    raise CatalogueError(f"{path}: {key}: a shared GPU partition needs {needed!r}.")
            if part["cpus_per_gpu"] * part["gpus_per_node"] > part["cores_per_node"]:
                raise CatalogueError(
                    f"{path}: {key}.cpus_per_gpu: {part['cpus_per_gpu']} x "
                    f"{part['gpus_per_node']} GPUs is more than cores_per_node."
                )
            if part["memory_gb_per_gpu"] * part["gpus_per_node"] > part["memory_gb_per_node"]:
                raise CatalogueError(
                    f"{path}: {key}.memory_gb_per_gpu: {part['memory_gb_per_gpu']} GB x "
                    f"{part['gpus_per_node']} GPUs is more than memory_gb_per_node."
                )
        if part["billing"]["kind"] == "lumi_shared" and part["allocation"] != "shared":
            raise CatalogueError(f"{path}: {key}.billing: lumi_shared billing is for shared partitions.")
    for name, preset in data.get("dask_presets", {}).items():
        if preset["partition"] not in data["partitions"]:
            raise CatalogueError(
                f"{path}: dask_presets.{name}.partition: {preset['partition']!r} is not one of "
                f"the partitions ({', '.join(data['partitions'])})."
            )


def _check_presets(site: "Site") -> None:
    """Each Dask preset must be a valid request on its own site (the spawn request rules)."""
    user = UserContext(accounts={site.name: (site.account_example,)})
    for preset in site.dask_presets.values():
        try:
            parse_job_request({**preset.options, "site": site.name}, {site.name: site}, user, site.name)
        except RequestError as e:
            raise CatalogueError(f"{site.path}: dask_presets.{preset.name}: {e}") from None


# Fields an earlier release's site files had: a file that keeps one is refused with what to do,
# rather than with the schema's "Additional properties are not allowed".
UNREAD = "an earlier release's field, which nothing read"
REMOVED_SITE_FIELDS = {"account_pattern": UNREAD}
REMOVED_PATHS_FIELDS = {
    "home": "each user's home is read from the site, their login's $HOME, at their first start there",
    "python": "each environment's runtime is made by the python3 its own setup lines give, which "
    "`aifa-workbench install-runtime` asks the site for",
}
REMOVED_PARTITION_FIELDS = {"gpu_request": UNREAD, "cpu_bind": UNREAD}


def _check_removed_fields(data: dict, path) -> None:
    def fields(section) -> dict:
        return section if isinstance(section, dict) else {}

    partitions = fields(data.get("partitions"))
    found = (
        [(field, why) for field, why in REMOVED_SITE_FIELDS.items() if field in data]
        + [(f"paths.{f}", why) for f, why in REMOVED_PATHS_FIELDS.items() if f in fields(data.get("paths"))]
        + [
            (f"partitions.{name}.{field}", why)
            for name, part in partitions.items()
            for field, why in REMOVED_PARTITION_FIELDS.items()
            if field in fields(part)
        ]
    )
    if found:
        field, why = found[0]
        raise CatalogueError(f"{path}: {field}: no longer used ({why}): delete the line.")


def site_from_dict(data, path) -> Site:
    if isinstance(data, dict):
        _check_removed_fields(data, path)
    check_schema(data, SITE_SCHEMA, path, CatalogueError)
    _check_consistency(data, path)
    stem = Path(str(path)).stem
    if stem != data["name"]:
        raise CatalogueError(f"{path}: name: {data['name']!r} must match the file name ({stem!r}).")
    environments = {
        e["slug"]: Environment(e["slug"], e["title"], tuple(e["setup"]), e.get("container"))
        for e in data["environments"]
    }
    partitions = {
        name: Partition(
            name=name, family=p.get("family", data["family"]), **{k: v for k, v in p.items() if k != "family"}
        )
        for name, p in data["partitions"].items()
    }
    presets = {
        name: DaskPreset(name, p["title"], {k: v for k, v in p.items() if k != "title"})
        for name, p in data.get("dask_presets", {}).items()
    }
    fields = {
        k: v
        for k, v in data.items()
        if k not in ("environments", "partitions", "dask_presets", "login", "paths", "reach")
    }
    login = Login(data["login"]["host"], data["login"].get("port", 22), tuple(data["login"]["host_keys"]))
    reach = Reach(**data["reach"]) if "reach" in data else None
    site = Site(
        **fields,
        login=login,
        paths=SitePaths(**data.get("paths", {})),
        reach=reach,
        environments=environments,
        partitions=partitions,
        dask_presets=presets,
        path=str(path),
    )
    _check_presets(site)
    return site


def load_site(path) -> Site:
    path = Path(path)
    return site_from_dict(load_yaml(path, CatalogueError), path)


def bundled_sites_dir() -> Path:
    """The site files shipped with the hub's configuration (data only: nothing is imported from there)."""
    return Path(str(resources.files("aifa_workbench.model").joinpath("sites")))


def load_catalogue(directory=None, enabled=None) -> dict[str, Site]:
    """Load every site file of `directory` (default: the bundled one), or only `enabled` ones."""
    directory = Path(directory) if directory else bundled_sites_dir()
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise CatalogueError(f"{directory}: no site files (*.yaml) found.")
    sites = {}
    for path in paths:
        if enabled is not None and path.stem not in enabled:
            continue
        site = load_site(path)
        sites[site.name] = site
    missing = set(enabled or ()) - set(sites)
    if missing:
        raise CatalogueError(f"{directory}: enabled site(s) {', '.join(sorted(missing))} have no file there.")
    return sites
