"""What ``etmem project show`` prints: the original's table (text) and the ``--json`` document.

Pure rendering of the objects the store (:mod:`.lifecycle`) hands over under its lock. Engines
own ``stats`` and may have overwritten a task's fields with anything, so every value is made
printable here and one bad value costs only itself, never the whole reply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from etmem_sdk import ENGINE_OPS, Engine, Project, Task

log = logging.getLogger(__name__)

_SHOW_HEADER = "{:<8s} {:<8s} {:<16s} {:<16s} {:<16s} {:<8s}\n".format(
    "number", "type", "value", "name", "engine", "started"
)


def show_text(projects: Sequence[Project], name: str | None) -> Iterator[str]:
    """The ``project show`` table of ``projects`` (those ``name`` chose, None for all), one
    piece per project, byte for byte as the C daemon prints it; its message if there is none."""
    if not projects:
        yield (
            "no project exists\n\n"
            if name is None
            else f"project: project {name} is not existed\n\n"
        )
    for project in projects:
        started = "true" if project.start else "false"
        lines = [f"project: {project.name}\n", _SHOW_HEADER]
        for engine in project.engines:
            for number, task in enumerate(engine.tasks, 1):
                # _text: an engine may have overwritten these with anything
                lines.append(
                    f"{number:<8d} {_text(task.type):<8s} {_text(task.value):<16s} "
                    f"{_text(task.name):<16s} {_text(engine.name):<16s} {started:<8s}\n"
                )
        yield "".join(lines)


#: Nesting kept in ``--json`` stats; deeper (or self-containing) values are cut off.
_STATS_DEPTH = 16


def _stats(obj: Any) -> dict[str, Any]:
    """``obj.stats`` as plain JSON values. Engines own their stats, so whatever they put there
    -- not a mapping, a cycle, NaN, an object whose ``str()`` raises -- must cost only that
    object's stats, never the whole ``project show --json`` for every project."""
    stats = getattr(obj, "stats", None)
    if not stats:
        return {}
    try:
        return {_text(k): _plain(v, 1) for k, v in dict(stats).items()}
    except Exception as exc:
        log.warning("%s: stats cannot be shown: %s", getattr(obj, "name", obj), exc)
        return {"unreadable": f"{type(stats).__name__}: {type(exc).__name__}"}


def _plain(value: Any, depth: int = 0) -> Any:
    """Engines may keep numpy numbers or arrays in ``stats``; JSON needs plain values."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN or infinity
    if depth >= _STATS_DEPTH:
        return "..."
    # Worker threads update stats while this walks them: iterate a copy (taken in one C call),
    # never the live container, or a concurrent insert fails the whole request.
    if isinstance(value, dict):
        return {_text(k): _plain(v, depth + 1) for k, v in dict(value).items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in list(value)]
    for convert in ("tolist", "item"):  # numpy arrays / scalars
        method = getattr(value, convert, None)
        if callable(method):
            try:
                return _plain(method(), depth + 1)
            except (TypeError, ValueError):
                pass
    return _text(value)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def project_doc(project: Project) -> dict[str, Any]:
    """The ``project show --json`` document of one project."""
    return {
        "name": project.name,
        "scan_type": project.scan_type,
        "started": project.start,
        "loop": project.loop,
        "interval": project.interval,
        "sleep": project.sleep,
        "sysmem_threshold": project.sysmem_threshold,
        "swapcache_high_wmark": project.swapcache_high_wmark,
        "swapcache_low_wmark": project.swapcache_low_wmark,
        "region": dict(project.region),
        "engines": [_engine_doc(e) for e in project.engines],
    }


def _engine_doc(engine: Engine) -> dict[str, Any]:
    return {
        "name": engine.name,
        "kind": engine.kind,
        "ops": [op for op in ENGINE_OPS if op in engine.implements],
        "stats": _stats(engine),
        "tasks": [_task_doc(t) for t in engine.tasks],
    }


def _task_doc(task: Task) -> dict[str, Any]:
    # _plain: the engine has the task in its hands and may have overwritten any of these
    return {
        "name": _plain(task.name),
        "type": _plain(task.type),
        "value": _plain(task.value),
        "max_threads": _plain(task.max_threads),
        "swap_flag": _plain(task.swap_flag),
        "pids": _pids_doc(task),
        "stats": _stats(task),
    }


def _pids_doc(task: Task) -> list[dict[str, Any]]:
    try:
        pids = list(task.pids)
    except TypeError:  # not a list any more
        return []
    return [{"pid": _plain(getattr(tp, "pid", None)), "stats": _stats(tp)} for tp in pids]
