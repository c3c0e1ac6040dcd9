"""What is left of a project's allocation, and whether a request fits in it. Pure.

On Slurm sites the budget is the association's GrpTRESMins on the `billing` TRES: Slurm counts
billing-minutes (the partitions' TRESBillingWeights make `per_unit_hour` billing per hour of the
site's unit) used by ended jobs and held by running ones (GrpTRESRunMins). What is left is the
limit less both: with AccountingStorageEnforce=safe Slurm starts a job only if it fits, so the
hub refuses earlier, with a sentence."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    account: str
    unit: str  # the site's billing unit: GPU-hours, node-hours, …
    limit: float  # in units
    used: float
    running: float  # held by running jobs until they end

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.used - self.running)

    def text(self) -> str:
        return f"{_units(self.left)} of {_units(self.limit)} {self.unit} left in {self.account}"

    def to_dict(self) -> dict:
        return {
            "account": self.account,
            "unit": self.unit,
            "limit": round(self.limit, 2),
            "left": round(self.left, 2),
            "text": self.text(),
        }


def _units(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def budgets_from_slurm(minutes: dict[str, dict], per_unit_hour: float, unit: str) -> dict[str, Budget]:
    """parse_budgets' billing-minutes -> Budgets in the site's unit."""
    scale = 60.0 * per_unit_hour
    return {
        account: Budget(account, unit, m["limit"] / scale, m["used"] / scale, m["running"] / scale)
        for account, m in minutes.items()
    }


# LUMI's billing file keys per unit (lumi-allocations: billing.{cpu_hours,gpu_hours,storage_hours})
LUMI_KEYS = {"GPU-hours": "gpu_hours", "core-hours": "cpu_hours"}


def budget_from_lumi_file(text: str, account: str, unit: str) -> Budget | None:
    """/var/lib/project_info/users/<project>/<project>.json -> the project's allocation in `unit`
    (None when the file says nothing usable). Running jobs are not in it: LUMI updates it later."""
    import json

    try:
        data = json.loads(text)
        entry = data["billing"][LUMI_KEYS[unit]]
        alloc, used = float(entry["alloc"]), float(entry["used"])
    except (ValueError, KeyError, TypeError):
        return None
    if data.get("name", account) != account or not (0 <= alloc < 1e12 and 0 <= used < 1e12):
        return None
    return Budget(account, unit, alloc, used, 0.0)


def refusal(budget: Budget, cost: float) -> str | None:
    """The sentence that refuses a request costing `cost` units, or None when it fits."""
    if cost <= budget.left + 1e-9:
        return None
    return (
        f"Project {budget.account} has {_units(budget.left)} {budget.unit} left, and this session "
        f"would use up to {_units(round(cost, 2))} {budget.unit}. Ask for fewer GPUs or hours, choose "
        "another project, or ask your project's manager for more."
    )
