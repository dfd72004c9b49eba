"""The psi engine: every ``interval`` seconds, reclaim memory from the cgroups a task's
``cg_dir`` matches while their memory pressure stays below ``pressure`` (C ``etmemd_psi_fb.c``).

Registered as the ``psi`` entry point of ``etmem.engines``. ``engine.params`` holds the cgroup
layout found at ``obj add`` (cgroup v2, or openEuler's v1; the engine is refused where there is
neither, or no PSI); ``task.params`` the task's keys, its per-cgroup controllers
(:mod:`etmem_psi.controller`) and, while started, its round thread. The original runs one
thread per engine; one per task here lets a task start and stop on its own.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from etmem_sdk import (
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    Reply,
    Task,
    hookimpl,
)
from etmem_sdk import cgroup as cg

from .config import PsiTaskConfig, check_project, parse_task_config
from .controller import CgroupControl, pressure_seen, reclaim_floor, reclaim_size

log = logging.getLogger(__name__)

COMMANDS = ("showstats",)
#: One ``memory.reclaim`` write asks for at most this much, so ``project stop`` (which has a
#: second) never waits behind a write of a whole gigabyte.
RECLAIM_CHUNK = 64 << 20


@dataclass
class PsiEngineParams:
    """``engine.params``: the cgroup layout of this machine."""

    layout: cg.CgroupLayout


@dataclass
class PsiTaskParams:
    """``task.params``: the keys, the per-cgroup controllers and the round thread."""

    config: PsiTaskConfig
    layout: cg.CgroupLayout
    cgroups: dict[str, CgroupControl] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    rounds: int = 0
    warning: str = ""
    #: cgroups already warned about (so a round every second does not flood the log)
    warned: set[str] = field(default_factory=set)


# -- configuration ------------------------------------------------------------------------------


@hookimpl
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """No engine keys; refuse a non-psi project and a machine without memory cgroup reclaim."""
    check_project(config, engine.project)
    try:
        layout = cg.detect_layout()
    except cg.CgroupUnavailable as exc:
        raise ConfigError(f"{config.label}: [engine] name=psi: cannot work here: {exc}") from None
    engine.params = PsiEngineParams(layout)
    log.info("psi: engine of project %s uses %s", _project_name(engine), layout.describe())


@hookimpl
def clear_eng_params(engine: Engine) -> None:
    """Drop ``engine.params``."""
    engine.params = None


@hookimpl
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Validate ``cg_dir``, ``pressure``, the rates and the limits (see config.py)."""
    cfg = parse_task_config(config)
    eng = task.engine.params if task.engine is not None else None
    if not isinstance(eng, PsiEngineParams):
        raise ConfigError(f"{config.label}: [task] the psi engine of this task is not set up")
    task.params = PsiTaskParams(cfg, eng.layout)
    task.stats.clear()
    task.stats.update(running=False, rounds=0, warning="", cgroups={})


@hookimpl
def clear_task_params(task: Task) -> None:
    """Stop the task if it still runs, then drop ``task.params``."""
    _stop(task)
    task.params = None


# -- start / stop -------------------------------------------------------------------------------


@hookimpl
def start_task(engine: Engine, task: Task) -> None:
    """Start the task's round thread (first round ``interval`` seconds from now, as slide)."""
    params: PsiTaskParams = task.params
    if params.thread is not None and params.thread.is_alive():
        return
    project = task.project
    if project is None or project.interval is None:
        raise EngineError(f"task {task.name}: psi needs a scan_type=psi project with interval")
    interval = project.interval
    params.stop = threading.Event()
    thread = threading.Thread(
        target=_loop,
        args=(task, float(interval), params.stop),
        name=f"psi-{project.name}-{task.name}",
        daemon=True,
    )
    thread.start()
    params.thread = thread
    task.stats["running"] = True
    refresh_cgroups(task)  # an empty match is reported now, not an interval later
    log.info(
        "psi: task %s of project %s started: cg_dir %s, pressure below %g, every %d s",
        task.name,
        project.name,
        params.config.cg_dir,
        params.config.pressure,
        interval,
    )


@hookimpl
def stop_task(engine: Engine, task: Task) -> None:
    """Stop the round thread (within a second: a round checks between reclaim chunks)."""
    _stop(task)


def _stop(task: Task) -> None:
    params = task.params
    if not isinstance(params, PsiTaskParams):
        return
    params.stop.set()
    thread, params.thread = params.thread, None
    if thread is not None and thread is not threading.current_thread():
        thread.join(1.0)
        if thread.is_alive():
            log.warning("psi: task %s: a memory.reclaim write is still running", task.name)
    task.stats["running"] = False


def _loop(task: Task, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        project = task.project
        if project is not None and not project.start:
            continue
        try:
            run_round(task, stop)
        except Exception:  # a broken round must not end the task
            log.exception("psi: task %s: round failed", task.name)


# -- one round ----------------------------------------------------------------------------------


def refresh_cgroups(task: Task) -> list[str]:
    """Match ``cg_dir`` now: cgroups that appeared get a controller starting at
    ``reclaim_rate``; vanished ones (or one recreated under the same name) lose theirs. No
    match is a warning (log and showstats), not a failure. Returns the matched cgroups."""
    params: PsiTaskParams = task.params
    cfg, layout = params.config, params.layout
    try:
        matched = layout.find(cfg.cg_dir)
    except OSError as exc:
        matched = []
        log.warning("psi: task %s: cg_dir %s: %s", task.name, cfg.cg_dir, exc)
    inodes = {}
    for rel in matched:
        try:
            inodes[rel] = os.stat(os.path.join(layout.pressure_root, rel)).st_ino
        except OSError:
            continue  # removed while we looked
    with params.lock:
        for rel in list(params.cgroups):
            if inodes.get(rel) != params.cgroups[rel].inode:
                del params.cgroups[rel]
                params.warned.discard(rel)
        for rel, ino in inodes.items():
            params.cgroups.setdefault(rel, CgroupControl(rate=cfg.reclaim_rate, inode=ino))
        warning = (
            ""
            if inodes
            else (f"cg_dir {cfg.cg_dir} matches no cgroup under {layout.pressure_root}")
        )
        if warning and warning != params.warning:
            log.warning("psi: task %s: %s", task.name, warning)
        params.warning = warning
    _publish(task, params)
    return list(inodes)


def run_round(task: Task, stop: threading.Event | None = None) -> None:
    """One round: refresh the cgroups, then for each read the pressure and reclaim or not."""
    params: PsiTaskParams = task.params
    with params.lock:
        params.rounds += 1
    for rel in refresh_cgroups(task):
        if stop is not None and stop.is_set():
            break
        ctl = params.cgroups.get(rel)
        if ctl is None:
            continue
        try:
            _control(task, params, rel, ctl, stop)
        except cg.CgroupGone as exc:
            log.info("psi: task %s: cgroup %s is gone (%s)", task.name, rel or "/", exc)
            with params.lock:
                params.cgroups.pop(rel, None)
        except (EngineError, OSError, ValueError) as exc:
            ctl.errors += 1
            ctl.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("psi: task %s: cgroup %s: %s", task.name, rel or "/", exc)
    _publish(task, params)


def _control(
    task: Task,
    params: PsiTaskParams,
    rel: str,
    ctl: CgroupControl,
    stop: threading.Event | None,
) -> None:
    cfg, layout = params.config, params.layout
    ctl.rounds += 1
    reason = layout.can_reclaim(rel)
    if reason is not None:
        ctl.state = "cannot reclaim"
        ctl.last_error = reason
        if rel not in params.warned:
            params.warned.add(rel)
            log.warning("psi: task %s: cgroup %s: %s", task.name, rel or "/", reason)
        return
    ctl.pressure = pressure_seen(layout.pressure(rel)["some"])
    if ctl.pressure >= cfg.pressure:
        was = ctl.state
        ctl.pressure_high(cfg)
        if was != ctl.state:
            log.info(
                "psi: task %s: cgroup %s: pressure %.2f >= %g, reclaim paused (rate %.2f)",
                task.name,
                rel or "/",
                ctl.pressure,
                cfg.pressure,
                ctl.rate,
            )
        return
    mem = layout.memory(rel)
    ctl.usage = mem.usage
    ctl.floor = reclaim_floor(mem, cfg)
    size = reclaim_size(mem, ctl.floor, ctl.rate, cfg)
    ctl.last_request = size
    if size == 0:
        ctl.state = "at floor"
        ctl.good_rounds = 0
        return
    complete = True
    asked = 0
    while asked < size:
        if stop is not None and stop.is_set():
            complete = False
            break
        part = min(RECLAIM_CHUNK, size - asked)
        asked += part
        if not layout.reclaim(rel, part):
            complete = False  # the kernel found no more to take this time
            break
    after = layout.memory(rel).usage
    freed = max(0, mem.usage - after)
    ctl.usage = after
    ctl.reclaimed(cfg, freed, complete)
    log.debug(
        "psi: task %s: cgroup %s: pressure %.2f, rate %.2f, asked %d KiB, freed %d KiB",
        task.name,
        rel or "/",
        ctl.pressure,
        ctl.rate,
        asked >> 10,
        freed >> 10,
    )


def _publish(task: Task, params: PsiTaskParams) -> None:
    with params.lock:
        task.stats["rounds"] = params.rounds
        task.stats["warning"] = params.warning
        task.stats["cgroups"] = {rel: c.as_stats() for rel, c in params.cgroups.items()}
        task.stats["bytes_reclaimed"] = sum(c.bytes_reclaimed for c in params.cgroups.values())


def _project_name(engine: Engine) -> str:
    return engine.project.name if engine.project is not None else "?"


# -- private commands ---------------------------------------------------------------------------

_ROW = "{:<24} {:>9} {:>6} {:>12} {:>12} {:>14} {:>7} {:>7}  {}\n"


@hookimpl
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """``showstats``: per task, per cgroup the pressure seen, the rate and the bytes reclaimed."""
    if cmd not in COMMANDS:
        raise EngineError(f"psi: unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    tasks = [task] if task is not None else list(engine.tasks)
    reply.write(format_showstats(tasks) if tasks else "no task\n")


def format_showstats(tasks: list[Task]) -> str:
    """The ``etmem engine showstats`` text of psi ``tasks``."""
    out = []
    for task in tasks:
        params = task.params
        s = task.stats
        state = "running" if s.get("running") else "stopped"
        cfg = params.config if isinstance(params, PsiTaskParams) else None
        where = params.layout.describe() if isinstance(params, PsiTaskParams) else "-"
        out.append(
            f"task: {task.name}  cg_dir: {cfg.cg_dir if cfg else '-'}  state: {state}  "
            f"pressure below: {f'{cfg.pressure:g}' if cfg else '-'}  "
            f"rounds: {s.get('rounds', 0)}  "
            f"{where}\n"
        )
        out.append(
            _ROW.format(
                "cgroup",
                "pressure",
                "rate",
                "usage_kb",
                "floor_kb",
                "reclaimed_kb",
                "rounds",
                "paused",
                "state",
            )
        )
        for rel, c in sorted(dict(s.get("cgroups", {})).items()):
            out.append(
                _ROW.format(
                    rel or "/",
                    f"{c['pressure']:.2f}",
                    f"{c['rate']:.2f}",
                    c["usage"] >> 10,
                    c["floor"] >> 10,
                    c["bytes_reclaimed"] >> 10,
                    c["rounds"],
                    c["paused_rounds"],
                    c["state"] + (f" ({c['last_error']})" if c["last_error"] else ""),
                )
            )
        if s.get("warning"):
            out.append(f"warning: {s['warning']}\n")
    return "".join(out)
