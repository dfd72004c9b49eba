"""Process lookups straight from /proc: liveness, names, direct children, kernel threads.

The C daemon forks ``pgrep -x`` / ``pgrep -P`` for these; reading /proc gives the same answers
without a fork per cycle. Every function takes ``proc_root`` so tests can use a fake tree.
"""

from __future__ import annotations

import os
from typing import NamedTuple

#: ``task_struct.flags`` bit set on kernel threads (include/linux/sched.h).
PF_KTHREAD = 0x00200000
#: The kernel keeps ``comm`` to 15 characters plus a NUL (TASK_COMM_LEN 16).
COMM_LEN = 15


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` that etmem needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    #: clock ticks after boot when the process started: with ``pid``, names one process even
    #: after the pid number is reused (0 when the file has no such field)
    starttime: int = 0


def read_stat(pid: int, proc_root: str = "/proc") -> ProcStat | None:
    """Parse ``/proc/PID/stat``; ``None`` if the process is gone or the file is unreadable."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may itself hold spaces and parentheses: it runs from the first '(' to the last ')'.
    start, end = raw.find(b"("), raw.rfind(b")")
    if start < 0 or end < start:
        return None
    rest = raw[end + 1 :].split()
    try:
        return ProcStat(
            pid=int(raw[:start]),
            comm=raw[start + 1 : end].decode(errors="replace"),
            state=rest[0].decode(),
            ppid=int(rest[1]),
            flags=int(rest[6]),
            starttime=int(rest[19]) if len(rest) > 19 else 0,
        )
    except (IndexError, ValueError):
        return None


def alive(pid: int, proc_root: str = "/proc") -> bool:
    """True while ``/proc/PID`` exists (the C daemon's ``access()`` check)."""
    return pid > 0 and os.path.isdir(f"{proc_root}/{pid}")


def comm(pid: int, proc_root: str = "/proc") -> str | None:
    """The process name (at most 15 characters), or ``None`` if the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        st = read_stat(pid, proc_root)
        return st.comm if st is not None else None


def all_pids(proc_root: str = "/proc") -> list[int]:
    """Every process id listed in ``proc_root`` (thread-group leaders only), ascending."""
    try:
        names = os.listdir(proc_root)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def pids_by_name(name: str, proc_root: str = "/proc") -> list[int]:
    """Pids whose name equals ``name`` exactly (like ``pgrep -x``), ascending.

    Names longer than the kernel's 15 characters can never match, as with pgrep.
    """
    if not name or len(name) > COMM_LEN:
        return []
    found = []
    for pid in all_pids(proc_root):
        st = read_stat(pid, proc_root)
        if st is not None and st.comm == name:
            found.append(pid)
    return found


def children_of(pid: int, proc_root: str = "/proc") -> list[int]:
    """Direct child processes of ``pid`` (not threads, not grandchildren), ascending.

    Uses ``/proc/PID/task/*/children`` when the kernel offers it (children of any thread of
    the process count, as with ``pgrep -P``), else scans every process's parent pid.
    """
    task_dir = f"{proc_root}/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        tids = []
    kids: set[int] = set()
    have_children_files = False
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/children", "rb") as f:
                data = f.read()
        except OSError:
            continue
        have_children_files = True
        kids.update(int(k) for k in data.split())
    if have_children_files:
        return sorted(k for k in kids if alive(k, proc_root))
    return [
        p
        for p in all_pids(proc_root)
        if (st := read_stat(p, proc_root)) is not None and st.ppid == pid and p != pid
    ]


def is_kernel_thread(pid: int, proc_root: str = "/proc") -> bool:
    """True for kernel threads (``PF_KTHREAD``): they have no user memory to manage."""
    st = read_stat(pid, proc_root)
    if st is None:
        return False
    return bool(st.flags & PF_KTHREAD) or pid == 2 or st.ppid == 2
