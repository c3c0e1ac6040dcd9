"""The job panel: an ipywidgets view of the notebook's own job (`workbench.job_panel()`)."""

from __future__ import annotations

import html

from .job_context import WorkbenchError, current_status


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def panel_rows(status: dict) -> list[tuple[str, str]]:
    """(label, value) rows for a status from `job_context.job_status` (pure)."""
    gpus = f"{status['gpus']} {status['gpu_label']}{'s' if status['gpus'] != 1 else ''}" if status["gpus"] else "none"
    cost = "unknown"
    if status.get("cost_so_far") is not None:
        cost = f"{status['cost_so_far']:.2f} {status['cost_unit']} so far ({status['cost_per_hour']:g} per hour)"
    return [
        ("Site", status["site_title"]),
        ("Partition", f"{status['partition']} — {status['partition_title']}"),
        ("Node", status["node"] or "unknown"),
        ("Job", status["job_id"]),
        ("Project (account)", status["account"]),
        *([("Reservation", status["reservation"])] if status.get("reservation") else []),
        ("GPUs", gpus),
        ("CPU cores, memory", f"{status['cpus']} cores, {status['memory_gb']:g} GB"),
        ("Time left", format_duration(status["seconds_left"])),
        ("Estimated cost", cost),
        *([("Project budget", status["budget"])] if status.get("budget") else []),
    ]


def render_html(status: dict) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in panel_rows(status)
    )
    return f"<table>{rows}</table>"


def job_panel():
    """Show this notebook's job: site, partition, node, GPUs, account, time left, cost so far."""
    import ipywidgets as widgets

    view = widgets.HTML()
    refresh = widgets.Button(description="Refresh", icon="refresh", tooltip="Ask Slurm again")

    def update(_=None):
        try:
            view.value = render_html(current_status())
        except WorkbenchError as e:
            view.value = f"<p>{html.escape(str(e))}</p>"

    refresh.on_click(update)
    update()
    return widgets.VBox([widgets.HTML("<b>Your workbench job</b>"), view, refresh])
