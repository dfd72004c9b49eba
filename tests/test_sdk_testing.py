"""etmem_sdk.testing: the fake /proc builder, the recording actuator, the in-process engine
harness, the live workload and swap helpers, and the fixtures through the pytest11 entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import pids, procfs, trackers
from etmem_sdk import ConfigError, hookimpl, scan
from etmem_sdk.testing import EngineHarness, FakeProc, RecordingActuator, spawn_workload, swap_on
from etmem_sdk.worker import PeriodicWorker
from pluggy import PluginValidationError

MIB = 1 << 20
PAGES = MIB // scan.PAGE_SIZE


# --- fake /proc -----------------------------------------------------------------------------------


def test_fake_tree_reads_like_proc(tmp_path):
    tree = FakeProc(tmp_path / "proc", mem_total_kb=1 << 20, swap_total_kb=1 << 19)
    parent = tree.add_process(comm="a-rather-long-process-name", vmas=[(0x1000_0000, MIB)])
    child = tree.add_process(comm="kid", ppid=parent.pid, vmas=[(0x2000_0000, 2 * MIB)])
    root = tree.proc_root
    assert pids.pids_by_name("a-rather-long-p", root) == [parent.pid]  # 15 characters, as comm
    assert pids.children_of(parent.pid, root) == [child.pid]
    assert not pids.is_kernel_thread(child.pid, root)
    [vma] = procfs.read_vmas(child.pid, proc_root=root)
    assert (vma.start, vma.end, vma.is_anonymous) == (0x2000_0000, 0x2000_0000 + 2 * MIB, True)
    [smaps_vma] = procfs.read_vmas(child.pid, vmflags=["wr"], proc_root=root)
    assert "ac" in smaps_vma.vmflags
    assert procfs.read_status(child.pid, root) == {
        "Tgid": child.pid, "Pid": child.pid, "PPid": parent.pid, "VmRSS": 2048, "VmSwap": 0,
    }  # fmt: skip
    assert procfs.read_meminfo(root)["MemTotal"] == 1 << 20
    assert len(scan.present_pages(child.pid, [vma], proc_root=root)) == 2 * PAGES


def test_fake_tree_follows_touch_and_page_out(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    p = tree.add_process(vmas=[(0x1000_0000, MIB), (0x2000_0000, MIB)])
    hot, cold = p.vmas
    p.touch(hot)
    vmas = procfs.read_vmas(p.pid, proc_root=tree.proc_root)
    with trackers.make_tracker("refs", p.pid, proc_root=tree.proc_root) as t:
        one = t.scan_pass(vmas)
    assert (
        one.weight[one.addr < 0x2000_0000].all() and not one.weight[one.addr >= 0x2000_0000].any()
    )

    moved = tree.page_out(p.pid, np.arange(0x2000_0000, 0x2000_0000 + MIB // 2, scan.PAGE_SIZE))
    assert moved == PAGES // 2
    assert tree.page_out(p.pid, np.array([0x2000_0000], np.uint64)) == 0  # already out
    status = procfs.read_status(p.pid, tree.proc_root)
    assert status["VmRSS"] == 1024 + 512 and status["VmSwap"] == 512
    assert procfs.read_meminfo(tree.proc_root)["SwapFree"] == tree.swap_total_kb - 512
    assert len(scan.present_pages(p.pid, [cold], proc_root=tree.proc_root)) == PAGES // 2
    tree.remove_process(p.pid)
    assert not pids.alive(p.pid, tree.proc_root)


def test_fake_vma_must_be_page_aligned(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    with pytest.raises(ValueError, match="page-aligned"):
        tree.add_process(vmas=[(0x1000_0001, MIB)])


def test_recording_actuator_records_and_acts_on_the_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    p = tree.add_process(vmas=[(0x1000_0000, MIB)])
    act = RecordingActuator(tree)
    assert act.apply(p.pid, np.array([0x1000_0000, 0x1000_1000], np.uint64)) == 2 * scan.PAGE_SIZE
    assert act.pages == 2 and act.calls[0].pid == p.pid
    assert procfs.read_status(p.pid, tree.proc_root)["VmSwap"] == 2 * scan.PAGE_SIZE // 1024


def test_fake_proc_fixture_points_the_scan_defaults_at_the_tree(etmem_fake_proc):
    d = scan.defaults()
    assert d.proc_root == etmem_fake_proc.proc_root
    assert (d.tracker, d.actuator) == ("refs", "fake")
    assert scan.open_actuator(scan.choose_actuator()) is etmem_fake_proc.actuator


# --- the harness ----------------------------------------------------------------------------------


class Recorder:
    """A plugin that logs every hook call and keeps a PeriodicWorker in task.params."""

    def __init__(self):
        self.log = []
        self.ticks = 0

    @hookimpl
    def fill_eng_params(self, engine, config):
        self.log.append(("fill_eng_params", dict(config)))

    @hookimpl
    def clear_eng_params(self, engine):
        self.log.append(("clear_eng_params", engine.name))

    @hookimpl
    def fill_task_params(self, task, config):
        if config.get("bad"):
            raise ConfigError(f"{config.where('bad')}: no")
        self.log.append(("fill_task_params", task.name, task.value, task.max_threads))
        task.params = {"worker": None}

    @hookimpl
    def clear_task_params(self, task):
        self.log.append(("clear_task_params", task.name))

    @hookimpl
    def start_task(self, engine, task):
        self.log.append(("start_task", task.name, engine.project.interval))

        def work(tp, sleep):
            self.ticks += 1

        task.params["worker"] = PeriodicWorker(
            task, work, interval=engine.project.interval, refresh=lambda t: [object()]
        )
        task.params["worker"].start()

    @hookimpl
    def stop_task(self, engine, task):
        self.log.append(("stop_task", task.name))
        task.params["worker"].stop()

    @hookimpl
    def eng_mgt_func(self, engine, task, cmd, reply):
        reply.write(f"{cmd} for {task.name if task else 'all'}\n")


def test_harness_calls_hooks_in_the_daemons_order():
    rec = Recorder()
    h = EngineHarness(rec, name="rec")
    assert h.implements == {
        "fill_eng_params", "clear_eng_params", "fill_task_params", "clear_task_params",
        "start_task", "stop_task", "eng_mgt_func",
    }  # fmt: skip
    h.add(engine={"knob": 3}, tasks=[{"value": 42, "max_threads": 2}, {"value": 7}])
    h.start()
    h.tick(3)
    assert rec.ticks == 6  # three cycles of two tasks, with the timer itself quiet
    assert h.command("showstats") == "showstats for all\n"
    assert h.command("showstats", task="task2") == "showstats for task2\n"
    late = h.add_task({"name": "late", "value": 9})
    assert late.params["worker"].running  # added to a started project: started at once
    h.remove()
    assert rec.log == [
        ("fill_eng_params", {"name": "rec", "project": "test", "knob": "3"}),
        ("fill_task_params", "task1", "42", 2),
        ("fill_task_params", "task2", "7", 1),
        ("start_task", "task2", 3600),
        ("start_task", "task1", 3600),
        ("fill_task_params", "late", "9", 1),
        ("start_task", "late", 3600),
        ("stop_task", "late"),
        ("stop_task", "task2"),
        ("stop_task", "task1"),
        ("clear_task_params", "late"),
        ("clear_task_params", "task2"),
        ("clear_task_params", "task1"),
        ("clear_eng_params", "rec"),
    ]
    assert not [t for t in threading.enumerate() if t.name.startswith("etmem-task")]


def test_harness_refuses_what_the_daemon_refuses():
    class Misspelt:
        @hookimpl
        def start_tsk(self, engine, task):
            pass

    with pytest.raises(PluginValidationError):
        EngineHarness(Misspelt())

    h = EngineHarness(Recorder(), name="rec")
    with pytest.raises(ConfigError, match=r"test.conf: \[task\] bad=1: no"):
        h.add(tasks=[{"value": 1, "bad": 1}])
    assert h.engine is not None and h.engine.tasks == []  # unlinked again, as etmemd does
    with pytest.raises(ConfigError, match=r"\[task\] type=uid: must be pid or name"):
        h.add_task({"value": 1, "type": "uid"})

    class NoStart:
        @hookimpl
        def fill_eng_params(self, engine, config):
            pass

    bare = EngineHarness(NoStart(), name="bare")
    bare.add(tasks=[{"value": 1}])
    with pytest.raises(RuntimeError, match="no start_task"):
        bare.start()


def test_tick_needs_a_worker_in_task_params():
    class Workerless:
        @hookimpl
        def start_task(self, engine, task):
            task.params = "nothing to tick"

    h = EngineHarness(Workerless(), name="w")
    h.add(tasks=[{"value": 1}])
    with pytest.raises(RuntimeError, match="start"):
        h.tick()
    h.start()
    with pytest.raises(RuntimeError, match="no PeriodicWorker"):
        h.tick()


def test_fixtures_reach_other_projects_through_the_entry_point(tmp_path):
    """A policy author's test suite: no conftest, no imports of fixtures -- only the plugin."""
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "test_policy.py").write_text(
        textwrap.dedent(
            """
            from etmem_sdk import hookimpl, scan
            from etmem_sdk.worker import PeriodicWorker

            class Out:
                @hookimpl
                def start_task(self, engine, task):
                    def cycle(tp, sleep):
                        vmas = scan.read_vmas(tp.pid)
                        act = scan.open_actuator(scan.choose_actuator())
                        act.apply(tp.pid, scan.present_pages(tp.pid, vmas))
                    task.params = PeriodicWorker(task, cycle, interval=3600)
                    task.params.start()

                @hookimpl
                def stop_task(self, engine, task):
                    task.params.stop()

            def test_out(etmem_engine, etmem_fake_proc):
                p = etmem_fake_proc.add_process(vmas=[(0x10000000, 1 << 20)])
                h = etmem_engine(Out(), name="out")
                h.add(tasks=[{"value": p.pid}])
                h.start()
                h.tick()
                assert scan.read_status(p.pid)["VmSwap"] == 1024

            def test_defaults_are_back():
                assert scan.defaults() == scan.ScanDefaults()
            """
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout


# --- live helpers ---------------------------------------------------------------------------------


def test_workload_has_a_hot_and_a_cold_mapping_and_dies_on_exit():
    with spawn_workload(hot_mib=2, cold_mib=4) as w:
        pid = w.pid
        spans = {(v.start, v.end) for v in procfs.read_vmas(pid)}
        assert w.hot in spans and w.cold in spans
        assert w.resident("hot") == 2 * PAGES and w.resident("cold") == 4 * PAGES
        assert w.status()["VmRSS"] >= 6 * 1024
    assert w.proc.returncode == -9  # killed and reaped on leaving the block


@pytest.mark.root
@pytest.mark.swap
def test_swap_on_is_switched_off_and_deleted_even_on_failure():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(RuntimeError, match="boom"):
        with swap_on(16) as path:
            with open("/proc/swaps") as f:
                assert str(path) in f.read()
            raise RuntimeError("boom")
    with open("/proc/swaps") as f:
        assert str(path) not in f.read()
    assert not path.exists()


def test_the_tutorials_policy_and_tests_run(tmp_path):
    """docs/writing-a-policy.md: its engine and its tests, copied out of the page, pass."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "writing-a-policy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 2, "the tutorial has one engine block and one test block"
    pkg = tmp_path / "src" / "etmem_plugin_quiet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine.py").write_text(blocks[0])
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_quiet.py").write_text(blocks[1])
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 passed" in res.stdout or (os.geteuid() != 0 and "2 passed" in res.stdout)


def test_harness_loads_an_installed_engine_by_name():
    h = EngineHarness("slide")  # the built-in, through its etmem.engines entry point
    assert h.name == "slide" and "start_task" in h.implements
    with pytest.raises(LookupError, match="no 'etmem.engines' entry point named 'nope'"):
        EngineHarness("nope")
