"""The typed door to one engine plugin's hooks: one method per hookspec.

Callers write ``engine.hooks.start_task(engine=eng, task=tk)``, never a hook name in a string,
so a misspelt hook or argument is a type error (and an ``AttributeError`` at the first call)
and grep finds every call of a hook. ``tests/test_hooks_facade.py`` keeps the methods and the
hookspecs in step, argument names included.

The plugin is registered in its own pluggy manager checked against the hookspecs; the daemon's
registry and the SDK's test harness both build it here, so they validate plugins alike.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .hookspecs import HookName

if TYPE_CHECKING:
    from .model import ConfigSection, Engine, Reply, Task, TaskPid


class EngineHooks:
    """One engine plugin, validated against the hookspecs, called through typed methods.

    Raises pluggy's ``PluginValidationError`` (or whatever the plugin's attributes raise) when
    the plugin does not match the hookspecs. Calling a hook the plugin does not implement
    returns ``None``; callers that apply the C original's rules for an absent op ask
    :meth:`implements` (or ``Engine.implements``, which an engine may narrow) first.
    """

    def __init__(self, plugin: object) -> None:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        pm.register(plugin)
        pm.check_pending()
        self.plugin = plugin
        #: the plugin's own pluggy manager (for tools that want pluggy's view of it)
        self.pm = pm
        self._relay = pm.hook
        #: names of the hooks the plugin has a hookimpl for, in no order
        self.implemented: frozenset[str] = frozenset(
            caller.name for caller in pm.get_hookcallers(plugin) or ()
        )

    def implements(self, name: HookName) -> bool:
        """Whether the plugin has a hookimpl for ``name``; an unknown name is a ``ValueError``
        (a typo must not read as "not implemented")."""
        if name not in hookspecs.ENGINE_OPS:
            raise ValueError(f"no engine hook is called {name!r}")
        return name in self.implemented

    def __repr__(self) -> str:
        return f"EngineHooks({self.plugin!r})"

    def batch(
        self, hook: Callable[..., None], calls: Iterable[Mapping[str, Any]]
    ) -> list[Callable[[], None]]:
        """One call of ``hook`` (a method of this class, ``EngineHooks.fill_task_params``) for
        each keyword-argument mapping of ``calls``, made ready to run: the core calls
        ``fill_task_params`` once for each task of a file, and a file may hold 10^5.

        Each is the same call as the method (one call of the op per task, as the hookspecs
        say), but when the plugin's only hookimpl of it is a plain function, running it calls
        that function directly: pluggy's dispatch, built for many hookimpls and wrappers,
        costs more per call than a simple hook does. A missing argument is a
        ``pluggy.HookCallError`` here, before any call is made.
        """
        name = hook.__name__
        if name not in hookspecs.ENGINE_OPS:
            raise ValueError(f"no engine hook is called {name!r}")
        impls = getattr(self._relay, name).get_hookimpls()
        if len(impls) != 1 or impls[0].hookwrapper or impls[0].wrapper or impls[0].kwargnames:
            return [functools.partial(hook, self, **kwargs) for kwargs in calls]
        function = impls[0].function
        argnames = impls[0].argnames
        partial = functools.partial
        try:
            if not argnames:
                return [partial(function) for _ in calls]
            if len(argnames) == 1:
                (name,) = argnames
                return [partial(function, c[name]) for c in calls]
            # one C call per call for the arguments, not a Python loop over their names
            args = operator.itemgetter(*argnames)
            return [partial(function, *args(c)) for c in calls]
        except KeyError as exc:  # as pluggy says it
            raise pluggy.HookCallError(f"hook call must provide argument {exc.args[0]!r}") from None

    # One method per hookspec, in C ``struct engine_ops`` order. Keyword-only, like every call
    # the core makes, so the names are checked as well as the count.

    def fill_eng_params(self, *, engine: Engine, config: ConfigSection) -> None:
        """See :func:`etmem_sdk.hookspecs.fill_eng_params`."""
        self._relay.fill_eng_params(engine=engine, config=config)

    def clear_eng_params(self, *, engine: Engine) -> None:
        """See :func:`etmem_sdk.hookspecs.clear_eng_params`."""
        self._relay.clear_eng_params(engine=engine)

    def fill_task_params(self, *, task: Task, config: ConfigSection) -> None:
        """See :func:`etmem_sdk.hookspecs.fill_task_params`."""
        self._relay.fill_task_params(task=task, config=config)

    def clear_task_params(self, *, task: Task) -> None:
        """See :func:`etmem_sdk.hookspecs.clear_task_params`."""
        self._relay.clear_task_params(task=task)

    def start_task(self, *, engine: Engine, task: Task) -> None:
        """See :func:`etmem_sdk.hookspecs.start_task`."""
        self._relay.start_task(engine=engine, task=task)

    def stop_task(self, *, engine: Engine, task: Task) -> None:
        """See :func:`etmem_sdk.hookspecs.stop_task`."""
        self._relay.stop_task(engine=engine, task=task)

    def alloc_pid_params(self, *, engine: Engine, task_pid: TaskPid) -> None:
        """See :func:`etmem_sdk.hookspecs.alloc_pid_params`."""
        self._relay.alloc_pid_params(engine=engine, task_pid=task_pid)

    def free_pid_params(self, *, engine: Engine, task_pid: TaskPid) -> None:
        """See :func:`etmem_sdk.hookspecs.free_pid_params`."""
        self._relay.free_pid_params(engine=engine, task_pid=task_pid)

    def eng_mgt_func(self, *, engine: Engine, task: Task | None, cmd: str, reply: Reply) -> None:
        """See :func:`etmem_sdk.hookspecs.eng_mgt_func`."""
        self._relay.eng_mgt_func(engine=engine, task=task, cmd=cmd, reply=reply)
