"""The C-side twins of our objects: one ``struct engine``/``task``/``task_pid`` per object.

They live in ``engine.params`` / ``task.params`` / ``task_pid.params`` for as long as the object
does, so whatever a policy stores in the C ``params`` fields (or in a thread it started) stays
valid between calls. Before each call they are refreshed from our objects; string fields are only
replaced when their text changed, so a policy thread reading ``tk->value`` never sees freed memory.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

from etmem_sdk import PAGE_SCAN, PSI_SCAN, REGION_SCAN, Engine, EngineError, Task, TaskPid

from . import abi

_SCAN_TYPES = {PAGE_SCAN: abi.PAGE_SCAN, REGION_SCAN: abi.REGION_SCAN, PSI_SCAN: abi.PSI_SCAN}


def _with_next(items: list) -> list[tuple[Any, Any]]:
    """Each item with the one after it (``None`` after the last): how C lists are linked."""
    return list(zip(items, [*items[1:], None], strict=False))


def _set_str(struct: ctypes.Structure, name: str, text: str | None) -> None:
    """Assign a ``char *`` field unless it already holds ``text`` (ctypes keeps the bytes alive)."""
    new = None if text is None else text.encode()
    if getattr(struct, name) != new:
        setattr(struct, name, new)


@dataclass(eq=False)
class PidState:
    """``task_pid.params``: the C ``struct task_pid``."""

    c: abi.CTaskPid = field(default_factory=abi.CTaskPid)


@dataclass(eq=False)
class TaskState:
    """``task.params``: the C ``struct task``."""

    c: abi.CTask = field(default_factory=abi.CTask)


@dataclass(eq=False)
class EngineState:
    """``engine.params``: the loaded policy and the C ``struct engine`` / ``struct project``."""

    lib: Any  # ctypes.CDLL of the policy
    ops: abi.CEngineOps
    libname: str
    ops_name: str
    c: abi.CEngine = field(default_factory=abi.CEngine)
    c_project: abi.CProject = field(default_factory=abi.CProject)
    page_scan: abi.PageScan = field(default_factory=abi.PageScan)
    psi_scan: abi.PsiScan = field(default_factory=abi.PsiScan)
    region_scan: abi.RegionScan = field(default_factory=abi.RegionScan)
    #: one call into the policy at a time, as the original's single-threaded daemon guaranteed
    lock: threading.RLock = field(default_factory=threading.RLock)

    def op(self, name: str):
        """The C op ``name`` as a callable, or ``None`` when the policy left it NULL."""
        func = getattr(self.ops, name)
        return func if func else None


def sync_engine(engine: Engine) -> EngineState:
    """Refresh the C ``struct engine`` (and its project and tasks) from ``engine``."""
    state: EngineState = engine.params
    c = state.c
    c.engine_type = abi.THIRDPARTY_ENGINE
    _set_str(c, "name", engine.name)
    c.ops = ctypes.pointer(state.ops)
    c.handler = state.lib._handle
    c.proj = ctypes.pointer(state.c_project)
    project = engine.project
    if project is not None:
        _sync_project(state, project)
    tasks = [t for t in engine.tasks if isinstance(t.params, TaskState)]
    for task, following in _with_next(tasks):
        _sync_task(task, state, following)
    c.tasks = ctypes.pointer(tasks[0].params.c) if tasks else None
    return state


def _sync_project(state: EngineState, project) -> None:
    p = state.c_project
    _set_str(p, "name", project.name)
    p.type = _SCAN_TYPES.get(project.scan_type, abi.PAGE_SCAN)
    if project.scan_type == PSI_SCAN:
        state.psi_scan.interval = project.interval or 0
        param: ctypes.Structure = state.psi_scan
    elif project.scan_type == REGION_SCAN:
        for key, *_ in abi.RegionScan._fields_:  # (name, type) or, for a bit field, 3 items
            setattr(state.region_scan, key, int(project.region.get(key, 0)))
        param = state.region_scan
    else:
        state.page_scan.interval = project.interval or 0
        state.page_scan.loop = project.loop or 0
        state.page_scan.sleep = project.sleep or 0
        param = state.page_scan
    p.scan_param = ctypes.cast(ctypes.pointer(param), ctypes.c_void_p)
    p.sysmem_threshold = project.sysmem_threshold
    p.swapcache_high_wmark = project.swapcache_high_wmark
    p.swapcache_low_wmark = project.swapcache_low_wmark
    p.start = bool(project.start)
    p.wmark_set = bool(project.wmark_set)
    # every .so engine of the project, in project order, linked through engine->next
    states = [e.params for e in project.engines if isinstance(e.params, EngineState)]
    for cur, following in _with_next(states):
        cur.c.next = ctypes.pointer(following.c) if following is not None else None
    p.engs = ctypes.pointer(states[0].c) if states else None


def _sync_task(task: Task, state: EngineState, following: Task | None) -> None:
    c = task.params.c
    _set_str(c, "type", task.type)
    _set_str(c, "value", task.value)
    _set_str(c, "name", task.name)
    c.max_threads = task.max_threads
    c.swap_flag = 1 if task.swap_flag else 0
    c.eng = ctypes.pointer(state.c)
    c.next = ctypes.pointer(following.params.c) if following is not None else None
    pids = [p for p in task.pids if isinstance(p.params, PidState)]
    for pid, nxt in _with_next(pids):
        sync_pid(pid, task)
        pid.params.c.next = ctypes.pointer(nxt.params.c) if nxt is not None else None
    c.pids = ctypes.pointer(pids[0].params.c) if pids else None


def engine_of(task: Task) -> Engine:
    """The engine of ``task``: the core links a task to its engine before any task op."""
    if task.engine is None:
        raise EngineError(f"task {task.name}: it belongs to no engine")
    return task.engine


def sync_task(task: Task) -> TaskState:
    """Refresh the C ``struct task`` of ``task`` (through its engine, which may not list it yet)."""
    engine = engine_of(task)
    state = sync_engine(engine)
    if not any(t is task for t in engine.tasks):
        _sync_task(task, state, None)
    return task.params


def sync_pid(task_pid: TaskPid, task: Task | None) -> PidState:
    """Refresh the C ``struct task_pid`` of ``task_pid``."""
    c = task_pid.params.c
    c.pid = task_pid.pid
    c.rt_swapin_rate = task_pid.rt_swapin_rate
    c.tk = ctypes.pointer(task.params.c) if task is not None and task.params else None
    return task_pid.params
