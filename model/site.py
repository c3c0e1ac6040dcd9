"""A site as the workbench knows it: its partitions, environments, login, paths and reach (read
from its catalogue file by model.catalogue; used by the request rules, the spawner and the job)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Environment:
    slug: str
    title: str
    setup: tuple[str, ...]
    container: str | None = None


@dataclass(frozen=True)
class Partition:
    name: str
    title: str
    family: str
    gpu_model: str
    gpus_per_node: int
    cores_per_node: int
    memory_gb_per_node: int
    max_hours: int
    allocation: str
    billing: dict
    cpus_per_gpu: int | None = None
    memory_gb_per_gpu: int | None = None
    default_cpus: int = 1
    default_memory_gb: int = 2
    purpose: str = ""

    @property
    def whole_node(self) -> bool:
        return self.allocation == "whole_node"

    @property
    def has_gpus(self) -> bool:
        return self.gpus_per_node > 0


@dataclass(frozen=True)
class Login:
    host: str
    port: int = 22
    host_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SitePaths:
    runtime: str | None = None  # where install-runtime puts the job's software on the site
    slurm_bin: str = "/usr/bin"
    project: str | None = None  # the project's shared folder ({account}: the job's), where the site has one
    scratch: str | None = None  # the project's scratch, likewise


@dataclass(frozen=True)
class Reach:
    mode: str
    hub_url: str = ""  # direct, reverse: how the job reaches the hub, {hub_port} filled in by the hub
    gateway: str = ""  # reverse: the tunnel gateway's host as the site's nodes reach it
    hub_forward_host: str = ""  # forward: the login node as the site's nodes reach it

    def hub_hosts(self, hub_port: int) -> set[str]:
        """The Host headers of the jobs' calls to the hub ("name:*": any port there)."""
        if self.mode == "forward":
            return {f"{self.hub_forward_host.lower()}:*"}
        return {urlsplit(self.hub_base(hub_port)).netloc}

    def hub_base(self, hub_port: int) -> str:
        return self.hub_url.replace("{hub_port}", str(hub_port)).rstrip("/")


@dataclass(frozen=True)
class DaskPreset:
    """Dask workers of one shape: the same fields as a spawn request (validated the same way)."""

    name: str
    title: str
    options: dict


@dataclass(frozen=True)
class Site:
    name: str
    title: str
    family: str
    login: "Login"
    transport: str
    account_example: str
    accounts_from: str
    reservations_allowed: bool
    dask_interface: str
    gpu_label: str
    billing_unit: str
    default_environment: str
    environments: dict[str, Environment]
    partitions: dict[str, Partition]
    dask_presets: dict[str, DaskPreset] = field(default_factory=dict)
    dask_local_directory: str = "/tmp"  # parent of each Dask worker job's own fresh 0700 scratch (mktemp)
    paths: "SitePaths" = field(default_factory=lambda: SitePaths())
    reach: "Reach | None" = None  # how the hub and the job reach each other (remote sites)
    key_instructions: str = "Give this public key to the site as its documentation says."
    key_from_clause: bool = False  # the site wants from="<the hub's addresses>" before the key
    timezone: str | None = None  # of the times Slurm prints there; None: the hub host's
    budget: dict | None = None  # where projects' remaining allocations are read (None: nowhere)
    path: str = ""

    @property
    def container_environments(self) -> tuple[Environment, ...]:
        """The environments whose JupyterLab runs inside a container image (a runtime of its own)."""
        return tuple(e for e in self.environments.values() if e.container)
