"""The helper process of an ``isolate=yes`` engine: loads the policy with ``inproc`` and runs
each op etmemd sends (``python -m etmem_thirdparty_so.isolate_helper FD [ETMEMD_PID]``).

It keeps mirror ``Project``/``Engine``/``Task``/``TaskPid`` objects whose ``params`` hold the C
structs, updated from the snapshot that comes with every request (:mod:`.isolate` is the
parent side, :mod:`.isolate_wire` the protocol).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from typing import Any

from etmem_sdk import ConfigSection, Engine, EngineError, EtmemError, Project, Task, TaskPid

from . import inproc
from .isolate_wire import recv, send

_PR_SET_PDEATHSIG = 1


class _Mirror:
    """The helper's copies of the parent's objects; their ``params`` hold the C structs."""

    def __init__(self) -> None:
        self.project = Project(name="")
        self.engine = Engine(name="", kind="thirdparty", project=self.project)
        self.project.engines = [self.engine]
        self.tasks: dict[int, Task] = {}
        self.pids: dict[int, TaskPid] = {}

    def apply(self, snap: dict[str, Any]) -> None:
        self.engine.name = snap["engine"]
        if snap["project"] is not None:
            for key, value in snap["project"].items():
                setattr(self.project, key, value)
        listed = []
        for token, name, type_, value, max_threads, swap_flag, pids in snap["tasks"]:
            task = self.tasks.get(token)
            if task is None:
                task = self.tasks[token] = Task(name, type_, value, engine=self.engine)
            task.name, task.type, task.value = name, type_, value
            task.max_threads, task.swap_flag = max_threads, swap_flag
            task.pids = []
            for pid_token, pid, rate in pids:
                task_pid = self.pids.setdefault(pid_token, TaskPid(pid, task=task))
                task_pid.pid, task_pid.rt_swapin_rate = pid, rate
                task.pids.append(task_pid)
            listed.append(task)
        self.engine.tasks = listed

    def run(self, request: dict[str, Any], fd: int | None) -> Any:
        op = request["op"]
        engine = self.engine
        task = self.tasks.get(request["task"]) if request.get("task") is not None else None
        if "config" in request:
            config = ConfigSection(
                request["config"]["group"],
                request["config"]["items"],
                path=request["config"]["path"],
                text=request["config"]["text"],
                label=request["config"]["label"],
            )
        if op == "null_ops":
            return inproc.null_ops(engine)
        if op == "fill_eng_params":
            inproc.fill_eng_params(engine, config)
        elif op == "clear_eng_params":
            inproc.clear_eng_params(engine)
        elif op == "fill_task_params":
            try:
                inproc.fill_task_params(_listed(task, op), config)
            except BaseException:
                self.tasks.pop(request["task"], None)
                raise
        elif op == "clear_task_params":
            inproc.clear_task_params(_listed(task, op))
            self.tasks.pop(request["task"], None)
        elif op == "start_task":
            inproc.start_task(engine, _listed(task, op))
        elif op == "stop_task":
            inproc.stop_task(engine, _listed(task, op))
        elif op == "alloc_pid_params":
            token, pid, rate = request["pid"]
            task_pid = TaskPid(pid, task=task, rt_swapin_rate=rate)
            self.pids[token] = task_pid
            try:
                inproc.alloc_pid_params(engine, task_pid)
            except BaseException:
                self.pids.pop(token, None)
                raise
        elif op == "free_pid_params":
            freed = self.pids.pop(request["pid"], None)
            if freed is not None:
                inproc.free_pid_params(engine, freed)
        elif op == "eng_mgt_func":
            if fd is None:
                raise EngineError("eng_mgt_func: the request came without the reply's fd")
            try:
                inproc.mgt_to_fd(engine, task, request["cmd"], fd)
            finally:
                os.close(fd)
        else:
            raise EngineError(f"unknown request {op!r}")
        return None


def _listed(task: Task | None, op: str) -> Task:
    """The task a task op is about: one the request's snapshot listed."""
    if task is None:
        raise EngineError(f"{op}: the request names no task of the snapshot")
    return task


def _serve(sock: socket.socket) -> None:
    mirror = _Mirror()
    while (message := recv(sock)) is not None:
        request, fd = message
        answer: tuple[str, Any]
        try:
            mirror.apply(request.pop("snapshot"))
            answer = ("", mirror.run(request, fd))
        except EtmemError as exc:
            answer = (type(exc).__name__, str(exc))
        except Exception as exc:  # a bug on our side: report it, keep serving
            answer = ("EngineError", f"{type(exc).__name__}: {exc}")
        send(sock, answer)
        if request["op"] == "clear_eng_params":
            return


def main(argv: list[str] | None = None) -> None:
    """Entry of the helper process: serve requests on the inherited socket until it closes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:  # die with etmemd, even if it is killed and cannot end us
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != int(args[1]):  # etmemd died before the prctl took effect
            os._exit(1)
    sock = socket.socket(fileno=int(args[0]))
    try:
        _serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
