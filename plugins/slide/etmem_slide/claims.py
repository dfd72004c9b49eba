"""One scanner per process: which slide task currently scans which pid.

This registry is the engine's ONE piece of process-wide state, on purpose: the rule it enforces
("two tasks never scan the same pid at the same time") spans projects, and a project's objects
cannot see another project's. Everything else lives in ``engine/task/task_pid.params``.
A pid is claimed when it joins a task's pid list (``alloc_pid_params``) and released when it
leaves it (``free_pid_params``) or the task stops.

Each task's pids are also kept by task, so a task gives its claims up in time proportional to
what it holds: stopping N tasks must not scan every claim N times.
"""

from __future__ import annotations

import threading

from etmem_sdk import Task

_lock = threading.Lock()
_owners: dict[int, Task] = {}
#: the reverse of ``_owners``: the pids each task holds (Task compares by identity)
_held: dict[Task, set[int]] = {}


def describe(task: Task) -> str:
    """``task T of project P`` — how errors name the task holding a pid."""
    project = task.project
    where = f" of project {project.name}" if project is not None else ""
    return f"task {task.name}{where}"


def claim(pid: int, task: Task) -> Task | None:
    """Claim ``pid`` for ``task``. Returns None on success, else the task already scanning it."""
    with _lock:
        owner = _owners.get(pid)
        if owner is not None and owner is not task:
            return owner
        _owners[pid] = task
        _held.setdefault(task, set()).add(pid)
        return None


def release(pid: int, task: Task) -> None:
    """Give ``pid`` up if ``task`` holds it."""
    with _lock:
        if _owners.get(pid) is task:
            del _owners[pid]
            pids = _held.get(task)
            if pids is not None:
                pids.discard(pid)
                if not pids:
                    del _held[task]


def release_all(task: Task) -> None:
    """Give up every pid ``task`` holds (task stopped)."""
    with _lock:
        for pid in _held.pop(task, ()):
            if _owners.get(pid) is task:
                del _owners[pid]


def owner(pid: int) -> Task | None:
    """The task scanning ``pid``, if any."""
    with _lock:
        return _owners.get(pid)
