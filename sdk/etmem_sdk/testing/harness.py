"""An in-process engine driver: validates a plugin against the hookspecs and calls its hooks in
the daemon's order, without a daemon (``etmem_engine`` makes one)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import params
from ..hooks import EngineHooks
from ..model import PAGE_SCAN, BufferReply, ConfigSection, Engine, Project, Task
from ..worker import PeriodicWorker


def _section(group: str, items: Mapping[str, Any] | None, label: str) -> ConfigSection:
    return ConfigSection(group, {k: str(v) for k, v in (items or {}).items()}, label=label)


def load_entry_point(name: str, group: str = "etmem.engines") -> Any:
    """Import the engine installed as entry point ``name`` (what etmemd would load for
    ``[engine] name=NAME``); ``LookupError`` if none is installed under that name."""
    found = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    if not found:
        raise LookupError(f"no {group!r} entry point named {name!r} is installed")
    return found[0].load()


def _find_worker(params: Any) -> PeriodicWorker | None:
    """The PeriodicWorker an engine keeps in ``task.params`` (attribute or key ``worker``, or any
    attribute holding one)."""
    if params is None:
        return None
    if isinstance(params, PeriodicWorker):
        return params
    if isinstance(params, Mapping):
        candidates = list(params.values())
    else:
        candidates = list(getattr(params, "__dict__", {}).values())
        candidates += [getattr(params, s, None) for s in getattr(type(params), "__slots__", ())]
    return next((c for c in candidates if isinstance(c, PeriodicWorker)), None)


class EngineHarness:
    """Drive one engine plugin the way etmemd does, in this process, without etmem_core.

    The plugin is validated with pluggy against the hookspecs (a misspelt hook or argument fails
    here as it would in the daemon). Core keys get light checks only (integers are integers);
    the daemon's full rules apply once the policy runs under etmemd (see
    docs/writing-a-policy.md for driving a real etmemd from a test).
    """

    def __init__(self, plugin: Any, name: str | None = None) -> None:
        if isinstance(plugin, str):  # an installed engine, by its entry-point name
            name = name or plugin
            plugin = load_entry_point(plugin)
        self.name = name or "engine"
        #: the plugin's hooks, validated as the daemon's registry validates them
        self.hooks = EngineHooks(plugin)
        self.pm = self.hooks.pm
        self.implements = self.hooks.implemented
        self.project: Project | None = None
        self.engine: Engine | None = None

    @property
    def hook(self) -> Any:
        """The pluggy hook relay of the plugin."""
        return self.pm.hook

    def _call(self, hook: Callable[..., None], /, **kwargs: Any) -> None:
        """``hook`` (an :class:`EngineHooks` method) if the plugin implements it."""
        if hook.__name__ in self.implements:
            hook(self.hooks, **kwargs)

    def add(
        self,
        project: Mapping[str, Any] | None = None,
        engine: Mapping[str, Any] | None = None,
        tasks: Sequence[Mapping[str, Any]] = (),
        *,
        label: str = "test.conf",
    ) -> Engine:
        """``obj add`` of one project with this engine and ``tasks``; returns the engine.

        Project keys default to ``loop=1``, ``sleep=0`` and ``interval=3600`` -- so the worker's
        own timer stays quiet and :meth:`tick` decides when cycles happen; give ``interval=1``
        to let it run by itself. Task keys default to ``name=task<N>``, ``type=pid``.
        """
        if self.engine is not None:
            raise RuntimeError("this harness already holds an engine; make another harness")
        pkeys = {"name": "test", "scan_type": PAGE_SCAN, "loop": 1, "interval": 3600, "sleep": 0}
        pkeys.update(project or {})
        psec = _section("project", pkeys, label)
        proj = Project(
            name=psec["name"],
            scan_type=psec["scan_type"],
            loop=params.get_int(psec, "loop", 1),
            interval=params.get_int(psec, "interval", 1),
            sleep=params.get_int(psec, "sleep", 0),
            sysmem_threshold=params.get_int(
                psec, "sysmem_threshold", -1, 100, required=False, default=-1
            ),
            config=psec,
        )
        esec = _section(
            "engine", {"name": self.name, "project": proj.name, **(engine or {})}, label
        )
        eng = Engine(
            name=self.name,
            kind=self.name,
            project=proj,
            config=esec,
            hooks=self.hooks,
            implements=self.implements,
        )
        proj.engines.insert(0, eng)
        self._call(EngineHooks.fill_eng_params, engine=eng, config=esec)
        self.project, self.engine = proj, eng
        for n, keys in enumerate(tasks, 1):
            self.add_task(keys, label=label, default_name=f"task{n}")
        return eng

    def add_task(
        self, keys: Mapping[str, Any], *, label: str = "test.conf", default_name: str = "task"
    ) -> Task:
        """Add one task (``fill_task_params``; ``start_task`` too if started)."""
        eng, proj = self._need()
        tkeys = {"name": default_name, "type": "pid", "project": proj.name, "engine": self.name}
        tkeys.update(keys)
        tsec = _section("task", tkeys, label)
        task = Task(
            name=tsec["name"],
            type=params.get_choice(tsec, "type", ("pid", "name")),
            value=params.get_str(tsec, "value"),
            max_threads=params.get_int(tsec, "max_threads", 1, required=False, default=1),
            swap_flag=params.get_yes_no(tsec, "swap_flag", required=False, default=False),
            engine=eng,
            config=tsec,
        )
        # etmemd's order: linked first (newest first), then filled, then started if the project
        # runs; a failure undoes what was done and unlinks the task
        eng.tasks.insert(0, task)
        filled = False
        try:
            self._call(EngineHooks.fill_task_params, task=task, config=tsec)
            filled = True
            if proj.start:
                self._call(EngineHooks.start_task, engine=eng, task=task)
        except BaseException:
            try:
                if filled:
                    self._call(EngineHooks.clear_task_params, task=task)
            finally:
                eng.tasks.remove(task)
            raise
        return task

    def _need(self) -> tuple[Engine, Project]:
        if self.engine is None or self.project is None:
            raise RuntimeError("add() a project first")
        return self.engine, self.project

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (default: the only one)."""
        eng, _ = self._need()
        if name is None:
            if len(eng.tasks) != 1:
                raise ValueError(f"{len(eng.tasks)} tasks: name one")
            return eng.tasks[0]
        found = eng.find_task(name)
        if found is None:
            raise KeyError(name)
        return found

    def start(self) -> None:
        """``project start``: ``start_task`` for every task."""
        eng, proj = self._need()
        if "start_task" not in self.implements:
            raise RuntimeError(f"engine {self.name} has no start_task: etmemd could not start it")
        for task in eng.tasks:  # newest first, as etmemd
            self._call(EngineHooks.start_task, engine=eng, task=task)
        proj.start = True

    def tick(self, times: int = 1) -> None:
        """Run ``times`` cycles of every task's worker now, in order, waiting for each.

        Works for engines that keep their :class:`~etmem_sdk.worker.PeriodicWorker` in
        ``task.params`` (as an attribute, or under a ``worker`` key).
        """
        eng, proj = self._need()
        if not proj.start:
            raise RuntimeError("start() the project first")
        workers = []
        for task in reversed(eng.tasks):
            w = _find_worker(task.params)
            if w is None:
                raise RuntimeError(f"task {task.name}: no PeriodicWorker in task.params to tick")
            workers.append(w)
        for _ in range(times):
            for w in workers:
                w.run_once()

    def command(self, cmd: str, task: str | None = None) -> str:
        """``etmem engine CMD [-t TASK]``: the private command's output as text."""
        eng, _ = self._need()
        reply = BufferReply()
        tk = self.task(task) if task is not None else None
        self.hooks.eng_mgt_func(engine=eng, task=tk, cmd=cmd, reply=reply)
        return reply.text

    def stop(self) -> None:
        """``project stop``: ``stop_task`` for every task."""
        eng, proj = self._need()
        if not proj.start:
            return
        for task in eng.tasks:
            self._call(EngineHooks.stop_task, engine=eng, task=task)
        proj.start = False

    def remove(self) -> None:
        """``obj del`` of everything: stop, then ``clear_task_params`` and ``clear_eng_params``."""
        if self.engine is None:
            return
        eng = self.engine
        try:
            self.stop()
        finally:
            for task in list(eng.tasks):
                self._call(EngineHooks.clear_task_params, task=task)
                eng.tasks.remove(task)
            self._call(EngineHooks.clear_eng_params, engine=eng)
            self.engine = self.project = None
