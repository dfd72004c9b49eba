"""``etmem sysinfo [--json]``: which page trackers and actuators work on this machine, and why
the others do not — the capability probe of :mod:`etmem_scan.probe`, for people."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from etmem_sdk import EngineError, scan
from etmem_sdk.scan import GRANULARITY, MAPPING_ONLY, Capabilities, NothingUsable

NAME = "sysinfo"


def _fact(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def format_text(caps: Capabilities) -> str:
    """The verdicts as aligned text: one line per tracker/actuator, then facts and defaults."""
    lines: list[str] = []
    for title, table in (("trackers", caps.trackers), ("actuators", caps.actuators)):
        lines.append(f"{title}:" if title == "actuators" else "trackers (most precise first):")
        width = max(len(k) for k in table)
        for name, v in table.items():
            text = v.note if v.usable else v.reason
            if title == "trackers":
                text = f"{GRANULARITY.get(name, '?'):<7}  {text}"
            lines.append(f"  {name:<{width}}  {'yes' if v.usable else 'no ':<3}  {text}".rstrip())
    lines.append("facts:")
    facts: dict[str, Any] = dict(caps.facts)
    if "swap_total_kb" in facts:
        facts["swap_total_kb"] = f"{facts['swap_total_kb']} kB"
        facts["swap_free_kb"] = f"{facts.get('swap_free_kb', 0)} kB"
    # lists of ids, not counts: say so ("numa_nodes 0" read as "no node")
    if isinstance(facts.get("numa_nodes"), list):
        nodes = facts["numa_nodes"]
        facts["numa_nodes"] = (", ".join(f"node {n}" for n in nodes) or "none") + (
            f" ({len(nodes)} in all)" if len(nodes) > 1 else ""
        )
    if isinstance(facts.get("damon_running"), list):
        running = facts["damon_running"]
        facts["damon_running"] = ", ".join(f"kdamond {k} running" for k in running) or "none"
    width = max(len(k) for k in facts)
    for k, fact in facts.items():
        lines.append(f"  {k:<{width}}  {_fact(fact)}")
    lines.append("defaults:")
    chosen = {}
    for label, pick in (
        ("tracker", lambda: scan.choose_tracker(caps=caps)),
        ("migrate_tracker", lambda: scan.choose_tracker(purpose="migrate", caps=caps)),
        (
            "hugetlb_tracker",
            lambda: scan.choose_tracker(purpose="migrate", memory="hugetlb", caps=caps),
        ),
        ("swap", lambda: scan.choose_actuator(purpose="swap", caps=caps)),
        ("migrate", lambda: scan.choose_actuator(purpose="migrate", caps=caps)),
    ):
        try:
            chosen[label] = pick()
            lines.append(f"  {label:<16} {chosen[label]}")
        except NothingUsable:
            lines.append(f"  {label:<16} none usable")
        except EngineError as e:  # etmemd.toml names one that does not work here
            lines.append(f"  {label:<16} none usable ({e})")
    if chosen.get("tracker") == "refs":
        lines.append(f"note: the default tracker is refs: {MAPPING_ONLY}")
    return "\n".join(lines) + "\n"


def sysinfo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdicts as one JSON object.")
    ] = False,
    proc_root: Annotated[
        str, typer.Option("--proc-root", hidden=True, help="Read /proc from here (tests).")
    ] = "/proc",
    sys_root: Annotated[
        str, typer.Option("--sys-root", hidden=True, help="Read /sys from here (tests).")
    ] = "/sys",
) -> None:
    """Show which page trackers and actuators work on this machine, and why the others do not.

    Nothing is changed on the machine: the probe only reads /proc and /sys.
    """
    caps = scan.capabilities(proc_root, sys_root)
    if as_json:
        doc = caps.to_json()
        doc["notes"] = [MAPPING_ONLY] if doc["defaults"].get("tracker") == "refs" else []
        typer.echo(json.dumps(doc, indent=2, sort_keys=False))
    else:
        typer.echo(format_text(caps), nl=False)


def register(parent: typer.Typer) -> None:
    """Add ``sysinfo`` as a top-level command of the ``etmem`` app."""
    parent.command(NAME)(sysinfo)


app = typer.Typer(name=NAME, add_completion=False)
app.command()(sysinfo)
