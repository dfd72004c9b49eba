"""ObjectStore: add/del/start/stop/show/engine commands with C's orderings and result codes,
plus the two deliberate fixes (atomic obj add, rollback of a failed project start)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from etmem_sdk import BufferReply, ConfigError, EngineError, hookimpl

from etmem_core.errors import OptCode, OptError
from etmem_core.lifecycle import ObjectStore
from etmem_core.registry import EngineRegistry

# -- throw-away engines --------------------------------------------------------------------------


class Rec:
    """An engine implementing every op; records each call and fails where told to."""

    def __init__(self, log: list[tuple[str, ...]], tag: str = "") -> None:
        self.log = log
        self.tag = tag
        #: op -> exception to raise (optionally only for one task name: (op, task))
        self.fail: dict[Any, BaseException] = {}

    def _hit(self, op: str, *what: str) -> None:
        self.log.append((op, *what))
        exc = self.fail.get((op, *what[1:])) or self.fail.get(op)
        if exc is not None:
            raise exc

    @hookimpl
    def fill_eng_params(self, engine, config):
        assert engine.project is not None and engine in engine.project.engines
        assert config["name"] == engine.kind
        engine.params = {"filled": True}
        self._hit("fill_eng_params", engine.name)

    @hookimpl
    def clear_eng_params(self, engine):
        self._hit("clear_eng_params", engine.name)

    @hookimpl
    def fill_task_params(self, task, config):
        assert task.engine is not None and task in task.engine.tasks
        assert config["name"] == task.name
        task.params = {"T": config.get("T")}
        self._hit("fill_task_params", task.engine.name, task.name)

    @hookimpl
    def clear_task_params(self, task):
        self._hit("clear_task_params", task.engine.name, task.name)

    @hookimpl
    def start_task(self, engine, task):
        self._hit("start_task", engine.name, task.name)

    @hookimpl
    def stop_task(self, engine, task):
        self._hit("stop_task", engine.name, task.name)

    @hookimpl
    def eng_mgt_func(self, engine, task, cmd, reply):
        self._hit("eng_mgt_func", engine.name, cmd)
        reply.write(f"{cmd} on {engine.name} task={task.name if task else None}\n")


class FillOnly:
    """An engine with only fill hooks: no start_task, no stop_task, no eng_mgt_func."""

    @hookimpl
    def fill_eng_params(self, engine, config):
        pass


class StartOnly:
    @hookimpl
    def start_task(self, engine, task):
        pass


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def calls() -> list[tuple[str, ...]]:
    return []


@pytest.fixture
def rec(calls: list[tuple[str, ...]]) -> Rec:
    return Rec(calls)


@pytest.fixture
def rec2(calls: list[tuple[str, ...]]) -> Rec:
    return Rec(calls, "2")


@pytest.fixture
def store(rec: Rec, rec2: Rec) -> Any:
    registry = EngineRegistry()
    registry.register_plugin("rec", rec)
    registry.register_plugin("rec2", rec2)
    registry.register_plugin("fillonly", FillOnly())
    registry.register_plugin("startonly", StartOnly())
    d = ObjectStore(registry)
    yield d
    d.shutdown()


class Files:
    """Writes object files the daemon accepts (root-owned, mode 0600)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str, text: str, mode: int = 0o600) -> str:
        path = self.root / name
        path.write_text(text)
        os.chmod(path, mode)
        return str(path)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def project(name: str = "p", extra: str = "") -> str:
    return f"[project]\nname={name}\nloop=1\ninterval=1\nsleep=1\n{extra}"


def engine(proj: str = "p", name: str = "rec", extra: str = "") -> str:
    return f"[engine]\nproject={proj}\nname={name}\n{extra}"


def task(
    name: str = "t1", proj: str = "p", eng: str = "rec", value: str = "mysqld", extra: str = ""
) -> str:
    return f"[task]\nproject={proj}\nengine={eng}\nname={name}\ntype=name\nvalue={value}\n{extra}"


def show(d: ObjectStore, name: str | None = None) -> str:
    reply = BufferReply()
    d.project_show(name, reply)
    return reply.text


def code_of(excinfo: pytest.ExceptionInfo[OptError]) -> OptCode:
    return excinfo.value.code


HEADER = "number   type     value            name             engine           started \n"


def row(n: int, value: str, name: str, eng: str, started: bool = False) -> str:
    s = "true" if started else "false"
    return f"{n:<8d} {'name':<8s} {value:<16s} {name:<16s} {eng:<16s} {s:<8s}\n"


# -- add, show, del: the happy paths --------------------------------------------------------------


def test_add_one_file_fills_in_order_and_shows(
    store: ObjectStore, files: Files, calls: list
) -> None:
    store.obj_add(files("all.conf", project() + engine() + task(extra="T=2\n")))
    assert calls == [("fill_eng_params", "rec"), ("fill_task_params", "rec", "t1")]
    p = store.find_project("p")
    assert p is not None and p.loop == 1 and not p.start
    eng = p.engines[0]
    assert eng.kind == "rec" and eng.params == {"filled": True}
    assert eng.implements >= {"start_task", "stop_task", "eng_mgt_func"}
    assert eng.hooks is not None
    t = eng.tasks[0]
    assert t.params == {"T": "2"} and t.engine is eng and t.project is p
    assert t.config is not None and t.config.path.endswith("all.conf")
    assert show(store) == "project: p\n" + HEADER + row(1, "mysqld", "t1", "rec")


def test_show_exact_table_newest_first(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project("alpha") + engine("alpha") + task("a1", "alpha")))
    store.obj_add(files("b", task("a2", "alpha", value="redis")))
    store.obj_add(files("c", engine("alpha", "rec2") + task("b1", "alpha", "rec2")))
    store.obj_add(files("d", project("beta")))
    store.obj_add(files("e", engine("beta") + task("x" * 20, "beta", value="v" * 15)))
    store.project_start("alpha")
    assert show(store) == (
        "project: beta\n"
        + HEADER
        + row(1, "v" * 15, "x" * 20, "rec")  # long fields are not cut
        + "project: alpha\n"
        + HEADER
        + row(1, "mysqld", "b1", "rec2", True)  # numbering restarts per engine
        + row(1, "redis", "a2", "rec", True)
        + row(2, "mysqld", "a1", "rec", True)
    )
    assert show(store, "beta") == "project: beta\n" + HEADER + row(1, "v" * 15, "x" * 20, "rec")


def test_show_engines_without_tasks_print_nothing(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine()))
    assert show(store) == "project: p\n" + HEADER


def test_show_nothing(store: ObjectStore, files: Files) -> None:
    assert show(store) == "no project exists\n\n"
    assert show(store, "X") == "project: project X is not existed\n\n"
    store.obj_add(files("a", project()))
    assert show(store, "X") == "project: project X is not existed\n\n"
    assert show(store, "") == "project: p\n" + HEADER


def test_objects_split_over_files_and_relative_path(
    store: ObjectStore, files: Files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files("proj.conf", project())
    files("eng.conf", engine())
    files("task.conf", task())
    monkeypatch.chdir(tmp_path)  # C resolves the path in the daemon's cwd
    for name in ("proj.conf", "eng.conf", "task.conf"):
        store.obj_add(name)
    assert [t.name for t in store.find_project("p").engines[0].tasks] == ["t1"]  # type: ignore[union-attr]
    store.obj_del("task.conf")
    store.obj_del("./eng.conf")
    store.obj_del(str(tmp_path / "proj.conf"))
    assert store.projects == []


def test_del_order_task_engine_project(store: ObjectStore, files: Files, calls: list) -> None:
    path = files("all", project() + engine() + task("t1") + "\n")
    store.obj_add(path)
    store.obj_add(files("t2", task("t2")))
    store.project_start("p")
    calls.clear()
    store.obj_del(path)
    # the file's task first, then its engine (which takes t2 with it), then the project
    assert calls == [
        ("stop_task", "rec", "t1"),
        ("clear_task_params", "rec", "t1"),
        ("stop_task", "rec", "t2"),
        ("clear_task_params", "rec", "t2"),
        ("clear_eng_params", "rec"),
    ]
    assert store.projects == []


def test_delete_project_deletes_and_stops_everything(
    store: ObjectStore, files: Files, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    store.obj_add(files("b", engine(name="rec2") + task("t9", eng="rec2")))
    store.project_start("p")
    calls.clear()
    p = store.find_project("p")
    store.obj_del(files("only-project", project()))
    assert calls == [
        ("stop_task", "rec2", "t9"),
        ("clear_task_params", "rec2", "t9"),
        ("clear_eng_params", "rec2"),
        ("stop_task", "rec", "t1"),
        ("clear_task_params", "rec", "t1"),
        ("clear_eng_params", "rec"),
    ]
    assert store.projects == [] and p is not None and not p.start


def test_delete_stopped_project_does_not_stop_tasks(
    store: ObjectStore, files: Files, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task()))
    calls.clear()
    store.obj_del(files("d", "[project]\nname=p\n"))  # del needs only the name
    assert calls == [("clear_task_params", "rec", "t1"), ("clear_eng_params", "rec")]


# -- error codes of obj add ---------------------------------------------------------------------


def test_duplicate_project(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project()))
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", project()))
    assert code_of(e) is OptCode.OPT_PRO_EXISTED
    assert "project p" in e.value.reason


def test_engine_into_missing_project(store: ObjectStore, files: Files) -> None:
    with pytest.raises(OptError) as e:
        store.obj_add(files("a", engine("nope")))
    assert code_of(e) is OptCode.OPT_PRO_NOEXIST


def test_duplicate_engine(store: ObjectStore, files: Files, calls: list) -> None:
    store.obj_add(files("a", project() + engine()))
    calls.clear()
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", engine()))
    assert code_of(e) is OptCode.OPT_ENG_EXISTED
    assert calls == []


def test_unknown_engine_name(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project()))
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", engine(name="no_such_engine_xyz")))
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert e.value.reason == "engine no_such_engine_xyz not support"


@pytest.mark.parametrize(
    "text",
    [
        "[engine]\nname=rec\n",  # no project key
        "[engine]\nproject=p\n",  # no name key
        "[engine]\nproject=" + "p" * 65 + "\nname=rec\n",
    ],
)
def test_engine_identity_errors_are_inval(store: ObjectStore, files: Files, text: str) -> None:
    with pytest.raises(OptError) as e:
        store.obj_add(files("a", text))
    assert code_of(e) is OptCode.OPT_INVAL


def test_engine_fill_failure(store: ObjectStore, files: Files, rec: Rec, calls: list) -> None:
    store.obj_add(files("a", project()))
    rec.fail["fill_eng_params"] = ConfigError("e.conf: [engine] node_pair=x: bad")
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", engine()))
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert e.value.reason == "engine rec: fill_eng_params: e.conf: [engine] node_pair=x: bad"
    assert calls == [("fill_eng_params", "rec")]  # no clear_eng_params for a refused engine
    assert store.find_project("p").engines == []  # type: ignore[union-attr]


def test_task_errors(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine() + task()))
    cases = [
        (task("t2", proj="nope"), OptCode.OPT_PRO_NOEXIST),
        (task("t2", eng="rec2"), OptCode.OPT_ENG_NOEXIST),
        (task("t1"), OptCode.OPT_TASK_EXISTED),
        # as etmemd_task.c: a rejected common task key is OPT_INTER_ERR; only names are OPT_INVAL
        (task("t2", value="bad:value"), OptCode.OPT_INTER_ERR),
        (task("t2").replace("type=name", "type=cgroup"), OptCode.OPT_INTER_ERR),
        (task("t2").replace("value=mysqld\n", ""), OptCode.OPT_INTER_ERR),
        (task("t" * 65), OptCode.OPT_INVAL),
        (task("t2", extra="swap_flag=YES\n"), OptCode.OPT_INTER_ERR),
    ]
    for n, (text, code) in enumerate(cases):
        with pytest.raises(OptError) as e:
            store.obj_add(files(f"t{n}", text))
        assert code_of(e) is code, text
    assert [t.name for t in store.find_project("p").engines[0].tasks] == ["t1"]  # type: ignore[union-attr]


def test_task_fill_failure(store: ObjectStore, files: Files, rec: Rec, calls: list) -> None:
    store.obj_add(files("a", project() + engine()))
    rec.fail["fill_task_params"] = ConfigError("t.conf: [task] T=9: must be at most 3")
    calls.clear()
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", task()))
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert "engine rec: fill_task_params: t.conf: [task] T=9" in e.value.reason
    assert calls == [("fill_task_params", "rec", "t1")]  # no clear_task_params
    assert store.find_project("p").engines[0].tasks == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "extra", ["loop=0\n", "loop=121\n", "loop=abc\n", "sysmem_threshold=101\n"]
)
def test_bad_core_key_is_inval_and_named(store: ObjectStore, files: Files, extra: str) -> None:
    key = extra.split("=")[0]
    text = project().replace(f"{key}=1\n", "") + extra if key == "loop" else project(extra=extra)
    with pytest.raises(OptError) as e:
        store.obj_add(files("bad.conf", text))
    assert code_of(e) is OptCode.OPT_INVAL
    assert f"bad.conf: [project] {extra.strip()}" in e.value.reason


def test_file_level_errors(store: ObjectStore, files: Files, tmp_path: Path) -> None:
    cases = [
        (files("syntax", "loop=1\n[project]\nname=p\n"), OptCode.OPT_INTER_ERR),
        (files("nogroup", "[other]\nname=p\n"), OptCode.OPT_INVAL),
        (files("mode", project(), mode=0o644), OptCode.OPT_INVAL),
        (str(tmp_path / "missing"), OptCode.OPT_INVAL),
        (str(tmp_path), OptCode.OPT_INVAL),
        ("", OptCode.OPT_INVAL),
    ]
    for path, code in cases:
        for op in (store.obj_add, store.obj_del):
            with pytest.raises(OptError) as e:
                op(path)
            assert code_of(e) is code, path
    assert store.projects == []


# -- atomic obj add ------------------------------------------------------------------------------


def test_atomic_add_engine_failure_leaves_no_project(
    store: ObjectStore, files: Files, rec: Rec
) -> None:
    rec.fail["fill_eng_params"] = ConfigError("nope")
    path = files("a", project() + engine() + task())
    with pytest.raises(OptError):
        store.obj_add(path)
    assert store.projects == []
    rec.fail.clear()
    store.obj_add(path)  # C would now say "project has been existed"
    assert show(store) == "project: p\n" + HEADER + row(1, "mysqld", "t1", "rec")


def test_atomic_add_task_failure_rolls_back_in_reverse(
    store: ObjectStore, files: Files, rec: Rec, calls: list
) -> None:
    rec.fail["fill_task_params"] = ConfigError("nope")
    with pytest.raises(OptError) as e:
        store.obj_add(files("a", project() + engine() + task()))
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert calls == [
        ("fill_eng_params", "rec"),
        ("fill_task_params", "rec", "t1"),
        ("clear_eng_params", "rec"),  # the engine was filled, so it is cleared
    ]
    assert store.projects == []


def test_atomic_add_keeps_objects_of_other_files(
    store: ObjectStore, files: Files, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    calls.clear()
    with pytest.raises(OptError) as e:  # engine exists -> the new project goes again
        store.obj_add(files("b", project("q") + engine()))
    assert code_of(e) is OptCode.OPT_ENG_EXISTED
    assert [p.name for p in store.projects] == ["p"]
    assert calls == []


def test_atomic_add_toml_several_engines(
    store: ObjectStore, files: Files, rec2: Rec, calls: list
) -> None:
    text = """
[project]
name = "p"
loop = 1
interval = 1
sleep = 1

[[engine]]
name = "rec"

[[engine]]
name = "rec2"

[[task]]
engine = "rec"
name = "t1"
type = "name"
value = "mysqld"

[[task]]
engine = "rec2"
name = "t2"
type = "pid"
value = 42
"""
    path = files("p.toml", text)
    rec2.fail[("fill_task_params", "t2")] = ConfigError("bad t2")
    with pytest.raises(OptError):
        store.obj_add(path)
    assert store.projects == []
    assert calls == [
        ("fill_eng_params", "rec"),
        ("fill_eng_params", "rec2"),
        ("fill_task_params", "rec", "t1"),
        ("fill_task_params", "rec2", "t2"),
        ("clear_task_params", "rec", "t1"),
        ("clear_eng_params", "rec2"),
        ("clear_eng_params", "rec"),
    ]
    rec2.fail.clear()
    store.obj_add(path)
    p = store.find_project("p")
    assert p is not None and [e.name for e in p.engines] == ["rec2", "rec"]
    store.obj_del(path)
    assert store.projects == []


def test_rollback_teardown_error_does_not_mask_first_error(
    store: ObjectStore, files: Files, rec: Rec
) -> None:
    rec.fail["fill_task_params"] = ConfigError("the real problem")
    rec.fail["clear_eng_params"] = RuntimeError("cleanup bug")
    with pytest.raises(OptError) as e:
        store.obj_add(files("a", project() + engine() + task()))
    assert "the real problem" in e.value.reason
    assert store.projects == []


def test_task_add_into_started_project(
    store: ObjectStore, files: Files, rec: Rec, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    store.project_start("p")
    calls.clear()
    store.obj_add(files("b", task("t2")))
    assert calls == [("fill_task_params", "rec", "t2"), ("start_task", "rec", "t2")]
    rec.fail["start_task"] = EngineError("cannot start")
    calls.clear()
    with pytest.raises(OptError) as e:
        store.obj_add(files("c", task("t3")))
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert calls == [
        ("fill_task_params", "rec", "t3"),
        ("start_task", "rec", "t3"),
        ("clear_task_params", "rec", "t3"),
    ]
    assert [t.name for t in store.find_project("p").engines[0].tasks] == ["t2", "t1"]  # type: ignore[union-attr]


# -- obj del errors ------------------------------------------------------------------------------


def test_del_errors(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine() + task()))
    cases = [
        (project("nope"), OptCode.OPT_PRO_NOEXIST),
        (engine("nope"), OptCode.OPT_PRO_NOEXIST),
        (engine(name="rec2"), OptCode.OPT_ENG_NOEXIST),
        (task("t9"), OptCode.OPT_TASK_NOEXIST),
        (task(eng="rec2"), OptCode.OPT_ENG_NOEXIST),
        ("[project]\nloop=1\n", OptCode.OPT_INVAL),
        ("[project]\nname=" + "p" * 65 + "\n", OptCode.OPT_INVAL),
    ]
    for n, (text, code) in enumerate(cases):
        with pytest.raises(OptError) as e:
            store.obj_del(files(f"d{n}", text))
        assert code_of(e) is code, text
    assert show(store) == "project: p\n" + HEADER + row(1, "mysqld", "t1", "rec")


def test_del_attempts_every_group_and_returns_last_error(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine()))
    # the task is missing (error), the engine and project still go
    with pytest.raises(OptError) as e:
        store.obj_del(files("d", project() + engine() + task("ghost")))
    assert code_of(e) is OptCode.OPT_TASK_NOEXIST
    assert store.projects == []
    store.obj_add(files("b", project()))
    # engine missing (error), then the project is deleted: the engine error is the last one
    with pytest.raises(OptError) as e:
        store.obj_del(files("d2", project() + engine()))
    assert code_of(e) is OptCode.OPT_ENG_NOEXIST
    assert store.projects == []


# -- start / stop ----------------------------------------------------------------------------------


def test_start_stop(store: ObjectStore, files: Files, calls: list) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    store.obj_add(files("b", task("t2") + "\n"))
    store.obj_add(files("c", engine(name="rec2") + task("t3", eng="rec2")))
    calls.clear()
    store.project_start("p")
    assert store.find_project("p").start  # type: ignore[union-attr]
    assert calls == [
        ("start_task", "rec2", "t3"),
        ("start_task", "rec", "t2"),
        ("start_task", "rec", "t1"),
    ]
    calls.clear()
    store.project_stop("p")
    assert not store.find_project("p").start  # type: ignore[union-attr]
    assert calls == [
        ("stop_task", "rec2", "t3"),
        ("stop_task", "rec", "t2"),
        ("stop_task", "rec", "t1"),
    ]


def test_start_stop_state_errors(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine() + task()))
    for op, name, code in [
        (store.project_start, "nope", OptCode.OPT_PRO_NOEXIST),
        (store.project_stop, "nope", OptCode.OPT_PRO_NOEXIST),
        (store.project_start, "", OptCode.OPT_INVAL),
        (store.project_start, None, OptCode.OPT_INVAL),
        (store.project_stop, None, OptCode.OPT_INVAL),
        (store.project_stop, "p", OptCode.OPT_PRO_STOPPED),
    ]:
        with pytest.raises(OptError) as e:
            op(name)
        assert code_of(e) is code
    store.project_start("p")
    with pytest.raises(OptError) as e:
        store.project_start("p")
    assert code_of(e) is OptCode.OPT_PRO_STARTED


def test_start_empty_project_and_engine_without_tasks(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project()))
    proj = store.find_project("p")
    assert proj is not None
    store.project_start("p")
    assert proj.start
    store.project_stop("p")
    assert not proj.start
    store.obj_add(files("b", engine()))  # an engine without tasks starts fine
    store.project_start("p")
    assert proj.start and proj.engines[0].tasks == []


def test_engine_without_start_task_fails_start(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine(name="fillonly")))
    with pytest.raises(OptError) as e:  # even with no tasks, as in C
        store.project_start("p")
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert "engine fillonly" in e.value.reason and "start_task" in e.value.reason
    assert not store.find_project("p").start  # type: ignore[union-attr]


def test_failed_start_stops_what_it_started(
    store: ObjectStore, files: Files, rec: Rec, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    store.obj_add(files("b", task("t2")))
    store.obj_add(files("c", task("t3")))
    rec.fail[("start_task", "t1")] = EngineError("t1 cannot start")
    calls.clear()
    with pytest.raises(OptError) as e:
        store.project_start("p")
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert "engine rec: start_task: t1 cannot start" == e.value.reason
    assert calls == [
        ("start_task", "rec", "t3"),
        ("start_task", "rec", "t2"),
        ("start_task", "rec", "t1"),
        ("stop_task", "rec", "t2"),
        ("stop_task", "rec", "t3"),
    ]
    assert not store.find_project("p").start  # type: ignore[union-attr]
    # remove the bad task: now the project starts
    store.obj_del(files("d", task("t1")))
    store.project_start("p")


def test_stop_skips_engines_without_stop_task(
    store: ObjectStore, files: Files, calls: list
) -> None:
    store.obj_add(files("a", project() + engine(name="startonly") + task(eng="startonly")))
    store.obj_add(files("b", engine() + task("t2")))
    store.project_start("p")
    calls.clear()
    store.project_stop("p")
    assert calls == [("stop_task", "rec", "t2")]


def test_stop_failure_still_stops_everything(
    store: ObjectStore, files: Files, rec: Rec, calls: list
) -> None:
    store.obj_add(files("a", project() + engine() + task("t1")))
    store.obj_add(files("b", task("t2")))
    store.project_start("p")
    rec.fail[("stop_task", "t2")] = RuntimeError("bug while stopping")
    calls.clear()
    with pytest.raises(OptError) as e:
        store.project_stop("p")
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert e.value.reason == "engine rec: stop_task: RuntimeError: bug while stopping"
    assert calls == [("stop_task", "rec", "t2"), ("stop_task", "rec", "t1")]
    assert not store.find_project("p").start  # type: ignore[union-attr]


def test_fifty_projects_start_stop(store: ObjectStore, files: Files) -> None:
    for i in range(50):
        store.obj_add(files(f"p{i}", project(f"p{i}") + engine(f"p{i}") + task(proj=f"p{i}")))
    for i in range(50):
        store.project_start(f"p{i}")
    for i in range(50):
        store.project_stop(f"p{i}")
    assert [p.name for p in store.projects] == [f"p{i}" for i in reversed(range(50))]


# -- engine private commands -----------------------------------------------------------------------


def test_engine_cmd_rules(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine() + task()))
    store.obj_add(files("b", engine(name="fillonly")))
    reply = BufferReply()
    cases = [
        (("p", "rec", None, "show"), OptCode.OPT_INVAL),  # project not started
        (("nope", "rec", None, "show"), OptCode.OPT_PRO_NOEXIST),
        ((None, "rec", None, "show"), OptCode.OPT_INVAL),
        (("p", None, None, "show"), OptCode.OPT_INVAL),
        (("p", "rec", None, None), OptCode.OPT_INVAL),
    ]
    for args, code in cases:
        with pytest.raises(OptError) as e:
            store.engine_cmd(*args, reply)
        assert code_of(e) is code, args
    store.obj_del(files("c", engine(name="fillonly")))
    store.project_start("p")
    store.obj_add(files("d", engine(name="fillonly")))
    for args, code in [
        (("p", "rec2", None, "show"), OptCode.OPT_ENG_NOEXIST),
        (("p", "rec", "t9", "show"), OptCode.OPT_TASK_NOEXIST),
        (("p", "fillonly", None, "show"), OptCode.OPT_INVAL),  # no eng_mgt_func
    ]:
        with pytest.raises(OptError) as e:
            store.engine_cmd(*args, reply)
        assert code_of(e) is code, args
    assert reply.text == ""
    store.engine_cmd("p", "rec", None, "showall", reply)
    store.engine_cmd("p", "rec", "t1", "showtask", reply)
    assert reply.text == "showall on rec task=None\nshowtask on rec task=t1\n"


def test_engine_cmd_failures(store: ObjectStore, files: Files, rec: Rec) -> None:
    store.obj_add(files("a", project() + engine()))
    store.project_start("p")
    rec.fail["eng_mgt_func"] = EngineError("unknown command foo")
    with pytest.raises(OptError) as e:
        store.engine_cmd("p", "rec", None, "foo", BufferReply())
    assert code_of(e) is OptCode.OPT_INVAL
    assert e.value.reason == "engine rec: eng_mgt_func: unknown command foo"
    rec.fail["eng_mgt_func"] = ZeroDivisionError("division by zero")
    with pytest.raises(OptError) as e:
        store.engine_cmd("p", "rec", None, "foo", BufferReply())
    assert code_of(e) is OptCode.OPT_INTER_ERR
    assert "ZeroDivisionError" in e.value.reason and "engine rec" in e.value.reason


def test_engine_bugs_in_any_hook_become_named_errors(
    store: ObjectStore, files: Files, rec: Rec
) -> None:
    for op in ("fill_eng_params", "fill_task_params", "start_task"):
        rec.fail = {op: KeyError("oops")} if op != "start_task" else {}
        path = files(f"{op}.conf", project() + engine() + task())
        if op == "start_task":
            store.obj_add(path)
            rec.fail = {op: SystemExit(3)}
            with pytest.raises(OptError) as e:
                store.project_start("p")
            store.obj_del(path)
        else:
            with pytest.raises(OptError) as e:
                store.obj_add(path)
        assert code_of(e) is OptCode.OPT_INTER_ERR
        assert e.value.reason.startswith(f"engine rec: {op}: ")
        assert store.projects == []


# -- json, shutdown ------------------------------------------------------------------------------


def test_show_json(store: ObjectStore, files: Files) -> None:
    store.obj_add(files("a", project() + engine() + task(extra="max_threads=2\n")))
    t = store.find_project("p").engines[0].tasks[0]  # type: ignore[union-attr]
    t.stats["scans"] = 3
    t.engine.stats.update(  # type: ignore[union-attr]
        {"pages": np.int64(7), "hist": np.arange(3, dtype=np.uint32), "when": Path("/x")}
    )
    from etmem_sdk import TaskPid

    t.pids.append(TaskPid(pid=123, task=t, stats={"swapped": 10}))
    doc = store.project_show_json(None)
    json.dumps(doc)  # serialisable
    assert doc == [
        {
            "name": "p",
            "scan_type": "page",
            "started": False,
            "loop": 1,
            "interval": 1,
            "sleep": 1,
            "sysmem_threshold": -1,
            "swapcache_high_wmark": -1,
            "swapcache_low_wmark": -1,
            "region": {},
            "engines": [
                {
                    "name": "rec",
                    "kind": "rec",
                    "ops": [
                        "fill_eng_params",
                        "clear_eng_params",
                        "fill_task_params",
                        "clear_task_params",
                        "start_task",
                        "stop_task",
                        "eng_mgt_func",
                    ],
                    "stats": {"pages": 7, "hist": [0, 1, 2], "when": "/x"},
                    "tasks": [
                        {
                            "name": "t1",
                            "type": "name",
                            "value": "mysqld",
                            "max_threads": 2,
                            "swap_flag": False,
                            "pids": [{"pid": 123, "stats": {"swapped": 10}}],
                            "stats": {"scans": 3},
                        }
                    ],
                }
            ],
        }
    ]
    assert store.project_show_json("nope") == []
    assert [p["name"] for p in store.project_show_json("p")] == ["p"]


def test_show_json_survives_stats_changing_while_it_is_walked(
    store: ObjectStore, files: Files
) -> None:
    # An engine's worker thread may add a key to a nested stats dict at any moment of the walk;
    # here the walk itself triggers the insert, at the worst moment (mid-iteration).
    store.obj_add(files("a", project() + engine() + task()))
    t = store.find_project("p").engines[0].tasks[0]  # type: ignore[union-attr]
    per_node: dict[str, object] = {}

    class Grows:
        def tolist(self) -> int:
            per_node["late"] = 1
            return 5

    per_node.update({"n0": Grows(), "n1": 2})
    t.stats["per_node"] = per_node
    doc = store.project_show_json("p")
    assert doc[0]["engines"][0]["tasks"][0]["stats"] == {"per_node": {"n0": 5, "n1": 2}}


def test_shutdown_stops_and_deletes_all(
    store: ObjectStore, files: Files, rec: Rec, calls: list
) -> None:
    store.obj_add(files("a", project("a") + engine("a") + task(proj="a")))
    store.obj_add(files("b", project("b") + engine("b") + task(proj="b")))
    store.project_start("a")
    rec.fail["clear_eng_params"] = RuntimeError("bug")  # logged, shutdown goes on
    calls.clear()
    store.shutdown()
    assert store.projects == []
    assert calls == [
        ("clear_task_params", "rec", "t1"),
        ("clear_eng_params", "rec"),
        ("stop_task", "rec", "t1"),
        ("clear_task_params", "rec", "t1"),
        ("clear_eng_params", "rec"),
    ]


# -- the original's own test config, through the real slide engine -------------------------------


def test_original_slide_test_config(golden: Path, tmp_path: Path) -> None:
    """``T/conf/conf_slide/config_file`` adds, shows and deletes with the built-in engine."""
    path = tmp_path / "config_file"
    path.write_bytes(
        (golden / "config" / "c-test-conf" / "conf_slide" / "config_file").read_bytes()
    )
    os.chmod(path, 0o600)  # committed 0644 upstream, which etmemd refuses
    d = ObjectStore()
    try:
        d.obj_add(str(path))
        assert show(d) == "project: test\n" + HEADER + row(1, "sshd", "background1", "slide")
        eng = d.find_project("test").engines[0]  # type: ignore[union-attr]
        assert eng.kind == "slide" and "start_task" in eng.implements
        d.obj_del(str(path))
        assert show(d) == "no project exists\n\n"
    finally:
        d.shutdown()


def test_core_bug_while_adding_or_deleting_is_an_internal_error(
    store: ObjectStore, files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etmem_core import object_keys

    path = files("a", project() + engine() + task())
    store.obj_add(files("p", project()))

    def broken(section: object) -> None:
        raise RuntimeError("object_keys bug")

    monkeypatch.setattr(object_keys, "task_identity", broken)
    with pytest.raises(OptError) as e:
        store.obj_add(files("b", engine() + task()))
    assert code_of(e) is OptCode.OPT_INTER_ERR and "object_keys bug" in e.value.reason
    assert store.find_project("p").engines == []  # type: ignore[union-attr]
    with pytest.raises(OptError) as e:
        store.obj_del(path)  # the task fails, the engine (absent) fails, the project goes
    assert store.projects == []


# -- hook deadlines --------------------------------------------------------------------------------


def _hanging_store(tmp_path, deadline: float):
    import threading

    release = threading.Event()
    calls: list[str] = []

    class Hangs:
        @hookimpl
        def fill_task_params(self, task, config):
            calls.append(f"fill {task.name}")

        @hookimpl
        def clear_task_params(self, task):
            calls.append(f"clear {task.name}")

        @hookimpl
        def start_task(self, engine, task):
            calls.append(f"start {task.name}")
            release.wait(30)

        @hookimpl
        def stop_task(self, engine, task):
            calls.append(f"stop {task.name}")

    registry = EngineRegistry()
    registry.register_plugin("hangs", Hangs())
    store = ObjectStore(registry, hook_deadline=deadline)
    conf = tmp_path / "h.conf"
    conf.write_text(
        "[project]\nname=h\nloop=1\ninterval=1\nsleep=1\n[engine]\nname=hangs\nproject=h\n"
        f"[task]\nproject=h\nengine=hangs\nname=t1\ntype=pid\nvalue={os.getpid()}\n"
    )
    conf.chmod(0o600)
    store.obj_add(str(conf))
    return store, conf, release, calls


def test_a_hook_past_its_deadline_is_named_and_the_store_stays_usable(tmp_path):
    import time

    from etmemd_proc import wait_for

    store, conf, release, calls = _hanging_store(tmp_path, 0.3)
    try:
        t0 = time.monotonic()
        with pytest.raises(
            OptError, match=r"engine hangs: start_task: did not return within 0.3 s"
        ):
            store.project_start("h")
        assert time.monotonic() - t0 < 3
        reply = BufferReply()
        store.project_show(None, reply)  # not "busy"
        assert reply.text.startswith("project: h\n") and reply.text.endswith("false   \n")
        with pytest.raises(OptError, match="has not returned yet"):
            store.project_start("h")  # the engine is still inside its start_task
        release.set()
        # once it returns, what it did late is undone, and the engine is usable again
        assert wait_for(lambda: "stop t1" in calls, 5), calls
        assert wait_for(lambda: not store._wedged, 5)
        release.clear()
        store.obj_del(str(conf))
        assert store.projects == []
    finally:
        release.set()
        store.shutdown()


def test_project_stop_and_delete_work_while_a_hook_hangs(tmp_path):
    store, conf, release, calls = _hanging_store(tmp_path, 0.3)
    try:
        with pytest.raises(OptError):
            store.project_start("h")
        with pytest.raises(OptError, match="already stopped"):
            store.project_stop("h")
        with pytest.raises(OptError, match="has not returned yet"):
            store.obj_del(str(conf))  # the teardown it could not run is reported ...
        assert store.projects == []  # ... and everything is gone all the same
    finally:
        release.set()
        store.shutdown()


# -- object files with many tasks ---------------------------------------------------------------


def test_many_tasks_are_added_and_deleted_without_scanning_the_list_per_task(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obj add/del of N tasks was O(N^2): a list scan per task (find_task, list.remove). The
    core now looks names up in sets and edits each engine's list once: count the scans."""
    from etmem_sdk import Engine, Task

    filled = []

    class Counts:
        @hookimpl
        def fill_task_params(self, task, config):
            filled.append(task.name)

    registry = EngineRegistry()
    registry.register_plugin("rec", Counts())
    store = ObjectStore(registry)

    scans = {"find_task": 0, "eq": 0}
    real_find = Engine.find_task

    def counting_find(self, name):
        scans["find_task"] += 1
        return real_find(self, name)

    def counting_eq(self, other):
        scans["eq"] += 1
        return self is other

    monkeypatch.setattr(Engine, "find_task", counting_find)
    monkeypatch.setattr(Task, "__eq__", counting_eq)
    n = 2000
    text = '[project]\nname = "p"\nloop = 1\ninterval = 1\nsleep = 1\n[[engine]]\nname = "rec"\n'
    text += "".join(
        f'[[task]]\nname = "t{i}"\ntype = "pid"\nvalue = "{os.getpid()}"\n' for i in range(n)
    )
    path = files("many.toml", text)
    store.obj_add(path)
    (eng,) = store.find_project("p").engines  # type: ignore[union-attr]
    assert [t.name for t in eng.tasks] == [f"t{i}" for i in reversed(range(n))]  # newest first
    assert len(filled) == n
    store.obj_del(path)
    assert store.projects == []
    assert scans["find_task"] < n // 10 and scans["eq"] < n // 10, scans


MANY_HEAD = '[project]\nname = "p"\nloop = 1\ninterval = 1\nsleep = 1\n[[engine]]\nname = "rec"\n'


def _like_tasks(*names: str, extra: str = "") -> str:
    """TOML tasks that differ only in their names."""
    return "".join(
        f'[[task]]\nname = "{n}"\ntype = "name"\nvalue = "mysqld"\n{extra}' for n in names
    )


@pytest.mark.parametrize(
    ("names", "code", "reason"),
    [
        (("t1", "t2", "t1"), OptCode.OPT_TASK_EXISTED, "task #3: task t1 already exists in"),
        (("t1", "a b"), OptCode.OPT_INVAL, "task #2: [task] name=a b: must not contain spaces"),
        (("t1", "a\\u0007"), OptCode.OPT_INVAL, "task #2: [task] name=a\x07: must not contain"),
        (("t1", ""), OptCode.OPT_INTER_ERR, "task #2: [task] name=: must not be empty"),
        (("t1", "t" * 65), OptCode.OPT_INVAL, "task #2: [task] name=" + "t" * 65 + ": must be at"),
        (("t1", "-"), OptCode.OPT_INVAL, "task #2: [task] name=-: cannot be '-'"),
    ],
)  # fmt: skip
def test_a_task_like_an_earlier_one_still_gets_its_own_checks(
    store: ObjectStore, files: Files, names: tuple[str, ...], code: OptCode, reason: str
) -> None:
    """obj add checks only the name of a task whose other keys an earlier task of the file
    passed with: its errors are still those of the full checks, and nothing is added."""
    with pytest.raises(OptError) as e:
        store.obj_add(files("many.toml", MANY_HEAD + _like_tasks(*names)))
    assert code_of(e) is code and e.value.reason.startswith(f"many.toml: {reason}"), e.value.reason
    assert store.projects == []


def test_tasks_like_an_earlier_one_are_built_alike_and_warned_about_each(
    store: ObjectStore, files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    text = MANY_HEAD + _like_tasks("t1", "t2", extra='max_threads = 2\nswap_flag = "yes"\n')
    text += _like_tasks("w1", "w2", extra="max_threads = 0\n")
    store.obj_add(files("many.toml", text))
    tasks = {t.name: t for t in store.find_project("p").engines[0].tasks}  # type: ignore[union-attr]
    t1, t2 = tasks["t1"], tasks["t2"]
    for t in (t1, t2):
        assert (t.type, t.value, t.max_threads, t.swap_flag) == ("name", "mysqld", 2, True)
        assert t.engine is t1.engine and t.config is not None and t.config["name"] == t.name
        assert t.params == {"T": None}
    assert t1.pids is not t2.pids and t1.stats is not t2.stats
    assert tasks["w1"].max_threads == tasks["w2"].max_threads == 1
    warned = [r.getMessage() for r in caplog.records if "fewer than 1 thread" in r.getMessage()]
    assert len(warned) == 2 and "task #3" in warned[0] and "task #4" in warned[1], warned
    # obj del: a name that is not plain gets the full checks too
    with pytest.raises(OptError) as e:
        store.obj_del(files("del.toml", MANY_HEAD + _like_tasks("t1", "a b", "t9", "t2")))
    assert code_of(e) is OptCode.OPT_TASK_NOEXIST
    assert e.value.reason == "del.toml: task #3: task t9 does not exist in engine rec"
    assert "del.toml: task #2: [task] name=a b: must not contain spaces" in caplog.text
    assert store.projects == []  # t1, t2 and the rest went, then the engine and the project


def test_the_keys_a_task_is_checked_for_by_name_only_are_all_it_is_checked_on() -> None:
    """obj add reuses the checks of an earlier task with the same project, engine, type,
    value, swap_flag and max_threads: the checks must read no other key but name."""
    from etmem_sdk import ConfigSection

    from etmem_core import lifecycle, object_keys

    class Spy(ConfigSection):
        def __init__(self, items: dict[str, str]) -> None:
            super().__init__("task", items, label="x")
            self.read: set[str] = set()

        def __getitem__(self, key: str) -> str:
            self.read.add(key)
            return super().__getitem__(key)

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

        def __contains__(self, key: object) -> bool:
            self.read.add(str(key))
            return super().__contains__(key)

    keyed = {"project", "engine", "name", "type", "value", "swap_flag", "max_threads"}
    base = {"project": "p", "engine": "e", "name": "t", "type": "pid", "value": "1"}
    for extra in ({}, {"swap_flag": "yes", "max_threads": "2", "T": "1", "other": "x"}):
        spy = Spy({**base, **extra})
        object_keys.task_identity(spy)
        lifecycle._check_pid_value(spy, object_keys.parse_task(spy, nprocs=2))
        assert spy.read <= keyed, spy.read - keyed


def test_obj_del_of_a_file_unchanged_since_its_add_reuses_that_parse(
    store: ObjectStore, files: Files, rec: Rec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing was ~2/3 of an obj del of 40,000 tasks, and the file is usually the very one
    added: bytes equal to those added are not parsed again (they are still read and checked);
    changed bytes are."""
    from etmem_core import objfile

    parsed: list[str] = []
    real = objfile.parse_object_data

    def counting(data: bytes | str, path: str) -> objfile.ObjectFile:
        parsed.append(os.path.basename(path))
        return real(data, path)

    monkeypatch.setattr(objfile, "parse_object_data", counting)
    head = MANY_HEAD
    same = files("same.toml", head + _like_tasks("t1", "t2"))
    store.obj_add(same)
    store.obj_del(same)
    assert parsed == ["same.toml"] and store.projects == []
    # changed after its add: parsed again, and what it says now is what is deleted
    changed = files("changed.toml", head + _like_tasks("t1", "t2"))
    store.obj_add(changed)
    files("changed.toml", head.replace('name = "rec"\n', 'name = "rec"\n# edited\n'))
    store.obj_del(changed)
    assert parsed == ["same.toml", "changed.toml", "changed.toml"]
    assert store.projects == []
    # a refused add is not remembered, and a delete forgets what it took
    store.obj_add(same)
    with pytest.raises(OptError):
        store.obj_add(same)  # exists
    store.obj_del(same)
    with pytest.raises(OptError):
        store.obj_del(same)
    assert parsed.count("same.toml") == 4  # add, refused add, (del reused), del parsed anew


def test_the_parse_memo_is_bounded_in_files_and_sections(tmp_path: Path) -> None:
    """What obj del may reuse stays bounded whatever was added (its tasks may have gone
    another way), and only the bytes it was made from get it back."""
    from etmem_core import objfile

    def parsed(name: str, tasks: int) -> objfile.ObjectFile:
        text = MANY_HEAD + _like_tasks(*(f"t{i}" for i in range(tasks)))
        obj = objfile.parse_object_data(text, str(tmp_path / name))
        obj.digest = objfile.digest_of(text.encode())
        return obj

    memo = objfile.ParseMemo(max_files=3, max_sections=12)  # a file of n tasks: n + 2
    a, b, c, d = parsed("a.toml", 2), parsed("b.toml", 2), parsed("c.toml", 2), parsed("d.toml", 2)
    for obj in (a, b, c, d):
        memo.remember(obj)
    assert len(memo) == 3 and memo.take(a.path, a.digest) is None  # the oldest went
    assert memo.take(b.path, b.digest + b"x") is None  # other bytes
    assert memo.take(b.path, b.digest) is None  # and the try forgot it
    assert memo.take(c.path, c.digest).tasks == c.tasks  # type: ignore[union-attr]
    memo.remember(parsed("big.toml", 11))  # 13 sections: more than the memo holds at all
    assert len(memo) == 1
    memo.remember(parsed("e.toml", 4))
    memo.remember(parsed("f.toml", 4))  # 4 + 6 + 6 > 12: d goes
    assert len(memo) == 2 and memo.take(d.path, d.digest) is None


def test_cyclic_gc_pauses_while_an_object_file_is_read_and_applied(files: Files) -> None:
    import gc

    seen = []

    class Watch:
        @hookimpl
        def fill_task_params(self, task, config):
            seen.append(gc.isenabled())

    registry = EngineRegistry()
    registry.register_plugin("rec", Watch())
    store = ObjectStore(registry, hook_deadline=0)
    text = '[project]\nname = "p"\nloop = 1\ninterval = 1\nsleep = 1\n[[engine]]\nname = "rec"\n'
    good = files("p.toml", text + f'[[task]]\nname = "t"\ntype = "pid"\nvalue = "{os.getpid()}"\n')
    bad = files("bad.toml", text + '[[task]]\nname = "t"\ntype = "pid"\nvalue = "x"\n')
    assert gc.isenabled()
    store.obj_add(good)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(OptError):
        store.obj_add(bad)  # a failure resumes it too
    assert gc.isenabled()
    gc.disable()
    try:  # and a collector the process had switched off stays off
        store.obj_del(good)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_an_object_file_added_goes_to_the_oldest_gc_generation(files: Files) -> None:
    """so that the first young collection after obj add does not traverse all of it (and
    objects someone froze on purpose stay frozen)."""
    import gc

    registry = EngineRegistry()
    registry.register_plugin("rec", Rec([]))
    store = ObjectStore(registry, hook_deadline=0)
    text = MANY_HEAD + _like_tasks(*(f"t{i}" for i in range(50)))
    gc.collect()
    store.obj_add(files("p.toml", text))
    tasks = store.find_project("p").engines[0].tasks  # type: ignore[union-attr]
    young = {id(o) for o in gc.get_objects(0) + gc.get_objects(1)}
    assert len(tasks) == 50 and not any(id(t) in young for t in tasks)
    store.obj_del(files("p.toml", text))
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        store.obj_add(files("p.toml", text))
        assert gc.get_freeze_count() == count and gc.isenabled()
    finally:
        gc.unfreeze()
        store.shutdown()


def test_a_refused_large_object_file_gives_its_parse_slot_back(files: Files) -> None:
    from etmem_core import lifecycle

    store = ObjectStore(EngineRegistry(), lock_wait=0.2)
    head = "[project]\nname=p\nloop=1\ninterval=1\nsleep=1\n"
    refused = [
        files("syntax.conf", head + "#" * (2 << 20) + "\nnot a key line\n"),
        files("bad.conf", head.replace("loop=1", "loop=0") + "#" * (2 << 20)),
        files("nogroup.conf", "#" * (2 << 20)),
    ]
    for _ in range(lifecycle.BIG_LOADS):
        for path in refused:
            with pytest.raises(OptError) as err:
                store.obj_add(path)
            assert "being read" not in err.value.reason
    store.obj_add(files("big.conf", head + "#" * (2 << 20)))  # not "busy"
    assert [p.name for p in store.projects] == ["p"]
    assert store._big_loads._value == lifecycle.BIG_LOADS


def test_large_object_files_are_parsed_a_bounded_number_at_a_time(files: Files) -> None:
    from etmem_core import lifecycle

    store = ObjectStore(EngineRegistry(), lock_wait=0.2)
    big = files("big.conf", "[project]\nname=p\nloop=1\ninterval=1\nsleep=1\n" + "#" * (2 << 20))
    for _ in range(lifecycle.BIG_LOADS):  # as many big adds in flight as allowed
        assert store._big_loads.acquire(timeout=1)
    with pytest.raises(OptError, match="another large object file is being read"):
        store.obj_add(big)
    store._big_loads.release()
    store.obj_add(big)  # a slot free: it goes through
    assert [p.name for p in store.projects] == ["p"]
    # and the slot is held while the request applies the file (its parsed form lives that long)
    seen = []
    real_request = store._request

    def watching():
        seen.append(store._big_loads._value)
        return real_request()

    store._request = watching
    with pytest.raises(OptError):
        store.obj_add(big)  # already added
    assert seen == [0]
    assert store._big_loads.acquire(timeout=0)  # released at the end
