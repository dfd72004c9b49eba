"""A task's target processes: the main pid plus its direct children, refreshed every cycle.

C resolves ``type=name`` by forking ``pgrep -x`` and children with ``pgrep -P``; here both come
from /proc (``etmem_scan.pids``). The list in ``task.pids`` is merged in place: pids that appear
get the engine's ``alloc_pid_params``, pids that vanish get ``free_pid_params``, and if the main
pid changed (the target was restarted) the whole list is rebuilt. etmemd itself, pid 1 and kernel
threads are never targets. A target that exits is logged, never fatal: the task just has no
pids until it comes back. A ``type=pid`` target is a process, not a number: once it exited, a
process that later gets the same pid (its start time differs) is not taken for it.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable

from etmem_scan import pids as procs

from .errors import TargetGone
from .model import Engine, Task, TaskPid

log = logging.getLogger("etmem.targets")

#: C copies a pid value into a 10-byte buffer, so 9 digits is the longest it accepts.
_MAX_PID_DIGITS = 9
#: The largest ``type=pid`` value.
MAX_PID_VALUE = 10**_MAX_PID_DIGITS - 1


def pid_value(value: str) -> int | None:
    """The process id a ``type=pid`` task's ``value`` names (1 to :data:`MAX_PID_VALUE`, in
    decimal digits), or ``None`` when it names none: the one rule, for ``obj add`` and for
    every refresh of the targets."""
    if not value.isdigit() or len(value) > _MAX_PID_DIGITS or int(value) == 0:
        return None
    return int(value)


#: Task -> the pid last skipped as not a valid target, so the warning is not repeated each cycle.
_skipped: weakref.WeakKeyDictionary[Task, int] = weakref.WeakKeyDictionary()
#: ``type=pid`` task -> (pid, start time) of the process it first found: a later process that
#: got the same pid number after the target exited is someone else, never a target.
_first_seen: weakref.WeakKeyDictionary[Task, tuple[int, int]] = weakref.WeakKeyDictionary()


def resolve_main_pid(task: Task, proc_root: str = "/proc") -> int:
    """The task's main pid: ``type=pid`` -> the value (must be alive); ``type=name`` -> the
    lowest pid whose 15-character name equals the value exactly.

    Raises :class:`TargetGone` when there is no such process (or the pid value is not a pid).
    """
    value = task.value
    if task.type == "pid":
        pid = pid_value(value)
        if pid is None:
            raise TargetGone(f"task {task.name}: value {value!r} is not a process id")
        if not procs.alive(pid, proc_root):
            raise TargetGone(f"task {task.name}: process {pid} does not exist")
        st = procs.read_stat(pid, proc_root)
        if st is not None:
            seen = _first_seen.get(task)
            if seen is None or seen[0] != pid:  # first look (or the task names a new pid)
                _first_seen[task] = (pid, st.starttime)
            elif seen[1] != st.starttime:
                raise TargetGone(
                    f"task {task.name}: process {pid} exited; pid {pid} now belongs to another "
                    f"process ({st.comm}), which is not a target"
                )
        return pid
    if task.type == "name":
        found = procs.pids_by_name(value, proc_root)
        if not found:
            raise TargetGone(f"task {task.name}: no process named {value!r}")
        return found[0]
    raise TargetGone(f"task {task.name}: unknown target type {task.type!r}")


def _alloc(engine: Engine | None, task_pid: TaskPid) -> None:
    """``alloc_pid_params`` of the task's engine, if it implements it (exceptions propagate)."""
    if engine is not None and engine.hooks is not None and "alloc_pid_params" in engine.implements:
        engine.hooks.alloc_pid_params(engine=engine, task_pid=task_pid)


def _free(engine: Engine | None, gone: Iterable[TaskPid]) -> None:
    if engine is None or engine.hooks is None or "free_pid_params" not in engine.implements:
        return
    for tp in gone:
        try:
            engine.hooks.free_pid_params(engine=engine, task_pid=tp)
        except Exception:  # one engine bug must not keep the rest of the list alive
            log.exception("engine %s: free_pid_params(pid %d) failed", _name(engine), tp.pid)


def _name(engine: Engine | None) -> str:
    return engine.name if engine is not None else "?"


def _usable(pid: int, exclude: Iterable[int], proc_root: str) -> bool:
    return pid not in exclude and not procs.is_kernel_thread(pid, proc_root)


def refresh_task_pids(
    task: Task,
    *,
    recursive: bool = True,
    proc_root: str = "/proc",
    exclude: Iterable[int] | None = None,
) -> list[TaskPid]:
    """Bring ``task.pids`` up to date and return it: ``[main, *direct children ascending]``.

    ``recursive=False`` keeps only the main pid (cslide's behaviour). ``exclude`` defaults to
    etmemd's own pid and pid 1 (taken at call time, so it stays right after a fork). A pid whose
    ``alloc_pid_params`` raises is left out (and retried next cycle); if that is the main pid
    the list is empty for this cycle. Never raises because a target vanished.
    """
    engine = task.engine
    excluded = frozenset((os.getpid(), 1) if exclude is None else exclude)
    old = list(task.pids)
    old_main = old[0].pid if old else None

    try:
        main = resolve_main_pid(task, proc_root)
    except TargetGone as exc:
        if old:
            log.warning("task %s: target pid %d gone: %s", task.name, old_main, exc)
        else:
            log.debug("task %s: no target: %s", task.name, exc)
        _drop_all(task, engine)
        return task.pids
    if not _usable(main, excluded, proc_root):
        # warn once per skipped pid, not every cycle
        level = logging.DEBUG if _skipped.get(task) == main else logging.WARNING
        _skipped[task] = main
        log.log(
            level, "task %s: pid %d is etmemd, init or a kernel thread: skipped", task.name, main
        )
        _drop_all(task, engine)
        return task.pids
    _skipped.pop(task, None)

    if old_main is not None and old_main != main:  # old_main is set exactly when old is
        why = "exited" if not procs.alive(old_main, proc_root) else "no longer matches"
        log.warning("task %s: target pid %d %s, now pid %d", task.name, old_main, why, main)
        _drop_all(task, engine)
        old = []

    wanted = [main]
    if recursive:
        wanted += [c for c in procs.children_of(main, proc_root) if _usable(c, excluded, proc_root)]

    have = {tp.pid: tp for tp in old}
    wanted_set = set(wanted)
    _free(engine, [tp for tp in old if tp.pid not in wanted_set])

    fresh: list[TaskPid] = []
    for pid in wanted:
        tp = have.get(pid)
        if tp is None:
            tp = TaskPid(pid=pid, task=task)
            try:
                _alloc(engine, tp)
            except Exception as exc:
                log.warning(
                    "engine %s: alloc_pid_params(pid %d) failed: %s", _name(engine), pid, exc
                )
                if pid == main:  # only reached with an empty old list: nothing to free
                    task.pids[:] = []
                    return task.pids
                continue
        fresh.append(tp)
    task.pids[:] = fresh
    return task.pids


def _drop_all(task: Task, engine: Engine | None) -> None:
    """Empty ``task.pids``, freeing every entry."""
    _free(engine, list(task.pids))
    task.pids[:] = []


def release_task_pids(task: Task) -> None:
    """Free every pid of ``task`` (``free_pid_params`` each) and empty the list.

    For an engine's ``stop_task``: the pid list belongs to the engine's worker.
    """
    _drop_all(task, task.engine)
