"""`aifa-workbench install-runtime` per simulated site and environment (issue 23): the time and
size of a first install (the environment's base of pinned dependencies, made for the
interpreter the site reports, and the layer of this hub's own code) against a new release over
an existing base (the layer alone), in the same run. The wheels stay uploaded between the two:
both figures are the site's side (venv, pip, byte-compiling), not the upload.

    make bench-runtime        # or: python -m benchmarks.bench_runtime [--site jupiter]

Needs the simulated sites (make sites); run as root. It removes and remakes each environment's
runtime on the simulated sites: nobody's session should be running there. JUPITER's is emulated
aarch64 (qemu): reported as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aifa_workbench.model.catalogue import load_catalogue  # noqa: E402
from tests.integration.sim_sites import SITES_ROOT, in_site, site_runtime, sites_cli  # noqa: E402

INSTALLED = re.compile(r": (?P<env>[a-z0-9-]+): runtime .* installed \((?P<mib>\d+) MiB, (?P<s>\d+) s\)$")


def install_runtime(site: str, environment: str) -> tuple[int, int]:
    """(MiB, seconds) as install-runtime reports them for one environment."""
    result = sites_cli("install-runtime", site, environment)
    out = result.stdout
    if result.returncode != 0:
        raise RuntimeError(f"install-runtime {site} {environment} failed: {(out + result.stderr)[-500:]}")
    for line in out.splitlines():
        found = INSTALLED.search(line)
        if found and found["env"] == environment:
            return int(found["mib"]), int(found["s"])
    raise RuntimeError(f"install-runtime {site} {environment} said: {out[-500:]}")


def forget(site: str, environment: str, keep_base: bool) -> None:
    """Remove the environment's runtime on the site (its layers only, when keep_base)."""
    env_dir = f"{site_runtime(site)}/envs/{environment}"
    pattern = f"{env_dir}/current {env_dir}/[!b]*" if keep_base else env_dir
    in_site(site, ["bash", "-c", f"rm -rf {pattern}"], check=True, timeout=600)


def main(sites: list[str]) -> None:
    rows = []
    for site in sites:
        for environment in load_catalogue(SITES_ROOT / "catalogue", [site])[site].environments:
            forget(site, environment, keep_base=False)
            first = install_runtime(site, environment)
            forget(site, environment, keep_base=True)
            layer = install_runtime(site, environment)
            rows.append((f"{site}/{environment}", first, layer))
            print(f"  {site}/{environment}: first {first[1]} s ({first[0]} MiB), layer alone {layer[1]} s", flush=True)
    print("install-runtime, N=1 each: first install (base + layer) against a new release (layer alone):")
    print(f"  {'site/environment':<28} {'first':>8} {'size':>9} {'layer':>8} {'ratio':>7}")
    for where, (mib, seconds), (_, layer_seconds) in rows:
        ratio = seconds / max(layer_seconds, 1)
        print(f"  {where:<28} {seconds:>6} s {mib:>5} MiB {layer_seconds:>6} s {ratio:>6.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", action="append", choices=("lumi", "jupiter", "lucia"))
    args = parser.parse_args()
    main(args.site or ["lumi", "lucia", "jupiter"])
