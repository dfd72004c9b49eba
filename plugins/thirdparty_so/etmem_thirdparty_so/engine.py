"""The ``thirdparty`` engine: runs a vendor's C policy (.so) written for the original etmemd.

``[engine] name=thirdparty`` with ``eng_name`` (the engine's identity in its project), ``libname``,
``ops_name``, optional ``isolate=yes|no`` and the policy's own keys. Each hook forwards to the op
of the same name in the policy's ``struct engine_ops`` — in this process (``inproc``), or, with
``isolate=yes``, in a helper process of its own (``isolate``) so a crash in vendor code only fails
that engine. All nine hooks are implemented, so a NULL op gets the original's behaviour inside
the hook (see ``inproc``).
"""

from __future__ import annotations

from types import ModuleType

from etmem_sdk import ConfigError, ConfigSection, Engine, Reply, Task, TaskPid, hookimpl

from . import inproc, isolate

ISOLATE_KEY = "isolate"


def _isolated(config: ConfigSection) -> bool:
    value = config.get(ISOLATE_KEY, "no")
    if value not in ("yes", "no"):
        raise ConfigError(f"{config.where(ISOLATE_KEY)}: must be yes or no")
    return value == "yes"


def _backend(engine: Engine | None) -> ModuleType:
    if engine is not None and isinstance(engine.params, isolate.IsolatedEngineParams):
        return isolate
    return inproc


#: Ops whose absence the core itself acts on at engine level (C checks the op pointer there).
_ENGINE_LEVEL_OPS = frozenset({"start_task", "stop_task", "eng_mgt_func"})


@hookimpl
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Check and load the policy, then call its ``fill_eng_params`` with a real GKeyFile.

    The ops among start_task/stop_task/eng_mgt_func that the policy left NULL are then taken
    out of ``engine.implements``, so the core applies the original's engine-level rules, e.g.
    a NULL start_task fails ``project start`` even when the engine has no task. (Our hooks
    also handle a NULL op themselves, for callers that do not look at ``implements``.)
    """
    inproc.engine_keys(config)
    backend = isolate if _isolated(config) else inproc
    backend.fill_eng_params(engine, config)
    if engine.implements:
        try:
            nulls = backend.null_ops(engine)
        except BaseException:
            backend.clear_eng_params(engine)  # the core will not: to it, the engine was refused
            raise
        engine.implements = engine.implements - (nulls & _ENGINE_LEVEL_OPS)


@hookimpl
def clear_eng_params(engine: Engine) -> None:
    """Call the policy's ``clear_eng_params``, then unload it (dlclose / end its process)."""
    _backend(engine).clear_eng_params(engine)


@hookimpl
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Give the task its C ``struct task`` and call the policy's ``fill_task_params``."""
    _backend(task.engine).fill_task_params(task, config)


@hookimpl
def clear_task_params(task: Task) -> None:
    """Call the policy's ``clear_task_params``."""
    _backend(task.engine).clear_task_params(task)


@hookimpl
def start_task(engine: Engine, task: Task) -> None:
    """Call the policy's ``start_task``; a NULL op or a non-zero return fails the start."""
    _backend(engine).start_task(engine, task)


@hookimpl
def stop_task(engine: Engine, task: Task) -> None:
    """Call the policy's ``stop_task``; a NULL op is skipped, as in the original."""
    _backend(engine).stop_task(engine, task)


@hookimpl
def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Give the pid its C ``struct task_pid`` and call the policy's ``alloc_pid_params``."""
    _backend(engine).alloc_pid_params(engine, task_pid)


@hookimpl
def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Call the policy's ``free_pid_params``."""
    _backend(engine).free_pid_params(engine, task_pid)


@hookimpl
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """Run the policy's ``eng_mgt_func``; what it writes to its fd streams to the client."""
    _backend(engine).eng_mgt_func(engine, task, cmd, reply)
