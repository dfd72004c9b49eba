"""The damon engine: DAMON watches every target pid and DAMOS acts on their regions (C
``etmemd_damon.c``).

Registered as the ``damon`` entry point of ``etmem.engines``; it works in ``scan_type=region``
projects.  Every pid of every task of the engine becomes one target of the ONE kdamond etmemd
creates (:func:`etmem_sdk.scan.open_damos`, shared with the ``damon`` tracker of slide and
cslide), each with the engine's scheme; the kernel then monitors and acts by itself.  A task's
pids (the main pid only, as in the original) are looked up at start and again every
:data:`REFRESH_S` seconds, so a target that appears later or is restarted is picked up.
``project stop`` and ``obj del`` of a started project free the targets; the last one out
removes the kdamond.  The plugin holds no state: the engine's settings live in
``engine.params``, each task's worker in ``task.params``, each target in ``task_pid.params``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from etmem_sdk import (
    ConfigSection,
    Engine,
    EngineError,
    Reply,
    Task,
    TaskPid,
    hookimpl,
    scan,
)
from etmem_sdk.targets import refresh_task_pids, release_task_pids
from etmem_sdk.worker import PeriodicWorker, Sleep

from .config import FIELD_KEYS, DamonConfig, parse_engine
from .show import format_showstats, target_doc

log = logging.getLogger(__name__)

#: Private commands (``etmem engine CMD -n PROJ -e damon [-t TASK]``).
COMMANDS = ("showstats",)
#: Seconds between looks for new or restarted targets.
REFRESH_S = 5.0


@dataclass
class DamonEngineParams:
    """``engine.params``: the validated settings and where DAMON and /proc are."""

    config: DamonConfig
    proc_root: str
    sys_root: str
    owner: str


@dataclass
class DamonTaskParams:
    """``task.params``: the refresh worker while started, and the last refusal seen."""

    worker: PeriodicWorker | None = None
    stopping: bool = False
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class DamonPidParams:
    """``task_pid.params``: the pid's target on the shared kdamond, and its figures as the
    refresh worker last read them (``showstats`` answers from these: reading DAMON's regions
    waits for an aggregation window, longer than a hook may take on a slow machine)."""

    target: Any
    doc: dict[str, Any] | None = None


def _engine(engine: Engine | None) -> DamonEngineParams:
    params = engine.params if engine is not None else None
    if not isinstance(params, DamonEngineParams):
        raise EngineError("damon: engine is not configured")
    return params


# -- configuration ------------------------------------------------------------------------------


@hookimpl
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Validate the engine keys and the project's monitoring attributes; refuse at once on a
    machine that can never run a vaddr kdamond (no DAMON sysfs, or no vaddr)."""
    defaults = scan.defaults()
    cfg = parse_engine(config, engine.project, defaults.sys_root, defaults.proc_root)
    why = scan.damon_refusal(defaults.proc_root, defaults.sys_root)
    if why is not None:
        raise EngineError(f"{config.label}: [engine] name=damon: cannot run here: {why}")
    project = engine.project
    owner = f"project {project.name}" if project is not None else "the damon engine"
    engine.params = DamonEngineParams(cfg, defaults.proc_root, defaults.sys_root, owner)


@hookimpl
def clear_eng_params(engine: Engine) -> None:
    """Drop ``engine.params``."""
    engine.params = None


@hookimpl
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """damon tasks have only the common keys."""
    task.params = DamonTaskParams()
    task.stats.clear()
    task.stats["running"] = False


@hookimpl
def clear_task_params(task: Task) -> None:
    """Stop the task if it still runs (``obj del`` of a started project), drop its params."""
    _stop(task)
    task.params = None


# -- start / stop -------------------------------------------------------------------------------


def _refresh(task: Task, proc_root: str) -> list[TaskPid]:
    return refresh_task_pids(task, recursive=False, proc_root=proc_root)


@hookimpl
def start_task(engine: Engine, task: Task) -> None:
    """Add a kdamond target for the task's pid and start looking for new ones.

    Fails with the reason when the target exists but DAMON cannot take it (someone else's
    kdamond, other monitoring attributes in use, a knob the kernel lacks).  A target that does
    not exist yet is not an error: it is looked for every :data:`REFRESH_S` seconds.
    """
    params: DamonTaskParams = task.params
    if params.worker is not None and params.worker.running:
        return
    eng = _engine(engine)
    why = scan.damon_refusal(eng.proc_root, eng.sys_root)
    if why is not None:
        raise EngineError(f"task {task.name}: damon cannot run here: {why}")
    params.stopping = False
    params.last_error = ""
    _refresh(task, eng.proc_root)
    if not task.pids and params.last_error:
        error = params.last_error
        release_task_pids(task)
        raise EngineError(f"task {task.name}: {error}")

    project = task.project
    worker = PeriodicWorker(
        task,
        _record_stats,
        interval=REFRESH_S,
        refresh=lambda t: _refresh(t, eng.proc_root),
        active=lambda: project is not None and project.start,
        name=f"damon-{project.name if project else '?'}-{task.name}",
    )
    try:
        worker.start()
    except BaseException:
        release_task_pids(task)
        raise
    params.worker = worker
    task.stats["running"] = True
    log.info(
        "damon: task %s started: %d target(s), action %s",
        task.name,
        len(task.pids),
        eng.config.scheme.action,
    )


def _record_stats(tp: TaskPid, sleep: Sleep) -> None:
    """The refresh worker's step: every :data:`REFRESH_S` seconds, with the pid list."""
    params = tp.params
    if isinstance(params, DamonPidParams):
        _read_figures(tp, params)


def _read_figures(tp: TaskPid, params: DamonPidParams) -> dict[str, Any]:
    """Read the pid's regions and DAMOS statistics into its params (for ``showstats``) and
    ``tp.stats`` (``project show --json``, ``showstats --json``); return the new document."""
    params.doc = doc = target_doc(params.target)
    tp.stats.clear()
    tp.stats.update({k: v for k, v in doc.items() if k not in ("regions", "kdamond")})
    return doc


@hookimpl
def stop_task(engine: Engine, task: Task) -> None:
    """Stop looking for targets and free every target (the last one removes the kdamond)."""
    _stop(task)


def _stop(task: Task) -> None:
    params = task.params
    if not isinstance(params, DamonTaskParams):
        return
    with params.lock:
        params.stopping = True
        worker, params.worker = params.worker, None
    if worker is not None and not worker.stop(timeout=1.0):
        log.warning("damon: task %s: the refresh is still running after stop", task.name)
    release_task_pids(task)
    task.stats["running"] = False


# -- pids -----------------------------------------------------------------------------------------


@hookimpl
def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Make the pid a target of the shared kdamond with the engine's scheme."""
    task = task_pid.task
    params = task.params if task is not None else None
    if not isinstance(params, DamonTaskParams) or params.stopping:
        raise EngineError(f"pid {task_pid.pid}: its task is not running")
    eng = _engine(engine)
    try:
        target = scan.open_damos(
            task_pid.pid,
            eng.config.scheme,
            attrs=eng.config.attrs,
            owner=eng.owner,
            proc_root=eng.proc_root,
            sys_root=eng.sys_root,
        )
    except scan.DamosUnsupported as exc:
        params.last_error = f"[engine] {FIELD_KEYS[exc.field]}: {exc}"
        raise EngineError(params.last_error) from exc
    except scan.TrackerUnavailable as exc:
        params.last_error = str(exc)
        raise EngineError(params.last_error) from exc
    task_pid.params = DamonPidParams(target)
    log.info("damon: pid %d is target slot %d", task_pid.pid, target.slot)


@hookimpl
def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Free the pid's target (a pid that left the task, or the task stopped)."""
    params, task_pid.params = task_pid.params, None
    if isinstance(params, DamonPidParams):
        params.target.close()


# -- private commands ---------------------------------------------------------------------------


@hookimpl
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """``showstats``: per target its regions (access counts, ages) and the scheme's tried and
    applied bytes, from DAMON's own files (all tasks of the engine without ``-t``)."""
    if cmd not in COMMANDS:
        raise EngineError(f"damon: unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    eng = _engine(engine)
    tasks = [task] if task is not None else list(engine.tasks)
    rows: list[tuple[Task, TaskPid, dict[str, Any]]] = []
    for t in tasks:
        for tp in list(t.pids):
            params = tp.params
            if isinstance(params, DamonPidParams):
                # not refreshed yet: read it now
                doc = params.doc if params.doc is not None else _read_figures(tp, params)
                rows.append((t, tp, doc))
    reply.write(format_showstats(eng.config, tasks, rows))
