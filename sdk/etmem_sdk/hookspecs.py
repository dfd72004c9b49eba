"""The engine contract: nine hooks named exactly like the fields of C ``struct engine_ops``.

Every hook is optional. The core decides what "implemented" means by asking pluggy whether an
engine registered a hookimpl for it (never by looking at a return value), and applies the C
original's behaviour for an absent op:

* no ``start_task``   -> ``project start`` fails for the project holding the engine;
* no ``stop_task``    -> skipped (logged);
* no ``eng_mgt_func`` -> the client gets ``error: invalid parameters``;
* any other op absent -> nothing to do.

Hooks signal failure by raising (``ConfigError`` for bad configuration, ``EngineError`` for
anything else); a return value is never an error code. Callers go through the typed
:class:`etmem_sdk.hooks.EngineHooks`, one method per hookspec here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import pluggy

if TYPE_CHECKING:
    from .model import ConfigSection, Engine, Reply, Task, TaskPid

PROJECT_NAME = "etmem"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def fill_eng_params(engine: Engine, config: ConfigSection) -> None:
    """Validate the ``[engine]`` section and set up ``engine.params``.

    C: ``int (*fill_eng_params)(GKeyFile *config, struct engine *eng)``.
    Called at ``obj add`` after the engine is linked to its project (``engine.project`` is set).
    ``config`` is a :class:`etmem_sdk.ConfigSection`. Raise ``ConfigError`` to refuse the engine;
    ``clear_eng_params`` is then *not* called.
    """


@hookspec(firstresult=True)
def clear_eng_params(engine: Engine) -> None:
    """Release what ``fill_eng_params`` set up. C: ``void (*clear_eng_params)(struct engine *eng)``.

    Called when the engine is deleted, after all its tasks were removed.
    """


@hookspec(firstresult=True)
def fill_task_params(task: Task, config: ConfigSection) -> None:
    """Validate the engine's own ``[task]`` keys and set up ``task.params``.

    C: ``int (*fill_task_params)(GKeyFile *config, struct task *tk)``.
    The core has already parsed the common keys (name, type, value, swap_flag, max_threads) and
    linked the task (``task.engine`` is set). Raise ``ConfigError`` to refuse the task;
    ``clear_task_params`` is then *not* called.
    """


@hookspec(firstresult=True)
def clear_task_params(task: Task) -> None:
    """Release ``task.params``. C: ``void (*clear_task_params)(struct task *tk)``."""


@hookspec(firstresult=True)
def start_task(engine: Engine, task: Task) -> None:
    """Start working on ``task`` (``project start``, or task add into a started project).

    C: ``int (*start_task)(struct engine *eng, struct task *tk)``.
    Raise to fail the start; the core then stops what it had already started.
    """


@hookspec(firstresult=True)
def stop_task(engine: Engine, task: Task) -> None:
    """Stop working on ``task``; must return promptly (within a second).

    C: ``void (*stop_task)(struct engine *eng, struct task *tk)``.
    """


@hookspec(firstresult=True)
def alloc_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Set up ``task_pid.params`` for a newly seen target pid.

    C: ``int (*alloc_pid_params)(struct engine *eng, struct task_pid **tk_pid)``.
    Raise to drop that pid from the task's list.
    """


@hookspec(firstresult=True)
def free_pid_params(engine: Engine, task_pid: TaskPid) -> None:
    """Release ``task_pid.params`` of a pid leaving the task's list.

    C: ``void (*free_pid_params)(struct engine *eng, struct task_pid **tk_pid)``.
    """


@hookspec(firstresult=True)
def eng_mgt_func(engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
    """Run the engine's private command ``cmd`` (``etmem engine CMD ...``).

    C: ``int (*eng_mgt_func)(struct engine *eng, struct task *tk, char *cmd, int fd)``.
    ``task`` is ``None`` when the client gave no ``-t``. Write text with ``reply.write``; it streams
    to the client. Raise (e.g. ``EngineError``) for an unknown command or bad arguments: the client
    then gets ``error: invalid parameters``.
    """


#: A hook's name: the op names in C ``struct engine_ops`` order (a ``Literal``, so a
#: misspelt name is a type error).
HookName = Literal[
    "fill_eng_params",
    "clear_eng_params",
    "fill_task_params",
    "clear_task_params",
    "start_task",
    "stop_task",
    "alloc_pid_params",
    "free_pid_params",
    "eng_mgt_func",
]

#: The op names in C ``struct engine_ops`` order.
ENGINE_OPS: tuple[str, ...] = get_args(HookName)
