"""The ``age`` engine: page out pages that stayed idle for ``idle_cycles`` consecutive cycles.

Every project ``interval`` seconds, for each target pid (the task's process and its direct
children), one *cycle* runs ``loop`` scan passes (``sleep`` seconds apart) over the process's
anonymous VMAs. A page touched in none of the passes had an idle cycle; its *age* is the number
of idle cycles in a row. Pages whose age reached ``idle_cycles`` are handed to the actuator,
oldest first, at most ``max_mib`` MiB per pid and cycle; their age then starts again from 0.

Task keys (all optional)::

    idle_cycles=3      # 1..1000: consecutive idle cycles before a page goes
    max_mib=64         # 1..1048576: MiB handed to the actuator per pid and cycle
    tracker=refs       # idle_pages | page_idle | refs | damon (default: etmemd.toml, then probe)
    actuator=pageout   # swap_pages | pageout | cold (default: etmemd.toml, then probe)

``etmem engine showstats -n PROJECT -e age [-t TASK]`` prints the counters; ``project show
--json`` carries them too (``task.stats``).

The plugin holds no state: the task's settings, actuator and worker are in ``task.params``, each
pid's page ages and tracker in ``task_pid.params``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from etmem_sdk import (
    PAGE_SCAN,
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    Reply,
    Task,
    TaskPid,
    hookimpl,
    params,
    scan,
)
from etmem_sdk.targets import refresh_task_pids, release_task_pids
from etmem_sdk.worker import PeriodicWorker, Sleep

log = logging.getLogger(__name__)

#: Private commands of ``etmem engine``.
COMMANDS = ("showstats",)
#: Actuators that take memory out of RAM (``migrate`` has its own engine, cslide).
ACTUATORS = ("swap_pages", "pageout", "cold")
_AGE_CAP = np.iinfo(np.uint16).max
_MIB = 1 << 20


@dataclass(frozen=True)
class AgeConfig:
    """The validated task keys."""

    idle_cycles: int = 3
    max_mib: int = 64
    tracker: str | None = None
    actuator: str | None = None


def parse_task_config(section: Any) -> AgeConfig:
    """Validate the age keys of a ``[task]`` section (messages from ``etmem_sdk.params``)."""
    return AgeConfig(
        idle_cycles=params.get_int(section, "idle_cycles", 1, 1000, required=False, default=3),
        max_mib=params.get_int(section, "max_mib", 1, 1 << 20, required=False, default=64),
        tracker=params.get_choice(section, "tracker", scan.TRACKERS, required=False),
        actuator=params.get_choice(section, "actuator", ACTUATORS, required=False),
    )


@dataclass
class AgePidParams:
    """``task_pid.params``: the pages seen last cycle (sorted) with their ages, and the tracker."""

    addr: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    age: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint16))
    tracker: scan.Tracker | None = None

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


@dataclass
class AgeTaskParams:
    """``task.params``: the keys, and while started the chosen mechanism and the worker."""

    config: AgeConfig
    tracker: str | None = None
    actuator_name: str | None = None
    actuator: scan.Actuator | None = None
    worker: PeriodicWorker | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _new_task_stats(cfg: AgeConfig) -> dict[str, Any]:
    return {
        "idle_cycles": cfg.idle_cycles,
        "max_mib": cfg.max_mib,
        "tracker": None,
        "actuator": None,
        "cycles": 0,
        "paged_out_pages": 0,
        "paged_out_bytes": 0,
        "errors": 0,
        "last_error": "",
    }


# --- hooks --------------------------------------------------------------------------------------


@hookimpl
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """The engine has no keys of its own; it needs a page-scan project (loop/interval/sleep)."""
    project = engine.project
    if project is not None and project.scan_type != PAGE_SCAN:
        raise ConfigError(
            f"{config.label}: [engine] name=age: needs a project with scan_type=page, "
            f"not {project.scan_type}"
        )
    engine.params = None


@hookimpl
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Validate the task's age keys."""
    cfg = parse_task_config(config)
    task.params = AgeTaskParams(cfg)
    task.stats.clear()
    task.stats.update(_new_task_stats(cfg))


@hookimpl
def clear_task_params(task: Task) -> None:
    task.params = None


@hookimpl
def start_task(engine: Engine, task: Task) -> None:
    """Choose tracker and actuator (failing the start with the probe's reason if none works),
    then start the periodic worker."""
    state: AgeTaskParams = task.params
    project = engine.project
    if project is None:  # the core starts only tasks of a linked engine; say so if not
        raise EngineError(f"task {task.name}: age: the engine belongs to no project")
    cfg = state.config
    state.actuator_name = scan.choose_actuator(cfg.actuator, purpose="swap")
    # This policy's own rule (idle_cycles) decides what leaves RAM, so it asks for a tracker
    # that moves nothing itself: never the probe, which pages its sample out as it watches.
    state.tracker = scan.choose_tracker(cfg.tracker, purpose="cold")
    state.actuator = scan.open_actuator(state.actuator_name)
    with state.lock:
        task.stats["tracker"], task.stats["actuator"] = state.tracker, state.actuator_name
    proc_root = scan.defaults().proc_root

    def refresh(t: Task) -> list[TaskPid]:
        return refresh_task_pids(t, proc_root=proc_root)

    state.worker = PeriodicWorker(
        task,
        lambda tp, sleep: run_cycle(task, tp, sleep),
        interval=project.interval or 1,
        max_threads=task.max_threads,
        refresh=refresh,
        active=lambda: project.start,
        on_error=lambda tp, exc: _count_error(task, tp, exc),
        name=f"age-{project.name}-{task.name}",
    )
    state.worker.start()
    log.info(
        "task %s: age started (tracker %s, actuator %s, idle_cycles %d, max_mib %d)",
        task.name,
        state.tracker,
        state.actuator_name,
        cfg.idle_cycles,
        cfg.max_mib,
    )


@hookimpl
def stop_task(engine: Engine, task: Task) -> None:
    """Stop the worker (within a second), forget every pid, close the actuator."""
    state: AgeTaskParams | None = task.params
    if state is None:
        return
    if state.worker is not None:
        stopped = state.worker.stop(timeout=1.0)
        state.worker = None
        if not stopped:
            # A cycle is still inside a system call with these trackers: closing them now could
            # hand their fds to someone else mid-use. Leaking them once is the lesser harm.
            log.warning("age: task %s: a cycle outlived stop; its trackers stay open", task.name)
            task.pids = []
            return
    release_task_pids(task)
    if state.actuator is not None:
        state.actuator.close()
        state.actuator = None


@hookimpl
def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    task_pid.params = AgePidParams()
    task_pid.stats.update(cycles=0, resident=0, idle=0, aged=0, paged_out_pages=0)


@hookimpl
def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    if isinstance(task_pid.params, AgePidParams):
        task_pid.params.close()
    task_pid.params = None


@hookimpl
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """``showstats``: the counters of one task (``-t``) or of every task of the engine."""
    if cmd != "showstats":
        raise EngineError(f"age: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    tasks = [task] if task is not None else list(reversed(engine.tasks))
    reply.write("".join(format_showstats(t) for t in tasks))


# --- the cycle ----------------------------------------------------------------------------------


def age_pages(
    old_addr: np.ndarray, old_age: np.ndarray, refs: scan.PageRefs
) -> tuple[np.ndarray, np.ndarray]:
    """This cycle's ages: old age + 1 for pages no pass saw accessed, 0 for the others.

    Returns ``(addr, age)`` for the pages seen now (pages gone from RAM are forgotten).
    """
    before = scan.carry(old_addr, old_age, refs.addr)
    idle = refs.count == 0
    age = np.where(idle, np.minimum(before.astype(np.uint32) + 1, _AGE_CAP), 0)
    return refs.addr, age.astype(np.uint16)


def choose_pages(
    age: np.ndarray, types: np.ndarray, idle_cycles: int, budget_bytes: int
) -> np.ndarray:
    """Indices of the pages to move: age >= ``idle_cycles``, oldest first (lower address first
    among equals), as many as fit in ``budget_bytes``. Returned in ascending index order."""
    old = np.flatnonzero(age >= idle_cycles)
    if old.size == 0:
        return old
    order = old[np.argsort(-age[old].astype(np.int32), kind="stable")]
    fits = np.cumsum(scan.page_bytes(types[order])) <= budget_bytes
    return np.sort(order[fits])


def run_cycle(task: Task, tp: TaskPid, sleep: Sleep) -> None:
    """One cycle for one pid (called by the worker thread)."""
    state: AgeTaskParams = task.params
    pid_state: AgePidParams = tp.params
    project = task.project
    tracker, actuator = state.tracker, state.actuator
    if project is None or tracker is None or actuator is None:  # only a started task has cycles
        raise EngineError(f"task {task.name}: age: a cycle ran while the task was not started")
    cfg = state.config
    if pid_state.tracker is None:
        pid_state.tracker = scan.open_tracker(tracker, tp.pid)
    vmas = scan.read_vmas(tp.pid)
    refs = scan.sample(
        pid_state.tracker, vmas, passes=project.loop or 1, sleep=sleep, interval=project.sleep or 0
    )
    addr, age = age_pages(pid_state.addr, pid_state.age, refs)
    chosen = choose_pages(age, refs.type, cfg.idle_cycles, cfg.max_mib * _MIB)
    moved_bytes = 0
    if chosen.size:
        sleep.check()  # a stop that came during the scan: do not act any more
        sizes = scan.page_bytes(refs.type[chosen])
        actuator.apply(tp.pid, addr[chosen], sizes)
        moved_bytes = int(sizes.sum())
        age[chosen] = 0  # acted on: if the page stays or comes back it has to age again
    pid_state.addr, pid_state.age = addr, age
    idle = int(np.count_nonzero(refs.count == 0))
    with state.lock:
        s = tp.stats
        s["cycles"] = s.get("cycles", 0) + 1
        s["resident"], s["idle"], s["aged"] = len(refs), idle, int(chosen.size)
        s["paged_out_pages"] = s.get("paged_out_pages", 0) + int(chosen.size)
        t = task.stats
        t["cycles"] += 1
        t["paged_out_pages"] += int(chosen.size)
        t["paged_out_bytes"] += moved_bytes
    if chosen.size:
        log.debug("task %s pid %d: %d pages out", task.name, tp.pid, chosen.size)


def _count_error(task: Task, tp: TaskPid, exc: BaseException) -> None:
    state: AgeTaskParams | None = task.params
    if state is None:
        return
    with state.lock:
        task.stats["errors"] += 1
        task.stats["last_error"] = f"pid {tp.pid}: {exc}"


# --- showstats ----------------------------------------------------------------------------------


def format_showstats(task: Task) -> str:
    """The text of ``showstats`` for one task: settings, one row per pid, the task's totals."""
    s = task.stats
    lines = [
        f"task {task.name}: tracker {s.get('tracker')}, actuator {s.get('actuator')}, "
        f"idle_cycles {s.get('idle_cycles')}, max_mib {s.get('max_mib')}\n",
        f"{'pid':<10}{'cycles':>8}{'resident':>10}{'idle':>10}{'aged':>10}{'out_pages':>12}\n",
    ]
    for tp in list(task.pids):
        p = tp.stats
        lines.append(
            f"{tp.pid:<10}{p.get('cycles', 0):>8}{p.get('resident', 0):>10}"
            f"{p.get('idle', 0):>10}{p.get('aged', 0):>10}{p.get('paged_out_pages', 0):>12}\n"
        )
    lines.append(
        f"total: cycles {s.get('cycles', 0)}, paged_out_pages {s.get('paged_out_pages', 0)}, "
        f"paged_out_bytes {s.get('paged_out_bytes', 0)}, errors {s.get('errors', 0)}\n"
    )
    if s.get("last_error"):
        lines.append(f"last error: {s['last_error']}\n")
    return "".join(lines)
