"""The slide engine: swap out a process's cold pages (C ``etmemd_slide.c``).

Registered as the ``slide`` entry point of ``etmem.engines``. The plugin module holds no state
about projects: the engine's roots live in ``engine.params``, each task's settings, mechanism and
worker in ``task.params``, per-pid data in ``task_pid.params``. The only process-wide state is the
one-scanner-per-pid registry in :mod:`etmem_slide.claims` (see there why).

Per task, a :class:`etmem_sdk.worker.PeriodicWorker` runs every project ``interval`` seconds: it
refreshes the target pids (main pid and direct children) and runs
:func:`etmem_slide.cycle.run_cycle`
for each on up to ``max_threads`` threads.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from etmem_sdk import (
    PAGE_SCAN,
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    Reply,
    TargetGone,
    Task,
    TaskPid,
    hookimpl,
    scan,
)
from etmem_sdk import cgroup as cg
from etmem_sdk import params as P
from etmem_sdk.scan import Capabilities
from etmem_sdk.targets import refresh_task_pids
from etmem_sdk.worker import PeriodicWorker, Sleep

from . import claims, mechanism
from .config import TASK_KEYS, SlideTaskConfig, check_tracker_here, parse_task_config
from .cycle import CycleSettings, run_cycle
from .guard import PressureGuard
from .stats import StatsKeeper, format_showstats, new_stats

log = logging.getLogger(__name__)

#: Private commands (``etmem engine CMD -n PROJ -e slide [-t TASK]``).
COMMANDS = ("showstats",)

#: A task's stats from fill_task_params to its start, built once: its values are immutable,
#: and new_stats() for each of 40,000 tasks cost more than copying this.
_FRESH_STATS: dict[str, object] = {**new_stats(), "running": False}
#: Distinct task configs one engine remembers; past that it starts afresh.
_MAX_CONFIGS = 1024
_TASK_KEY_SET = frozenset(TASK_KEYS)


def _default_proc_root() -> str:
    return scan.defaults().proc_root


def _default_sys_root() -> str:
    return scan.defaults().sys_root


@dataclass
class SlideEngineParams:
    """``engine.params``: where the engine reads /proc and /sys -- the SDK's scan defaults
    when the engine is made (the ``etmem_fake_proc`` fixture points them at a fake tree)."""

    proc_root: str = field(default_factory=_default_proc_root)
    sys_root: str = field(default_factory=_default_sys_root)
    #: Test hook: a fixed capability table instead of probing the machine.
    caps: Capabilities | None = None
    #: validated task configs by (loop, the TASK_KEYS the task sets): a 40,000-task file
    #: repeats a few, and validating each anew was most of its fill_task_params
    configs: dict[tuple[Any, ...], SlideTaskConfig] = field(default_factory=dict, repr=False)


@dataclass
class SlideTaskParams:
    """``task.params``: the validated keys, and while started the mechanism and the worker."""

    config: SlideTaskConfig
    mechanism: mechanism.Mechanism | None = None
    worker: PeriodicWorker | None = None
    stats: StatsKeeper | None = None
    #: the pressure guard, while started with ``pressure_limit`` set
    guard: PressureGuard | None = None
    #: pids refused by ``alloc_pid_params`` because another task scans them: (pid, owner).
    conflicts: list[tuple[int, Task]] = field(default_factory=list)
    #: set by stop_task: a refresh still running in the worker must not claim pids again.
    stopping: bool = False


@dataclass
class SlidePidParams:
    """``task_pid.params``: the pid's tracker, open for as long as the pid is a target of the
    task (trackers with state need that: ``probe``'s per-page verdicts, a DAMON target)."""

    cycles: int = 0
    tracker: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: set once the pid left the task: a cycle still running must not open a tracker again
    closed: bool = False

    def close_tracker(self, pid: int, *, final: bool = False) -> None:
        """Close the tracker, if one is open (``final``: for good); errors are logged."""
        with self.lock:
            tracker, self.tracker = self.tracker, None
            self.closed = self.closed or final
        if tracker is not None:
            try:
                tracker.close()
            except Exception:
                log.exception("slide: closing the tracker of pid %d failed", pid)


def _engine_params(engine: Engine | None) -> SlideEngineParams:
    params = engine.params if engine is not None else None
    return params if isinstance(params, SlideEngineParams) else SlideEngineParams()


# -- configuration ------------------------------------------------------------------------------


@hookimpl
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """slide has no engine keys; it only works in a ``scan_type=page`` project."""
    project = engine.project
    if project is not None and project.scan_type != PAGE_SCAN:
        raise ConfigError(
            f"{config.label}: [engine] name=slide: needs a project with scan_type=page, "
            f"project {project.name} has scan_type={project.scan_type}"
        )
    engine.params = SlideEngineParams()


@hookimpl
def clear_eng_params(engine: Engine) -> None:
    """Drop ``engine.params``."""
    engine.params = None


@hookimpl
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Validate ``T``, ``swap_threshold``, ``dram_percent``, ``tracker``, ``actuator``."""
    eng = _engine_params(task.engine)
    project = task.project
    # the slide keys the task sets (mostly T alone), as a set: cheaper than a get() for each
    mine = frozenset([(k, config[k]) for k in _TASK_KEY_SET.intersection(config)])
    key = (project.loop if project is not None else None, mine)
    cfg = eng.configs.get(key)
    if cfg is None:
        cfg = parse_task_config(config, project)
        # not one whose dram_percent was warned about: each such task logs its own warning
        if "dram_percent" not in config or cfg.dram_percent:
            if len(eng.configs) >= _MAX_CONFIGS:
                eng.configs.clear()
            eng.configs[key] = cfg
    # these two depend on the machine, not only on the keys: checked for every task
    if cfg.tracker is not None:
        caps = eng.caps or scan.capabilities(eng.proc_root, eng.sys_root)
        check_tracker_here(config, cfg, caps)
    if cfg.pressure_limit is not None:
        psi = cg.system_pressure_path(eng.proc_root)
        if not os.path.isfile(psi):
            raise P.error(config, "pressure_limit", f"needs PSI, and {psi} does not exist")
    task.params = SlideTaskParams(config=cfg)
    task.stats.clear()
    task.stats.update(_FRESH_STATS)


@hookimpl
def clear_task_params(task: Task) -> None:
    """Stop the task if it still runs, then drop ``task.params``."""
    _stop(task)
    task.params = None


# -- start / stop -------------------------------------------------------------------------------


@hookimpl
def start_task(engine: Engine, task: Task) -> None:
    """Pick the mechanism, claim the target pids, start the periodic worker.

    Fails when no tracker/actuator works here, or when another task already scans a target pid.
    A target that does not exist yet is not an error (it is looked for every cycle, as in C).
    """
    params: SlideTaskParams = task.params
    if params.worker is not None and params.worker.running:
        return
    project = task.project
    if project is None or project.loop is None or project.interval is None or project.sleep is None:
        raise EngineError(
            f"task {task.name}: slide needs a page-scan project (loop/interval/sleep)"
        )
    eng = _engine_params(engine)
    mech = mechanism.resolve(
        params.config,
        swap_flag=task.swap_flag,
        proc_root=eng.proc_root,
        sys_root=eng.sys_root,
        caps=eng.caps,
    )
    params.mechanism = mech
    if mech.swapcache is None and project.swapcache_high_wmark != -1:
        log.warning(
            "slide: task %s: swapcache watermarks need the swap_pages actuator; with %s "
            "there is no kernel swapcache reclaim to steer, so they are ignored",
            task.name,
            mech.actuator,
        )
    params.stats = StatsKeeper(task)
    cfg = params.config
    params.guard = None
    task.stats["pressure_guard"] = ""
    if cfg.pressure_limit is not None:
        params.guard = PressureGuard(
            cfg.pressure_limit,
            cfg.pressure_window,
            cfg.pressure_scope,
            task_name=task.name,
            sys_root=eng.sys_root,
            proc_root=eng.proc_root,
        )
        task.stats["pressure_guard"] = params.guard.describe()
    task.stats["tracker"] = mech.tracker
    task.stats["actuator"] = mech.actuator

    def refresh(t: Task) -> list[TaskPid]:
        return _refresh(t, eng.proc_root)

    params.conflicts.clear()
    params.stopping = False
    try:
        refresh(task)
    except TargetGone:
        pass
    if params.conflicts:
        pid, owner = params.conflicts[0]
        _release_pids(engine, task)
        raise EngineError(
            f"task {task.name}: pid {pid} is already scanned by {claims.describe(owner)} "
            f"(one scanner per process)"
        )

    settings = CycleSettings(
        loop=project.loop,
        sleep=project.sleep,
        T=params.config.T,
        sysmem_threshold=project.sysmem_threshold,
        swap_threshold_kb=params.config.swap_threshold_kb,
        dram_percent=params.config.dram_percent,
    )

    def per_pid(tp: TaskPid, sleep: Sleep) -> None:
        _cycle(task, eng, settings, tp, sleep)

    worker = PeriodicWorker(
        task,
        per_pid,
        interval=project.interval,
        max_threads=task.max_threads,
        refresh=refresh,
        active=lambda: project.start,
        on_error=params.stats.error,
        name=f"slide-{project.name}-{task.name}",
    )
    try:
        worker.start()
    except BaseException:
        # the core calls no stop_task for a start that failed: give the claimed pids up here
        _release_pids(engine, task)
        raise
    params.worker = worker
    task.stats["running"] = True
    log.info(
        "slide: task %s of project %s started (tracker %s, actuator %s)",
        task.name,
        project.name,
        mech.tracker,
        mech.actuator,
    )
    if mech.tracker == "refs":
        log.warning("slide: task %s: tracker refs: %s", task.name, scan.MAPPING_ONLY)


@hookimpl
def stop_task(engine: Engine, task: Task) -> None:
    """Stop the worker (within a second, even mid-``sleep``) and give the pids up."""
    _stop(task)
    _release_pids(engine, task)


def _stop(task: Task) -> None:
    params = task.params
    if not isinstance(params, SlideTaskParams):
        return
    params.stopping = True
    worker, params.worker = params.worker, None
    if worker is not None and not worker.stop(timeout=1.0):
        log.warning("slide: task %s: a worker is still in a system call after stop", task.name)
        # Its tracker may be the one in use: closing it now could hand its descriptors to
        # someone else mid-call. Leave those trackers open (once) rather than risk that.
        for tp in list(task.pids):
            if isinstance(tp.params, SlidePidParams):
                with tp.params.lock:
                    tp.params.tracker, tp.params.closed = None, True
    claims.release_all(task)
    task.stats["running"] = False


def _release_pids(engine: Engine, task: Task) -> None:
    """Drop the pid list (``free_pid_params`` for each), so a restart resolves afresh."""
    pids, task.pids = task.pids, []
    for tp in pids:
        try:
            free_pid_params(engine, tp)
        except Exception:
            log.exception("slide: free_pid_params(%d) failed", tp.pid)
    claims.release_all(task)


def _refresh(task: Task, proc_root: str) -> list[TaskPid]:
    """Refresh the task's targets; only pids this task holds the claim for are worked on."""
    refresh_task_pids(task, proc_root=proc_root)
    return [tp for tp in task.pids if claims.owner(tp.pid) is task]


# -- the per-pid cycle --------------------------------------------------------------------------


def _cycle(
    task: Task, eng: SlideEngineParams, settings: CycleSettings, tp: TaskPid, sleep: Sleep
) -> None:
    pid = tp.pid
    if pid <= 1 or pid == os.getpid():  # belt and braces: targets.py already filters these
        return
    params: SlideTaskParams = task.params
    mech = params.mechanism
    assert mech is not None and params.stats is not None
    project = task.project
    swapcache = None
    step = mech.swapcache  # the mechanism is frozen: the step it has now is the one it keeps
    if step is not None and project is not None:

        def swapcache(p: int) -> None:
            step(project, p)

    pid_params = tp.params if isinstance(tp.params, SlidePidParams) else None
    try:
        if pid_params is None:  # not claimed through alloc_pid_params: a tracker per cycle
            tracker_kw: dict[str, Any] = {"make_tracker": mech.make_tracker}
        else:
            with pid_params.lock:
                if pid_params.closed:
                    return  # the pid left the task while this cycle was queued
                if pid_params.tracker is None:
                    pid_params.tracker = mech.make_tracker(pid)
                tracker_kw = {"tracker": pid_params.tracker}
        result = run_cycle(
            pid,
            settings,
            make_actuator=mech.make_actuator,
            sleep=sleep,
            proc_root=eng.proc_root,
            swapcache=swapcache,
            pressure_guard=_guard_of(params, pid),
            **tracker_kw,
        )
    except TargetGone:
        if pid_params is not None:
            pid_params.close_tracker(pid)
        raise
    except Exception as exc:
        # A target exiting mid-cycle shows up as whatever its files fail with: end quietly.
        if not os.path.isdir(f"{eng.proc_root}/{pid}"):
            if pid_params is not None:
                pid_params.close_tracker(pid)
            raise TargetGone(f"pid {pid} exited mid-cycle") from exc
        raise
    params.stats.record(tp, result)
    if result.paused:
        log.debug("slide: task %s pid %d: memory pressure %.2f, paused", task.name, pid,
                  result.pressure)  # fmt: skip
    elif result.swapped:
        log.info(
            "slide: task %s pid %d: %d pages scanned, %d cold, %d KiB swapped out, %.2f s",
            task.name,
            pid,
            result.pages_scanned,
            result.cold_pages,
            result.bytes_out // 1024,
            result.duration,
        )
        probed = result.tracker_counters
        if probed.get("probe_pages") or probed.get("probe_returned"):
            log.info(
                "slide: task %s pid %d: probe paged out %d pages (%d KiB), %d came back",
                task.name,
                pid,
                probed.get("probe_pages", 0),
                probed.get("probe_bytes_out", 0) // 1024,
                probed.get("probe_returned", 0),
            )
    else:
        log.debug("slide: task %s pid %d: gate closed, nothing scanned", task.name, pid)
    if isinstance(tp.params, SlidePidParams):
        tp.params.cycles += 1


def _guard_of(params: SlideTaskParams, pid: int):
    guard = params.guard
    if guard is None:
        return None

    def check(p: int) -> tuple[float, bool]:
        verdict = guard.check(p)
        return verdict.pressure, verdict.paused

    return check


# -- pids -----------------------------------------------------------------------------------------


@hookimpl
def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Claim a new target pid for its task; refuse (drop it) if another task scans it."""
    task = task_pid.task
    pid = task_pid.pid
    if pid <= 1 or pid == os.getpid():
        raise EngineError(f"slide never targets pid {pid}")
    if task is None:
        raise EngineError(f"pid {pid} has no task")
    if isinstance(task.params, SlideTaskParams) and task.params.stopping:
        raise EngineError(f"task {task.name} is stopping; pid {pid} is not claimed")
    owner = claims.claim(pid, task)
    if owner is not None:
        if isinstance(task.params, SlideTaskParams):
            task.params.conflicts.append((pid, owner))
        raise EngineError(f"pid {pid} is already scanned by {claims.describe(owner)}")
    task_pid.params = SlidePidParams()
    if not task_pid.stats:
        task_pid.stats.update(new_stats())


@hookimpl
def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Give a pid that left the task's list up, closing its tracker."""
    try:
        if isinstance(task_pid.params, SlidePidParams):
            task_pid.params.close_tracker(task_pid.pid, final=True)
        task = task_pid.task
        if task is not None and isinstance(task.params, SlideTaskParams) and task.params.guard:
            task.params.guard.forget(task_pid.pid)
    finally:
        if task_pid.task is not None:
            claims.release(task_pid.pid, task_pid.task)
        task_pid.params = None


# -- private commands ---------------------------------------------------------------------------


@hookimpl
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """``showstats``: per task and per pid statistics (all tasks of the engine without ``-t``)."""
    if cmd not in COMMANDS:
        raise EngineError(f"slide: unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    tasks: list[Any] = [task] if task is not None else list(engine.tasks)
    reply.write(format_showstats(tasks) if tasks else "no task\n")
