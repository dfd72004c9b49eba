"""EngineHooks, the typed door to an engine's hooks: one method per hookspec, the same argument
names and types, and no caller naming a hook in a string."""

from __future__ import annotations

import functools
import inspect
import os
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
from conftest import python_calls
from etmem_sdk import (
    BufferReply,
    ConfigSection,
    Engine,
    EngineError,
    Task,
    hookimpl,
    hookspecs,
    model,
)
from etmem_sdk.hooks import EngineHooks, HookName
from pluggy import HookCallError, PluginValidationError

from etmem_core.errors import OptError
from etmem_core.lifecycle import ObjectStore
from etmem_core.registry import EngineRegistry

ROOT = Path(__file__).resolve().parent.parent
#: EngineHooks' own members that are not hooks
NOT_HOOKS = {"implements", "batch"}


def _facade_methods() -> dict[str, Any]:
    return {
        name: fn
        for name, fn in vars(EngineHooks).items()
        if inspect.isfunction(fn) and not name.startswith("_") and name not in NOT_HOOKS
    }


def test_one_facade_method_per_hookspec_and_no_other() -> None:
    assert tuple(_facade_methods()) == hookspecs.ENGINE_OPS  # C engine_ops order too
    # every hook name is a hookspec (ENGINE_OPS is derived from the HookName literal)
    specs = {n for n, f in vars(hookspecs).items() if hasattr(f, f"{hookspecs.PROJECT_NAME}_spec")}
    assert set(get_args(HookName)) == specs


@pytest.mark.parametrize("op", hookspecs.ENGINE_OPS)
def test_facade_method_takes_the_hookspec_arguments(op: str) -> None:
    spec = getattr(hookspecs, op)
    method = _facade_methods()[op]
    spec_params = list(inspect.signature(spec).parameters.values())
    params = list(inspect.signature(method).parameters.values())[1:]  # past self
    assert [p.name for p in params] == [p.name for p in spec_params]
    # keyword-only: every call names its arguments, so a swapped pair cannot slip through
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    # the names both modules import only while type checking
    names = vars(model)
    assert get_type_hints(method, names) == get_type_hints(spec, names)


class Every:
    """A plugin implementing every hook; records the arguments it got."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    def _log(self, op: str, **kw: Any) -> None:
        self.got.append((op, kw))

    @hookimpl
    def fill_eng_params(self, engine, config):
        self._log("fill_eng_params", engine=engine, config=config)

    @hookimpl
    def clear_eng_params(self, engine):
        self._log("clear_eng_params", engine=engine)

    @hookimpl
    def fill_task_params(self, task, config):
        self._log("fill_task_params", task=task, config=config)

    @hookimpl
    def clear_task_params(self, task):
        self._log("clear_task_params", task=task)

    @hookimpl
    def start_task(self, engine, task):
        self._log("start_task", engine=engine, task=task)

    @hookimpl
    def stop_task(self, engine, task):
        self._log("stop_task", engine=engine, task=task)

    @hookimpl
    def alloc_pid_params(self, engine, task_pid):
        self._log("alloc_pid_params", engine=engine, task_pid=task_pid)

    @hookimpl
    def free_pid_params(self, engine, task_pid):
        self._log("free_pid_params", engine=engine, task_pid=task_pid)

    @hookimpl
    def eng_mgt_func(self, engine, task, cmd, reply):
        self._log("eng_mgt_func", engine=engine, task=task, cmd=cmd, reply=reply)
        reply.write(f"did {cmd}\n")


def test_each_method_reaches_its_hookimpl_with_its_arguments() -> None:
    plugin = Every()
    h = EngineHooks(plugin)
    assert h.implemented == frozenset(hookspecs.ENGINE_OPS)
    eng, task, section = Engine("e", "e"), Task("t", "pid", "1"), ConfigSection("task", {})
    reply = BufferReply()
    h.fill_task_params(task=task, config=section)
    h.eng_mgt_func(engine=eng, task=None, cmd="showstats", reply=reply)
    h.stop_task(engine=eng, task=task)
    assert plugin.got == [
        ("fill_task_params", {"task": task, "config": section}),
        ("eng_mgt_func", {"engine": eng, "task": None, "cmd": "showstats", "reply": reply}),
        ("stop_task", {"engine": eng, "task": task}),
    ]
    assert reply.text == "did showstats\n"


def test_implements_says_which_hooks_have_a_hookimpl_and_refuses_unknown_names() -> None:
    class StartOnly:
        @hookimpl
        def start_task(self, engine, task):
            raise EngineError("no")

    h = EngineHooks(StartOnly())
    assert h.implements("start_task") and not h.implements("stop_task")
    assert h.implemented == {"start_task"}
    h.stop_task(engine=Engine("e", "e"), task=Task("t", "pid", "1"))  # absent: nothing happens
    with pytest.raises(EngineError):
        h.start_task(engine=Engine("e", "e"), task=Task("t", "pid", "1"))
    with pytest.raises(ValueError, match="start_tsk"):
        h.implements("start_tsk")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        EngineHooks.start_tsk  # type: ignore[attr-defined]  # noqa: B018


def test_a_batch_is_made_without_a_python_step_per_argument_of_each_call() -> None:
    """A 40,000-task file makes a batch of 40,000 calls; gathering each call's arguments was
    an inner list comprehension (one Python frame per call). Count the frames, and check
    that hookimpls of 0, 1 and 2 arguments still get theirs."""

    class Sizes:
        def __init__(self) -> None:
            self.got: list[tuple[Any, ...]] = []

        @hookimpl
        def clear_eng_params(self):
            self.got.append(())

        @hookimpl
        def clear_task_params(self, task):
            self.got.append((task,))

        @hookimpl
        def fill_task_params(self, task, config):
            self.got.append((task, config))

    plugin = Sizes()
    h = EngineHooks(plugin)
    tasks = [Task(f"t{i}", "pid", "1") for i in range(300)]
    section = ConfigSection("task", {})
    fills, calls = python_calls(
        lambda: h.batch(
            EngineHooks.fill_task_params, [{"task": t, "config": section} for t in tasks]
        )
    )
    assert calls < 50, calls  # was > 300: one per call
    clears = h.batch(EngineHooks.clear_task_params, [{"task": t} for t in tasks[:2]])
    engs = h.batch(EngineHooks.clear_eng_params, [{"engine": Engine("e", "e")}])
    for call in fills[:2] + clears + engs:
        call()
    assert plugin.got == [
        (tasks[0], section),
        (tasks[1], section),
        (tasks[0],),
        (tasks[1],),
        (),
    ]


def test_batch_makes_the_methods_calls_the_cheap_way_and_pluggys_where_it_must() -> None:
    plugin = Every()
    h = EngineHooks(plugin)
    eng, task, section = Engine("e", "e"), Task("t", "pid", "1"), ConfigSection("task", {})
    other = Task("u", "pid", "2")
    fills = h.batch(EngineHooks.fill_task_params, [{"task": task, "config": section}] * 2)
    # the hookimpl itself, not the method
    assert all(
        isinstance(f, functools.partial) and f.func == plugin.fill_task_params for f in fills
    )
    stops = h.batch(EngineHooks.stop_task, [{"engine": eng, "task": t} for t in (task, other)])
    assert plugin.got == []  # nothing is called before it is run
    for call in fills + stops:
        call()
    assert plugin.got == [
        ("fill_task_params", {"task": task, "config": section}),
        ("fill_task_params", {"task": task, "config": section}),
        ("stop_task", {"engine": eng, "task": task}),
        ("stop_task", {"engine": eng, "task": other}),
    ]
    with pytest.raises(HookCallError, match="'config'"):
        h.batch(EngineHooks.fill_task_params, [{"task": task}])
    with pytest.raises(ValueError, match="no engine hook is called"):
        h.batch(lambda self: None, [{}])

    class Narrow:  # a hookimpl may take fewer arguments than the hookspec
        @hookimpl
        def stop_task(self, task):
            raise EngineError(f"stop {task.name}")

    narrow = EngineHooks(Narrow())
    (stop,) = narrow.batch(EngineHooks.stop_task, [{"engine": eng, "task": task}])
    with pytest.raises(EngineError, match="stop t"):
        stop()
    (start,) = narrow.batch(EngineHooks.start_task, [{"engine": eng, "task": task}])
    start()  # absent: nothing happens

    class Wrapped:
        @hookimpl(wrapper=True)
        def stop_task(self, engine, task):
            plugin.got.append(("wrapper", {}))
            return (yield)

    both = EngineHooks(plugin)
    both.pm.register(Wrapped())
    (stop,) = both.batch(EngineHooks.stop_task, [{"engine": eng, "task": task}])
    # a wrapper: only pluggy knows how to run it
    assert isinstance(stop, functools.partial) and stop.func is EngineHooks.stop_task
    del plugin.got[:]
    stop()
    assert [op for op, _ in plugin.got] == ["wrapper", "stop_task"]


def test_a_plugin_not_matching_the_hookspecs_is_refused() -> None:
    class Misspelt:
        @hookimpl
        def start_task(self, engine, tsk):
            pass

    with pytest.raises(PluginValidationError):
        EngineHooks(Misspelt())


def test_nothing_calls_a_hook_by_a_name_in_a_string() -> None:
    """Core and SDK reach hooks through EngineHooks methods only (grep finds every call)."""
    pattern = re.compile(r"getattr\([^)]*\bhooks?\b|\.hook\.\w+\(|getattr\([^)]*\.hook\b")
    found = []
    for folder in ("etmem_core", "sdk/etmem_sdk"):
        for dirpath, _, names in os.walk(ROOT / folder):
            for name in names:
                if name.endswith(".py") and name != "hooks.py":
                    path = Path(dirpath, name)
                    for n, line in enumerate(path.read_text().splitlines(), 1):
                        if pattern.search(line):
                            found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


# -- the store's calls ---------------------------------------------------------------------------


class Rec:
    """Records (hook, task) and fails ``start_task`` for the tasks in ``refuse``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse: set[str] = set()

    @hookimpl
    def fill_task_params(self, task, config):
        self.calls.append(("fill_task_params", task.name))

    @hookimpl
    def clear_task_params(self, task):
        self.calls.append(("clear_task_params", task.name))

    @hookimpl
    def start_task(self, engine, task):
        self.calls.append(("start_task", task.name))
        if task.name in self.refuse:
            raise EngineError(f"cannot start {task.name}")

    @hookimpl
    def stop_task(self, engine, task):
        assert engine is task.engine
        self.calls.append(("stop_task", task.name))


def _conf(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def test_tasks_added_to_a_started_project_are_stopped_when_a_later_one_fails(
    tmp_path: Path,
) -> None:
    """The rollback calls stop_task with the engine as well as the task (it once passed the
    task alone, so the stop failed and the started task kept running)."""
    rec = Rec()
    registry = EngineRegistry()
    registry.register_plugin("rec", rec)
    store = ObjectStore(registry)
    try:
        store.obj_add(
            _conf(
                tmp_path,
                "a",
                "[project]\nname=p\nloop=1\ninterval=1\nsleep=1\n[engine]\nproject=p\nname=rec\n",
            )
        )
        store.project_start("p")
        tasks = "".join(
            f'[[task]]\nproject = "p"\nengine = "rec"\nname = "{n}"\ntype = "name"\n'
            'value = "mysqld"\n'
            for n in ("t1", "t2")
        )
        rec.refuse.add("t2")
        with pytest.raises(OptError, match="cannot start t2"):
            store.obj_add(_conf(tmp_path, "b.toml", tasks))
        assert rec.calls == [
            ("fill_task_params", "t1"),
            ("fill_task_params", "t2"),
            ("start_task", "t1"),
            ("start_task", "t2"),
            ("stop_task", "t1"),
            ("clear_task_params", "t1"),
            ("clear_task_params", "t2"),
        ]
        project = store.find_project("p")
        assert project is not None and project.engines[0].tasks == []
    finally:
        store.shutdown()
