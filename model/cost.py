"""What a job costs, in the site's own billing unit: one rule per partition (`cost_rule`), the one
the hub checks budgets with, the job panel counts with, and the spawn form shows as the user types
(the form is sent each partition's rule and evaluates it: no second copy of the billing kinds)."""

from __future__ import annotations

import math

from aifa_workbench.model.site import Partition, Site

# The unit each billing rule counts in: one place for the form, the job panel and the README.
_UNITS = {
    "node_hours": "node-hours",
    "gpu_hours": "GPU-hours",
    "core_hours": "core-hours",
    "lumi_shared": "GPU-hours",
    "lucia_bu": "billing-unit hours",
}


def cost_unit(partition: Partition) -> str:
    return partition.billing.get("unit") or _UNITS[partition.billing["kind"]]


def cost_hint(site: "Site", partition: Partition) -> str:
    """A sentence for a rule a newcomer would not guess (empty where the unit says it all)."""
    billing = partition.billing
    if billing["kind"] == "lumi_shared":
        return (
            f"{site.title.split(' (')[0]} counts whole GPUs: one {site.gpu_label} is {billing['factor']:g} "
            f"GPU-hour per hour, and asking for more than {billing['cores_per_unit']} cores or "
            f"{billing['memory_gb_per_unit']} GB per {site.gpu_label} counts as more {site.gpu_label}s."
        )
    if billing["kind"] == "node_hours" and cost_unit(partition) != "node-hours":
        return (
            f"Whole nodes are charged by the node-hour, whatever of the node you use: one node-hour is "
            f"{billing['per_node_hour']:g} {cost_unit(partition)}."
        )
    if billing["kind"] == "node_hours":
        return "Whole nodes are charged by the node-hour, whatever of the node you use."
    if billing["kind"] == "lucia_bu":
        return "Billing units: the largest share of the node you ask for (cores, memory or GPUs), in cores."
    return ""


def cost_rule(partition: Partition) -> dict:
    """The partition's price as data: per hour, `factor` times the largest of `terms`, each
    quantity (gpus, cpus, memory_gb) times `times` over `per`, rounded up where `whole` (no terms:
    1, a whole node). JSON-ready for the form."""
    billing = partition.billing
    kind = billing["kind"]

    def term(quantity, times=1, per=1, whole=False):
        return {"of": quantity, "times": times, "per": per, "whole": whole}

    if kind == "node_hours":
        return {"factor": billing["per_node_hour"], "terms": []}
    if kind == "gpu_hours":
        return {"factor": billing["factor"], "terms": [term("gpus")]}
    if kind == "core_hours":
        return {"factor": billing["factor"], "terms": [term("cpus")]}
    if kind == "lucia_bu":  # Lucia's accounting page: the largest share of the node asked for, in cores
        cores = partition.cores_per_node
        terms = [term("cpus"), term("memory_gb", cores, partition.memory_gb_per_node)]
        if partition.gpus_per_node:
            terms.append(term("gpus", cores, partition.gpus_per_node))
        return {"factor": billing["weight"], "terms": terms}
    return {
        "factor": billing["factor"],
        "terms": [  # lumi_shared: whole GPUs, cores and memory count as GPUs
            term("gpus"),
            term("cpus", per=billing["cores_per_unit"], whole=True),
            term("memory_gb", per=billing["memory_gb_per_unit"], whole=True),
        ],
    }


def rule_cost(rule: dict, asked: dict, hours: float) -> float:
    """`rule` (cost_rule) applied to `asked` ({gpus, cpus, memory_gb}) for `hours`."""

    def value(term):
        amount = asked[term["of"]] * term["times"] / term["per"]
        return math.ceil(amount) if term["whole"] else amount

    units = max((value(t) for t in rule["terms"]), default=1)
    return rule["factor"] * units * hours


def estimate_cost(partition: Partition, gpus: int, cpus: int, memory_gb: int, hours: float) -> float:
    """What a job costs in the site's billing unit (GPU-hours, node-hours, core-hours)."""
    return rule_cost(cost_rule(partition), {"gpus": gpus, "cpus": cpus, "memory_gb": memory_gb}, hours)
