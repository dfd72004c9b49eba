"""``etmem engine showstats`` for damon: the kdamond, then per target its scheme's statistics
and its regions, all read from DAMON's sysfs files at the moment of asking."""

from __future__ import annotations

from typing import Any

from etmem_sdk import Task, TaskPid, scan

from .config import DamonConfig


def target_doc(target: Any) -> dict[str, Any]:
    """One target's figures: ``slot``, the scheme's ``nr_tried`` ``sz_tried`` ``nr_applied``
    ``sz_applied`` ``qt_exceeds``, and ``regions`` (start, end, nr_accesses, age); a reading
    that failed is reported under ``error``."""
    doc: dict[str, Any] = {"slot": target.slot}
    try:
        doc["kdamond"] = target.kdamond()
        doc.update(target.stats())
        doc["regions"] = [tuple(int(x) for x in row) for row in target.regions()]
    except scan.ScanError as exc:
        doc["error"] = str(exc)
        doc.setdefault("regions", [])
    return doc


def _kib(n: int) -> str:
    return f"{n // 1024} KiB"


def format_showstats(
    cfg: DamonConfig, tasks: list[Task], rows: list[tuple[Task, TaskPid, dict[str, Any]]]
) -> str:
    """The text reply: a header with the scheme, one block per target."""
    s = cfg.scheme
    out = [
        f"damon scheme: action {s.action}, size {s.sz[0]}..{s.sz[1]} bytes, "
        f"nr_accesses {s.nr_accesses[0]}..{s.nr_accesses[1]}, age {s.age[0]}..{s.age[1]}",
        "monitoring: " + ", ".join(f"{k} {v}" for k, v in cfg.attrs.items()),
    ]
    if rows:
        kd = rows[0][2].get("kdamond") or {}
        if kd.get("kdamond_pid") is not None:
            out.append(
                f"kdamond: thread {kd['kdamond_pid']}, {kd['targets']} target(s) in all, "
                f"monitoring attributes set by {kd['attrs_owner']}"
            )
    else:
        out.append("no target" if tasks else "no task")
    for task, tp, doc in rows:
        out.append(f"task {task.name} pid {tp.pid} (target {doc['slot']}):")
        if "error" in doc:
            out.append(f"  error: {doc['error']}")
        if "sz_tried" in doc:
            out.append(
                f"  tried {doc['nr_tried']} regions {_kib(doc['sz_tried'])}, applied "
                f"{doc['nr_applied']} regions {_kib(doc['sz_applied'])}, quota exceeded "
                f"{doc['qt_exceeds']} times"
            )
        out.append(f"  {'start':>18} {'end':>18} {'size':>12} {'nr_accesses':>11} {'age':>8}")
        for start, end, acc, age in doc["regions"]:
            out.append(f"  {start:#18x} {end:#18x} {_kib(end - start):>12} {acc:>11} {age:>8}")
    return "\n".join(out) + "\n"
