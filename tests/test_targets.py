"""etmem_sdk.targets: main pid + direct children, merged every cycle, on a fake /proc tree."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from etmem_sdk import Engine, EngineError, TargetGone, Task, hookimpl
from etmem_sdk.hooks import EngineHooks
from etmem_sdk.targets import pid_value, refresh_task_pids, release_task_pids, resolve_main_pid


def fake_proc(root: Path, pid: int, comm: str, ppid: int = 1, flags: int = 0x400100) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    tail = " ".join(["0"] * 40)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 {flags} {tail}\n")
    (d / "comm").write_text(comm + "\n")


def kill_proc(root: Path, pid: int) -> None:
    shutil.rmtree(root / str(pid))


class Recorder:
    """An engine that records pid hooks and can refuse chosen pids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse: set[int] = set()

    @hookimpl
    def alloc_pid_params(self, engine, task_pid):
        self.calls.append(("alloc", task_pid.pid))
        if task_pid.pid in self.refuse:
            raise EngineError(f"no room for {task_pid.pid}")
        task_pid.params = {"pid": task_pid.pid}

    @hookimpl
    def free_pid_params(self, engine, task_pid):
        self.calls.append(("free", task_pid.pid))
        task_pid.params = None


def make_task(plugin: object | None, type_: str = "name", value: str = "mysqld") -> Task:
    engine = Engine(name="rec", kind="rec")
    if plugin is not None:
        engine.hooks = EngineHooks(plugin)
        engine.implements = engine.hooks.implemented
    task = Task(name="t1", type=type_, value=value, engine=engine)
    engine.tasks.append(task)
    return task


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    fake_proc(root, 1, "systemd", 0)
    fake_proc(root, 2, "kthreadd", 0, flags=0x208040)
    fake_proc(root, 100, "mysqld")
    fake_proc(root, 230, "mysqld")
    fake_proc(root, 101, "worker", 100)
    fake_proc(root, 150, "worker", 100)
    fake_proc(root, 160, "grandchild", 150)
    return root


def pids_of(task: Task) -> list[int]:
    return [tp.pid for tp in task.pids]


# -- resolve_main_pid ---------------------------------------------------------------------------


def test_resolve_by_name_takes_lowest_exact_match(proc: Path) -> None:
    assert resolve_main_pid(make_task(None), str(proc)) == 100
    with pytest.raises(TargetGone, match="no process named 'mysql'"):
        resolve_main_pid(make_task(None, value="mysql"), str(proc))


def test_resolve_by_pid(proc: Path) -> None:
    assert resolve_main_pid(make_task(None, "pid", "230"), str(proc)) == 230
    with pytest.raises(TargetGone, match="process 7 does not exist"):
        resolve_main_pid(make_task(None, "pid", "7"), str(proc))


@pytest.mark.parametrize("value", ["no123", "-1", "1.5", "", "1234567890"])
def test_resolve_rejects_non_pids(proc: Path, value: str) -> None:
    with pytest.raises(TargetGone, match="not a process id"):
        resolve_main_pid(make_task(None, "pid", value), str(proc))


def test_resolve_unknown_type(proc: Path) -> None:
    with pytest.raises(TargetGone, match="unknown target type"):
        resolve_main_pid(make_task(None, "cgroup", "x"), str(proc))


# -- refresh_task_pids --------------------------------------------------------------------------


def test_main_then_direct_children_with_alloc(proc: Path) -> None:
    rec = Recorder()
    task = make_task(rec)
    got = refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert got is task.pids
    assert pids_of(task) == [100, 101, 150]  # not the grandchild 160, not the other mysqld
    assert rec.calls == [("alloc", 100), ("alloc", 101), ("alloc", 150)]
    assert all(tp.params == {"pid": tp.pid} and tp.task is task for tp in task.pids)


def test_not_recursive_keeps_main_only(proc: Path) -> None:
    task = make_task(Recorder())
    refresh_task_pids(task, recursive=False, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100]


def test_merge_keeps_survivors_and_frees_vanished(proc: Path) -> None:
    rec = Recorder()
    task = make_task(rec)
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    survivor = task.pids[1]
    kill_proc(proc, 150)
    fake_proc(proc, 120, "worker", 100)
    rec.calls.clear()
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100, 101, 120]
    assert task.pids[1] is survivor  # params kept, no second alloc
    assert sorted(rec.calls) == [("alloc", 120), ("free", 150)]


def test_main_exit_frees_all_and_is_logged(proc: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    task = make_task(rec, "pid", "100")
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    rec.calls.clear()
    kill_proc(proc, 100)
    with caplog.at_level(logging.WARNING, logger="etmem.targets"):
        assert refresh_task_pids(task, proc_root=str(proc), exclude=()) == []
    assert sorted(rec.calls) == [("free", 100), ("free", 101), ("free", 150)]
    assert "target pid 100 gone" in caplog.text
    # still gone next cycle: nothing to free, no new warning
    rec.calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="etmem.targets"):
        assert refresh_task_pids(task, proc_root=str(proc), exclude=()) == []
    assert rec.calls == [] and caplog.text == ""


def test_replaced_target_rebuilds_the_list(proc: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    task = make_task(rec)
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    old_child = task.pids[1]
    # mysqld restarted: pid 100 and its children are gone, the lowest match is now 230
    for pid in (101, 150, 160, 100):
        kill_proc(proc, pid)
    fake_proc(proc, 231, "worker", 230)
    rec.calls.clear()
    with caplog.at_level(logging.WARNING, logger="etmem.targets"):
        refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [230, 231]
    assert task.pids[0] is not old_child
    assert rec.calls[:3] == [("free", 100), ("free", 101), ("free", 150)]
    assert rec.calls[3:] == [("alloc", 230), ("alloc", 231)]
    assert "target pid 100 exited, now pid 230" in caplog.text


def test_main_pid_change_while_old_alive_rebuilds(proc: Path) -> None:
    rec = Recorder()
    task = make_task(rec, "pid", "100")
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    task.value = "230"  # the same task now names another live process
    rec.calls.clear()
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [230]
    assert ("free", 100) in rec.calls and ("alloc", 230) in rec.calls


def test_alloc_failure_drops_that_pid_and_retries(proc: Path) -> None:
    rec = Recorder()
    rec.refuse = {101}
    task = make_task(rec)
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100, 150]
    rec.refuse.clear()
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100, 101, 150]


def test_alloc_failure_of_main_leaves_no_pids(proc: Path) -> None:
    rec = Recorder()
    rec.refuse = {100}
    task = make_task(rec)
    assert refresh_task_pids(task, proc_root=str(proc), exclude=()) == []
    assert ("alloc", 101) not in rec.calls


def test_free_failure_is_not_fatal(proc: Path) -> None:
    class BadFree(Recorder):
        @hookimpl
        def free_pid_params(self, engine, task_pid):
            raise RuntimeError("bug in free")

    task = make_task(BadFree())
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    kill_proc(proc, 150)
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100, 101]


def test_engine_without_pid_hooks(proc: Path) -> None:
    class Nothing:
        @hookimpl
        def start_task(self, engine, task):
            pass

    task = make_task(Nothing())
    assert task.engine is not None and task.engine.implements == {"start_task"}
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    assert pids_of(task) == [100, 101, 150]
    assert all(tp.params is None for tp in task.pids)


def test_excluded_and_kernel_threads_are_never_targets(
    proc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_proc(proc, 40, "kworker", 2, flags=0x4208060)
    fake_proc(proc, 170, "kworker", 100, flags=0x4208060)  # odd, but must be skipped
    rec = Recorder()
    task = make_task(rec)
    refresh_task_pids(task, proc_root=str(proc), exclude=(150,))
    assert pids_of(task) == [100, 101]
    for value in ("1", "40"):
        t = make_task(Recorder(), "pid", value)
        with caplog.at_level(logging.WARNING, logger="etmem.targets"):
            assert refresh_task_pids(t, proc_root=str(proc)) == []
        assert f"pid {value} is etmemd, init or a kernel thread" in caplog.text
        caplog.clear()
        # the same skip is not warned about again
        with caplog.at_level(logging.WARNING, logger="etmem.targets"):
            assert refresh_task_pids(t, proc_root=str(proc)) == []
        assert caplog.text == ""


def test_default_exclude_is_etmemd_itself() -> None:
    task = make_task(Recorder(), "pid", str(os.getpid()))
    assert refresh_task_pids(task) == []


def test_release_task_pids(proc: Path) -> None:
    rec = Recorder()
    task = make_task(rec)
    refresh_task_pids(task, proc_root=str(proc), exclude=())
    rec.calls.clear()
    release_task_pids(task)
    assert task.pids == []
    assert sorted(rec.calls) == [("free", 100), ("free", 101), ("free", 150)]


def test_live_process_with_children(process_tree) -> None:
    """A real parent with two real children, found by pid on the real /proc."""
    parent, kids = process_tree
    task = make_task(Recorder(), "pid", str(parent))
    refresh_task_pids(task)
    assert pids_of(task) == [parent, *kids]


@pytest.mark.parametrize(
    ("value", "pid"),
    [("1", 1), ("4242", 4242), ("999999999", 999999999), ("0", None), ("1000000000", None),
     ("-1", None), ("0x10", None), ("abc", None), ("", None)],
)  # fmt: skip
def test_the_pid_value_rule(value: str, pid: int | None) -> None:
    """One rule for obj add (which refuses the file) and every refresh (target gone)."""
    assert pid_value(value) == pid
