"""Calling a policy loaded into this process: the nine ops, each forwarding to the C op.

The C structs a policy receives live in our objects' ``params``. A NULL op gets the original's
behaviour here: NULL ``start_task`` fails the start, NULL ``eng_mgt_func`` is "invalid
parameters", other NULL ops do nothing. ``engine.py`` calls these directly, or from the helper
process of an ``isolate=yes`` engine (``isolate_helper.py``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from etmem_sdk import ConfigError, ConfigSection, Engine, EngineError, Reply, Task, TaskPid
from etmem_sdk.keyfile import keyfile_text

from . import cstate, glib, loader
from .cstate import EngineState, PidState, TaskState

log = logging.getLogger(__name__)

MAX_ENG_NAME_LEN = 64
REQUIRED_KEYS = ("eng_name", "libname", "ops_name")


def _required(config: ConfigSection, key: str) -> str:
    value = config.get(key)
    if value is None:
        raise ConfigError(f"{config.label}: key {key} not set for group {config.group}")
    if value == "":
        raise ConfigError(f"{config.where(key)}: must not be empty")
    return value


def _keyfile_text(config: ConfigSection) -> str:
    """The text the policy's GKeyFile is loaded from: the section's ``text``, which the core
    gives in key-file form (the object file itself, or for TOML a rendering of the project, the
    engine and the task, so a policy can read another group as it could in the original); a
    section without text (built by hand) becomes a key file holding its own group."""
    if config.text:
        return config.text
    return keyfile_text([(config.group, dict(config))])


def _state(engine: Engine) -> EngineState:
    state = engine.params
    if not isinstance(state, EngineState):
        raise EngineError(f"engine {engine.name}: its policy is not loaded")
    return state


def null_ops(engine: Engine) -> frozenset[str]:
    """The ops the loaded policy left NULL."""
    state = _state(engine)
    return frozenset(name for name, *_ in type(state.ops)._fields_ if not getattr(state.ops, name))


def engine_keys(config: ConfigSection) -> tuple[str, str, str]:
    """``(eng_name, libname, ops_name)``, present, non-empty, ``eng_name`` at most 64 chars."""
    eng_name, libname, ops_name = (_required(config, key) for key in REQUIRED_KEYS)
    if len(eng_name) > MAX_ENG_NAME_LEN:
        raise ConfigError(f"{config.where('eng_name')}: longer than {MAX_ENG_NAME_LEN} characters")
    return eng_name, libname, ops_name


def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Check and load the policy, then call its ``fill_eng_params`` with a real GKeyFile."""
    eng_name, libname, ops_name = engine_keys(config)
    loader.scan_lib()  # before any policy: it may need the library's symbols or SONAME
    glib.libglib()
    path, lib = loader.open_checked_library(libname)
    try:
        ops = loader.find_ops(lib, ops_name)
        state = EngineState(lib=lib, ops=ops, libname=path, ops_name=ops_name)
        engine.params = state
        with state.lock:
            cstate.sync_engine(engine)
            op = state.op("fill_eng_params")
            if op is not None:
                with glib.keyfile(_keyfile_text(config)) as keyfile:
                    ret = op(keyfile, ctypes.byref(state.c))
                if ret != 0:
                    raise ConfigError(
                        f"{config.label}: engine {eng_name}: {ops_name}.fill_eng_params "
                        f"returned {ret}"
                    )
    except BaseException:
        engine.params = None
        loader.close_library(lib)
        raise


def clear_eng_params(engine: Engine) -> None:
    """Call the policy's ``clear_eng_params``, then dlclose it."""
    state = engine.params
    if not isinstance(state, EngineState):
        return
    try:
        with state.lock:
            op = state.op("clear_eng_params")
            if op is not None:
                op(ctypes.byref(cstate.sync_engine(engine).c))
    finally:
        engine.params = None
        if engine.project is not None:
            # unlink our struct from the other .so engines of the project before it goes away
            state.c.next = None
        loader.close_library(state.lib)


def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Give the task its C ``struct task`` and call the policy's ``fill_task_params``."""
    state = _state(cstate.engine_of(task))
    task.params = TaskState()
    try:
        with state.lock:
            cstate.sync_task(task)
            op = state.op("fill_task_params")
            if op is not None:
                with glib.keyfile(_keyfile_text(config)) as keyfile:
                    ret = op(keyfile, ctypes.byref(task.params.c))
                if ret != 0:
                    raise ConfigError(
                        f"{config.label}: task {task.name}: {state.ops_name}.fill_task_params "
                        f"returned {ret}"
                    )
    except BaseException:
        task.params = None
        raise


def clear_task_params(task: Task) -> None:
    """Call the policy's ``clear_task_params``; the C struct goes with ``task.params``."""
    if not isinstance(task.params, TaskState):
        return
    state = _state(cstate.engine_of(task))
    try:
        with state.lock:
            op = state.op("clear_task_params")
            if op is not None:
                op(ctypes.byref(cstate.sync_task(task).c))
    finally:
        task.params = None


def start_task(engine: Engine, task: Task) -> None:
    """Call the policy's ``start_task``; a NULL op or a non-zero return fails the start."""
    state = _state(engine)
    with state.lock:
        op = state.op("start_task")
        if op is None:
            raise EngineError(f"engine {engine.name}: {state.ops_name} has no start_task")
        cstate.sync_engine(engine)
        ret = op(ctypes.byref(state.c), ctypes.byref(cstate.sync_task(task).c))
    if ret != 0:
        raise EngineError(f"engine {engine.name}: start_task of task {task.name} returned {ret}")


def stop_task(engine: Engine, task: Task) -> None:
    """Call the policy's ``stop_task``; a NULL op is skipped, as in the original."""
    state = _state(engine)
    with state.lock:
        op = state.op("stop_task")
        if op is None:
            log.error("engine %s: %s has no stop_task, skipped", engine.name, state.ops_name)
            return
        op(ctypes.byref(cstate.sync_engine(engine).c), ctypes.byref(cstate.sync_task(task).c))


def _task_of(task_pid: TaskPid) -> Task | None:
    return task_pid.task if task_pid.task is not None and task_pid.task.params else None


def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Give the pid its C ``struct task_pid`` and call the policy's ``alloc_pid_params``."""
    state = _state(engine)
    task_pid.params = PidState()
    with state.lock:
        cstate.sync_engine(engine)
        cstate.sync_pid(task_pid, _task_of(task_pid))
        op = state.op("alloc_pid_params")
        if op is None:
            return
        ptr = ctypes.pointer(task_pid.params.c)
        ret = op(ctypes.byref(state.c), ctypes.byref(ptr))
    if ret != 0:
        task_pid.params = None
        raise EngineError(f"engine {engine.name}: alloc_pid_params({task_pid.pid}) returned {ret}")


def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Call the policy's ``free_pid_params``; the C struct goes with ``task_pid.params``."""
    if not isinstance(task_pid.params, PidState):
        return
    state = _state(engine)
    try:
        with state.lock:
            op = state.op("free_pid_params")
            if op is not None:
                cstate.sync_engine(engine)
                ptr = ctypes.pointer(cstate.sync_pid(task_pid, _task_of(task_pid)).c)
                op(ctypes.byref(state.c), ctypes.byref(ptr))
    finally:
        task_pid.params = None


def _relay(fd: int, reply: Reply) -> None:
    """Copy what the policy writes to ``fd`` to the client until the write end is closed.

    Keeps draining after the client went away, so the policy never blocks on a full pipe.
    """
    sink: Reply | None = reply
    while chunk := os.read(fd, 65536):
        if sink is None:
            continue
        try:
            sink.write(chunk)
        except Exception:  # a dead client must not wedge the policy
            log.warning("engine output could not be sent to the client; discarding the rest")
            sink = None


def mgt_to_fd(engine: Engine, task: Task | None, cmd: str, fd: int) -> None:
    """Run the policy's ``eng_mgt_func`` writing to ``fd``; non-zero or NULL -> ``EngineError``."""
    state = _state(engine)
    op = state.op("eng_mgt_func")
    if op is None:
        raise EngineError(f"engine {engine.name}: {state.ops_name} has no eng_mgt_func")
    with state.lock:
        cstate.sync_engine(engine)
        c_task = ctypes.byref(cstate.sync_task(task).c) if task is not None else None
        ret = op(ctypes.byref(state.c), c_task, cmd.encode(), fd)
    if ret != 0:
        raise EngineError(f"engine {engine.name}: eng_mgt_func({cmd!r}) returned {ret}")


def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """Run the policy's ``eng_mgt_func`` with a pipe whose bytes stream to ``reply``."""
    with output_pipe(reply) as write_fd:
        mgt_to_fd(engine, task, cmd, write_fd)


@contextmanager
def output_pipe(reply: Reply) -> Iterator[int]:
    """A pipe's write end; what is written to it streams to ``reply`` until the block ends."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    # drain concurrently: a policy writing more than a pipe buffer would otherwise block forever
    relay = threading.Thread(target=_relay, args=(read_fd, reply), daemon=True)
    relay.start()
    try:
        yield write_fd
    finally:
        os.close(write_fd)
        relay.join()
        os.close(read_fd)
