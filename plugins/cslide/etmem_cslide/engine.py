"""cslide engine hooks: keep each process's hot pages on the hot node of a NUMA pair, cold ones on
the cold node (entry point ``cslide``).

The plugin holds no state: the engine's lives in ``engine.params``
(:class:`state.CslideEngineParams`), a task's validated keys in ``task.params``, each target
pid's in ``task_pid.params`` (:class:`state.CslidePidParams`). One thread per engine runs
:func:`cycle.engine_main`; it starts with the first started task (the original started it at
engine add) and is stopped, within a second, when the engine is deleted.
"""

from __future__ import annotations

import logging
import threading

from etmem_sdk import ConfigError, EngineError, TaskPid, hookimpl, params, scan, targets

from . import config as cfgmod
from .cycle import engine_main, publish_stats
from .host import Host
from .show import host_pages_text, task_pages_text
from .state import CslideEngineParams, CslidePidParams, PidFactory

log = logging.getLogger("etmemd.cslide")
STOP_TIMEOUT = 1.0


# --- engine -----------------------------------------------------------------------------------


@hookimpl
def fill_eng_params(engine, config):
    """Validate node_pair / hot_threshold / node_mig_quota / node_hot_reserve (and ``memory``)
    against the machine; refuse an odd node count or nodes without hugepages here."""
    host = Host()
    cfg = cfgmod.parse_engine(config, engine.project, sys_root=host.sys_root)
    eng = CslideEngineParams(config=cfg, host=host, model=engine)
    try:
        eng.mem = host.node_mem(cfg.nodes, cfg.memory)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ConfigError(
            f"{config.label}: [{config.group}] name=cslide: cannot read the nodes' memory: {exc}"
        ) from None
    eng.host_pages = {n: (0, 0) for n in cfg.nodes}
    engine.params = eng
    publish_stats(eng)


@hookimpl
def clear_eng_params(engine):
    """Stop the engine thread (it wakes from any wait at once) and drop the state."""
    eng = engine.params
    if isinstance(eng, CslideEngineParams):
        stop_thread(eng)
    engine.params = None


def ensure_thread(eng: CslideEngineParams, name: str) -> None:
    if eng.thread is not None and eng.thread.is_alive():
        return
    eng.stop.clear()
    eng.thread = threading.Thread(target=engine_main, args=(eng,), name=name, daemon=True)
    eng.thread.start()


def stop_thread(eng: CslideEngineParams) -> None:
    eng.stop.set()
    if eng.thread is not None and eng.thread is not threading.current_thread():
        eng.thread.join(STOP_TIMEOUT)
        if eng.thread.is_alive():
            log.error("cslide engine thread did not stop within %.0f s", STOP_TIMEOUT)
    eng.thread = None


# --- tasks and pids ---------------------------------------------------------------------------


def refresh_pids(engine, task, proc_root) -> list[TaskPid]:
    """Resolve the task's main pid (non-recursive, as the original) and give every listed pid its
    cslide params."""
    before = [tp.params for tp in task.pids if isinstance(tp.params, CslidePidParams)]
    targets.refresh_task_pids(task, recursive=False, proc_root=str(proc_root))
    for tp in task.pids:
        alloc_pid_params(engine, tp)
    kept = {id(tp.params) for tp in task.pids}
    for p in before:  # a replaced main pid: the engine thread drops the old one
        if id(p) not in kept:
            PidFactory.free(p)
    return task.pids


def _engine_state(engine) -> CslideEngineParams:
    eng = getattr(engine, "params", None)
    if not isinstance(eng, CslideEngineParams):
        raise EngineError("cslide engine is not set up")
    return eng


def _new_pid_params(task, pid: int) -> CslidePidParams:
    return CslidePidParams(pid=pid, task_name=task.name, task=task.params, task_model=task)


@hookimpl
def fill_task_params(task, config):
    """Validate vm_flags / anon_only / ign_host (and ``tracker``); the process must exist."""
    eng = _engine_state(task.engine)
    task.params = cfgmod.parse_task(config, eng.config)
    if not refresh_pids(task.engine, task, eng.host.proc_root):
        task.params = None
        raise params.error(config, "value", f"no such process (type={task.type})")


@hookimpl
def clear_task_params(task):
    """Release the task's pids (the engine thread frees any it is still listing)."""
    for tp in task.pids:
        if isinstance(tp.params, CslidePidParams):
            PidFactory.free(tp.params)
        tp.params = None
    task.pids[:] = []
    task.params = None


@hookimpl
def alloc_pid_params(engine, task_pid):
    """Give a newly listed pid its cslide state (NONE until its task starts)."""
    if isinstance(task_pid.params, CslidePidParams):
        return
    task_pid.params = _new_pid_params(task_pid.task, task_pid.pid)


@hookimpl
def free_pid_params(engine, task_pid):
    if isinstance(task_pid.params, CslidePidParams):
        PidFactory.free(task_pid.params)
    task_pid.params = None


@hookimpl
def start_task(engine, task):
    """Hand the task's pids to the engine thread (starting it if needed)."""
    eng = _engine_state(engine)
    main = task.pids[0].pid if task.pids else None
    if main is None or not scan.alive(main, proc_root=str(eng.host.proc_root)):
        # The process went away since task add: look it up again (a restarted name is found).
        if not refresh_pids(engine, task, eng.host.proc_root):
            raise EngineError(f"task {task.name}: no such process ({task.type} {task.value})")
    eng.host.check_tracker(task.params, eng.config.memory)
    for tp in task.pids:
        alloc_pid_params(engine, tp)
        eng.factory.add(tp.params)
    project = engine.project.name if engine.project is not None else "?"
    ensure_thread(eng, f"cslide-{project}")


@hookimpl
def stop_task(engine, task):
    """The engine thread skips the task's pids from its next look on (returns at once)."""
    for tp in task.pids:
        if isinstance(tp.params, CslidePidParams):
            PidFactory.remove(tp.params)


# --- private commands -------------------------------------------------------------------------


@hookimpl
def eng_mgt_func(engine, task, cmd, reply):
    """``showhostpages`` and ``showtaskpages -t TASK`` with the original's text."""
    eng = _engine_state(engine)
    if not eng.factory.has_working():
        raise EngineError("no working pid under this cslide engine")
    nodes = eng.config.nodes
    if cmd == "showhostpages":
        with eng.stat_lock:
            totals = {n: m.total // 1024 for n, m in eng.mem.items()}
            text = host_pages_text(eng.stat_time, nodes, totals, eng.host_pages)
        reply.write(text)
        return
    if cmd != "showtaskpages":
        raise EngineError(f"cslide cmd {cmd} is not supported")
    if task is None:
        raise EngineError(f"task for cslide cmd {cmd} not found")
    first = task.pids[0].params if task.pids else None
    if not isinstance(first, CslidePidParams):
        raise EngineError(f"task {task.name} for cslide cmd {cmd} not started")
    with eng.stat_lock:
        text = task_pages_text(eng.stat_time, first.pid, nodes, first.pages)
    reply.write(text)
