"""The psi engine on fake cgroup trees: every write to memory.reclaim, every refusal."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from etmem_psi import engine as psi
from etmem_psi.config import PsiTaskConfig, parse_task_config
from etmem_psi.controller import reclaim_floor, reclaim_size
from etmem_sdk import ConfigError, ConfigSection, scan
from etmem_sdk.cgroup import CgroupLayout, MemoryState
from etmem_sdk.testing import EngineHarness
from fake_cgroups import FakeCgroups

MiB = 1 << 20
PROJECT = {"name": "p", "scan_type": "psi", "interval": 3600}


def roots(tmp_path, version="v2"):
    sys_root, proc_root = tmp_path / "sys", tmp_path / "proc"
    tree = FakeCgroups(sys_root, proc_root, version)
    (proc_root / "meminfo").write_text("MemTotal: 16777216 kB\nSwapFree: 4194304 kB\n")
    return tree, str(sys_root), str(proc_root)


@pytest.fixture
def v2(tmp_path):
    tree, sys_root, proc_root = roots(tmp_path)
    with scan.using_defaults(sys_root=sys_root, proc_root=proc_root):
        yield tree


@pytest.fixture
def v1(tmp_path):
    tree, sys_root, proc_root = roots(tmp_path, "v1")
    with scan.using_defaults(sys_root=sys_root, proc_root=proc_root):
        yield tree


@pytest.fixture
def harness():
    h = EngineHarness(psi, "psi")
    yield h
    h.remove()


def add(h, **task):
    keys = {"type": "name", "value": "cgroup_v2", "cg_dir": "work/*"}
    keys.update(task)
    h.add(PROJECT, tasks=[keys], label="psi.conf")
    return h.task()


def section(**keys):
    return ConfigSection("task", {"cg_dir": "a", **{k: str(v) for k, v in keys.items()}},
                         label="psi.conf")  # fmt: skip


# -- configuration ----------------------------------------------------------------------------


def test_defaults_are_the_originals():
    cfg = parse_task_config(section())
    assert cfg == PsiTaskConfig("a", 0.1, 0.05, 0.5, 0.01, 0.1, 0, 1 << 30)


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("pressure", "0", "greater than 0 and at most 100"),
        ("pressure", "100.5", "greater than 0 and at most 100"),
        ("pressure", "nan", "greater than 0"),
        ("reclaim_rate", "0", "greater than 0 and at most 1"),
        ("reclaim_rate_max", "1.5", "greater than 0 and at most 1"),
        ("reclaim_rate_min", "-0.1", "greater than 0 and at most 1"),
        ("limit_min_ratio", "2", "greater than 0 and at most 1"),
        ("limit_min_ratio", "x", "must be a number"),
        ("limit_min_bytes", "-1", "from 0 to 9223372036854775807"),
        ("limit_min_bytes", "1G", "from 0 to 9223372036854775807"),
        ("reclaim_max_bytes", "4095", "from 4096 to 9223372036854775807"),
        ("reclaim_max_bytes", "9223372036854775808", "from 4096 to"),
    ],
)
def test_out_of_range_values_are_refused_naming_file_group_key_and_range(key, value, rule):
    with pytest.raises(ConfigError) as err:
        parse_task_config(section(**{key: value}))
    assert str(err.value).startswith(f"psi.conf: [task] {key}={value}: ")
    assert rule in str(err.value)


def test_rates_must_be_ordered():
    with pytest.raises(ConfigError, match=r"\[task\] reclaim_rate_min=0.6: must be at most "
                       r"reclaim_rate_max \(0.5\)"):  # fmt: skip
        parse_task_config(section(reclaim_rate_min=0.6))
    rule = r"reclaim_rate \(0.7\) must be from reclaim_rate_min \(0.01\) to reclaim_rate_max"
    with pytest.raises(ConfigError, match=r"\[task\] reclaim_rate=0.7: " + rule):
        parse_task_config(section(reclaim_rate=0.7))
    # the default start rate (0.05) outside a bound the user set: the bound is named
    with pytest.raises(ConfigError, match=r"\[task\] reclaim_rate_max=0.02: reclaim_rate"):
        parse_task_config(section(reclaim_rate_max=0.02))


@pytest.mark.parametrize(
    ("value", "rule"),
    [("../etc", "'..' component"), ("a/../../b", "'..' component"), ("x" * 64, "at most 63")],
)
def test_bad_cg_dir_is_refused(value, rule):
    with pytest.raises(ConfigError, match=rule):
        parse_task_config(section(cg_dir=value))


def test_cg_dir_is_required():
    with pytest.raises(ConfigError, match=r"psi.conf: \[task\] cg_dir: key not set"):
        parse_task_config(ConfigSection("task", {}, label="psi.conf"))


def test_engine_needs_a_psi_project(v2, harness):
    with pytest.raises(ConfigError, match="needs a project with scan_type=psi"):
        harness.add({"name": "p", "scan_type": "page", "loop": 1, "interval": 1, "sleep": 1})


def test_engine_refused_without_psi(tmp_path, harness):
    tree, sys_root, proc_root = roots(tmp_path)
    os.unlink(f"{proc_root}/pressure/memory")
    with scan.using_defaults(sys_root=sys_root, proc_root=proc_root):
        with pytest.raises(ConfigError, match=r"cannot work here: .*pressure/memory does not "
                           "exist: the kernel has no PSI"):  # fmt: skip
            harness.add(PROJECT)


def test_engine_refused_on_a_machine_like_this_one(tmp_path, harness):
    """cgroup v2 without the memory controller, v1 memory without memory.reclaim."""
    tree, sys_root, proc_root = roots(tmp_path, "hybrid")
    with scan.using_defaults(sys_root=sys_root, proc_root=proc_root):
        with pytest.raises(ConfigError) as err:
            harness.add(PROJECT)
    text = str(err.value)
    assert "[engine] name=psi: cannot work here: no memory cgroup with memory.reclaim" in text
    assert "unified has no memory controller" in text
    assert "memory has no memory.reclaim (an openEuler extension)" in text


def test_this_machine_is_refused_for_the_reason_it_has():
    """The real /sys: where cgroup v2 lacks the memory controller the engine says so."""
    unified = "/sys/fs/cgroup/unified/cgroup.controllers"
    if not os.path.isfile(unified) or "memory" in Path(unified).read_text().split():
        pytest.skip("not a hybrid cgroup host without v2 memory (the development VM is one)")
    harness = EngineHarness(psi, "psi")
    with pytest.raises(ConfigError, match="has no memory controller"):
        harness.add(PROJECT)


# -- the controller's arithmetic --------------------------------------------------------------


def mem(usage, anon=0, file=0, limit=None, min=0, low=0, swap=1 << 40):
    return MemoryState(usage, limit, min, low, anon, file, swap)


def test_floor_is_the_largest_of_its_terms():
    cfg = PsiTaskConfig("a", limit_min_bytes=10 * MiB)
    # 100 MiB used, 60 on the LRUs: 40 cannot be reclaimed, plus limit_min_bytes
    assert reclaim_floor(mem(100 * MiB, anon=30 * MiB, file=30 * MiB), cfg) == 50 * MiB
    # without swap room, anonymous memory cannot go anywhere
    assert reclaim_floor(mem(100 * MiB, anon=30 * MiB, file=30 * MiB, swap=0), cfg) == 80 * MiB
    full = mem(100 * MiB, anon=50 * MiB, file=50 * MiB)
    assert reclaim_floor(full, cfg) == 10 * MiB
    assert reclaim_floor(mem(100 * MiB, 50 * MiB, 50 * MiB, low=20 * MiB), cfg) == 20 * MiB
    assert reclaim_floor(mem(100 * MiB, 50 * MiB, 50 * MiB, min=30 * MiB), cfg) == 30 * MiB
    # limit_min_ratio (0.1) of the limit
    assert reclaim_floor(mem(100 * MiB, 50 * MiB, 50 * MiB, limit=500 * MiB), cfg) == 50 * MiB


def test_size_is_the_rate_of_what_lies_above_the_floor_capped_and_in_pages():
    cfg = PsiTaskConfig("a", reclaim_max_bytes=8 * MiB)
    assert reclaim_size(mem(100 * MiB), 60 * MiB, 0.1, cfg) == 4 * MiB
    assert reclaim_size(mem(100 * MiB), 0, 0.5, cfg) == 8 * MiB  # capped
    assert reclaim_size(mem(100 * MiB + 1), 0, 0.01, cfg) == (100 * MiB + 1) // 100 // 4096 * 4096
    assert reclaim_size(mem(50 * MiB), 60 * MiB, 0.5, cfg) == 0  # below the floor
    assert reclaim_size(mem(10000), 0, 0.1, cfg) == 0  # less than a page


# -- rounds on a fake tree --------------------------------------------------------------------


def test_low_pressure_round_writes_the_share_to_memory_reclaim(v2, harness):
    v2.add("work/a", usage=200 * MiB, anon=100 * MiB, file=100 * MiB)
    task = add(harness, reclaim_rate=0.1, reclaim_rate_min=0.01)
    psi.run_round(task)
    # floor = limit_min_bytes (0) + unreclaimable (0) -> 10 % of 200 MiB
    assert v2.reclaim_written("work/a") == str(20 * MiB)
    stats = task.stats["cgroups"]["work/a"]
    assert stats["usage"] == 200 * MiB and stats["rate"] == 0.1 and stats["rounds"] == 1


def test_high_pressure_writes_nothing_and_slows_down(v2, harness):
    v2.add("work/a", usage=200 * MiB, anon=100 * MiB, file=100 * MiB)
    v2.set_pressure("work/a", avg10=0.0, avg60=0.5)  # the 60 s window counts too
    task = add(harness, pressure=0.2, reclaim_rate=0.1)
    psi.run_round(task)
    assert v2.reclaim_written("work/a") == ""
    assert task.stats["cgroups"]["work/a"]["rate"] == 0.1
    psi.run_round(task)  # second high round in a row: one step down
    assert task.stats["cgroups"]["work/a"]["rate"] == pytest.approx(0.09)
    for _ in range(40):
        psi.run_round(task)
    assert task.stats["cgroups"]["work/a"]["rate"] == pytest.approx(0.01)  # not below min
    assert task.stats["cgroups"]["work/a"]["paused_rounds"] == 42
    assert v2.reclaim_written("work/a") == ""
    v2.set_pressure("work/a", avg10=0.1, avg60=0.1)  # calm again: reclaim at the lowered rate
    psi.run_round(task)
    assert v2.reclaim_written("work/a") == str(int(200 * MiB * 0.01) // 4096 * 4096)


class KernelLike(CgroupLayout):
    """memory.reclaim that frees what it is asked (up to ``reclaimable``), like the kernel."""

    tree: FakeCgroups
    reclaimable: int = 1 << 62

    def reclaim(self, rel, nbytes):
        assert super().reclaim(rel, nbytes)
        self.tree.reclaim_written(rel)
        freed = min(nbytes, self.reclaimable)
        self.reclaimable -= freed
        self.tree.set_usage(rel, self.tree.usage(rel) - freed)
        self.calls.append(nbytes)
        return freed == nbytes


def kernel_like(task, tree, reclaimable=1 << 62):
    layout = task.params.layout
    k = KernelLike(layout.version, layout.pressure_root, layout.memory_root, layout.proc_root)
    object.__setattr__(k, "tree", tree)
    object.__setattr__(k, "reclaimable", reclaimable)
    object.__setattr__(k, "calls", [])
    task.params.layout = k
    return k


def test_rate_rises_after_five_complete_rounds_up_to_the_max(v2, harness):
    v2.add("work/a", usage=1000 * MiB, anon=500 * MiB, file=500 * MiB)
    task = add(harness, reclaim_rate=0.05, reclaim_rate_max=0.07)
    k = kernel_like(task, v2)
    for _ in range(4):
        psi.run_round(task)
    assert task.stats["cgroups"]["work/a"]["rate"] == 0.05
    psi.run_round(task)
    assert task.stats["cgroups"]["work/a"]["rate"] == pytest.approx(0.06)
    for _ in range(20):
        psi.run_round(task)
    assert task.stats["cgroups"]["work/a"]["rate"] == pytest.approx(0.07)  # capped
    freed = 1000 * MiB - v2.usage("work/a")
    assert task.stats["cgroups"]["work/a"]["bytes_reclaimed"] == freed == sum(k.calls)
    assert task.stats["bytes_reclaimed"] == freed


def test_a_short_reclaim_does_not_speed_up(v2, harness):
    v2.add("work/a", usage=1000 * MiB, anon=500 * MiB, file=500 * MiB)
    task = add(harness, reclaim_rate=0.05)
    kernel_like(task, v2, reclaimable=10 * MiB)
    for _ in range(10):
        psi.run_round(task)
    c = task.stats["cgroups"]["work/a"]
    assert c["rate"] == 0.05 and c["bytes_reclaimed"] == 10 * MiB
    assert c["state"] == "reclaim short"


def test_big_requests_go_in_chunks_and_stop_between_them(v2, harness):
    v2.add("work/a", usage=4000 * MiB, anon=2000 * MiB, file=2000 * MiB)
    task = add(harness, reclaim_rate=0.5)
    k = kernel_like(task, v2)
    psi.run_round(task)
    assert k.calls == [64 * MiB] * 16  # 1 GiB (reclaim_max_bytes) in 64 MiB writes
    k.calls.clear()
    stop = threading.Event()
    stop.set()
    psi.run_round(task, stop)
    assert k.calls == []


def test_floor_stops_reclaim(v2, harness):
    v2.add("work/a", usage=100 * MiB, anon=50 * MiB, file=50 * MiB, low=100 * MiB)
    task = add(harness)
    psi.run_round(task)
    assert v2.reclaim_written("work/a") == ""
    assert task.stats["cgroups"]["work/a"]["state"] == "at floor"


def test_limit_min_bytes_and_ratio_keep_memory(v2, harness):
    v2.add("work/a", usage=100 * MiB, anon=50 * MiB, file=50 * MiB, limit=400 * MiB)
    task = add(harness, reclaim_rate=0.5, limit_min_ratio=0.2)  # floor 80 MiB
    psi.run_round(task)
    assert v2.reclaim_written("work/a") == str(10 * MiB)
    v2.add("work/b", usage=100 * MiB, anon=50 * MiB, file=50 * MiB)
    task.params.config = parse_task_config(section(cg_dir="work/*", reclaim_rate=0.5,
                                                   limit_min_bytes=90 * MiB))  # fmt: skip
    psi.run_round(task)
    assert v2.reclaim_written("work/b") == str(5 * MiB)


def test_glob_with_braces_matches_several_cgroups(v2, harness):
    for rel in ("a/x", "b/x", "c/x"):
        v2.add(rel, usage=100 * MiB, file=100 * MiB)
    task = add(harness, cg_dir="{a,b}/x", reclaim_rate=0.1)
    psi.run_round(task)
    assert set(task.stats["cgroups"]) == {"a/x", "b/x"}
    assert v2.reclaim_written("a/x") == v2.reclaim_written("b/x") == str(10 * MiB)
    assert v2.reclaim_written("c/x") == ""


def test_no_match_is_a_warning_in_the_log_and_showstats(v2, harness, caplog):
    task = add(harness, cg_dir="nothing/*")
    with caplog.at_level(logging.WARNING):
        harness.start()
        psi.run_round(task)
        psi.run_round(task)
    expected = "cg_dir nothing/* matches no cgroup under"
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()] != []
    assert len([r for r in caplog.records if expected in r.getMessage()]) == 1  # not per round
    assert f"warning: {expected}" in harness.command("showstats")
    assert task.stats["running"] is True
    v2.add("nothing/now", usage=10 * MiB, file=10 * MiB)  # appears: the warning goes away
    psi.run_round(task)
    assert "warning:" not in harness.command("showstats")


def test_vanished_cgroup_is_dropped(v2, harness):
    v2.add("work/a", usage=100 * MiB, file=100 * MiB)
    v2.add("work/b", usage=100 * MiB, file=100 * MiB)
    task = add(harness)
    psi.run_round(task)
    for name in os.listdir(v2.fs / "work/b"):
        os.unlink(v2.fs / "work/b" / name)
    os.rmdir(v2.fs / "work/b")
    psi.run_round(task)
    assert set(task.stats["cgroups"]) == {"work/a"}


def test_cgroup_without_memory_reclaim_is_reported_not_fatal(v2, harness):
    v2.add("work/a", usage=100 * MiB, file=100 * MiB)
    os.unlink(v2.fs / "work/a/memory.reclaim")
    task = add(harness)
    psi.run_round(task)
    out = harness.command("showstats")
    assert "cannot reclaim" in out and "memory.reclaim does not exist" in out
    assert "subtree_control" in out


def test_v1_layout_reads_cpuacct_and_writes_the_memory_hierarchy(v1, harness):
    v1.add("work/a", usage=200 * MiB, anon=100 * MiB, file=100 * MiB, limit=1000 * MiB)
    # only in cpuacct: not a memory cgroup, ignored
    (v1.fs / "cpuacct/work/cpuonly").mkdir()
    task = add(harness, reclaim_rate=0.1, limit_min_ratio=0.1)
    psi.run_round(task)
    assert set(task.stats["cgroups"]) == {"work/a"}
    assert v1.reclaim_written("work/a") == str(10 * MiB)  # (200 - 100 floor) * 0.1
    v1.set_pressure("work/a", avg10=5.0)
    psi.run_round(task)
    assert v1.reclaim_written("work/a") == ""


def test_showstats_per_cgroup(v2, harness):
    v2.add("work/a", usage=200 * MiB, anon=100 * MiB, file=100 * MiB)
    v2.add("work/b", usage=100 * MiB, file=100 * MiB)
    v2.set_pressure("work/b", avg10=3.25)
    task = add(harness, reclaim_rate=0.1)
    kernel_like(task, v2)
    harness.start()
    psi.run_round(task)
    out = harness.command("showstats")
    lines = out.splitlines()
    assert lines[0].startswith("task: task1  cg_dir: work/*  state: running  pressure below: 0.1")
    assert "cgroup v2 at" in lines[0]
    assert lines[1].split() == ["cgroup", "pressure", "rate", "usage_kb", "floor_kb",
                                "reclaimed_kb", "rounds", "paused", "state"]  # fmt: skip
    a = lines[2].split()
    assert a[:8] == ["work/a", "0.00", "0.10", str(180 << 10), "0", str(20 << 10), "1", "0"]
    b = lines[3].split()
    assert b[:3] == ["work/b", "3.25", "0.10"] and b[5] == "0" and b[7] == "1"
    assert "pressure high" in lines[3]
    with pytest.raises(Exception, match="unknown command"):
        harness.command("bogus")


def test_start_runs_rounds_every_interval_and_stop_is_prompt(v2):
    v2.add("work/a", usage=200 * MiB, file=200 * MiB)
    h = EngineHarness(psi, "psi")
    try:
        h.add({**PROJECT, "interval": 1}, tasks=[{"value": "x", "cg_dir": "work/a"}])
        task = h.task()
        h.start()
        deadline = time.monotonic() + 10
        while task.stats.get("rounds", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task.stats["rounds"] >= 1
        assert v2.reclaim_written("work/a") != ""
        began = time.monotonic()
        h.stop()
        assert time.monotonic() - began < 1.5
        assert task.stats["running"] is False
        assert task.params.thread is None
    finally:
        h.remove()


def test_etmemd_refuses_a_psi_project_here_with_the_reason(tmp_path):
    """Through the daemon and client: `obj add` fails and both say why."""
    unified = "/sys/fs/cgroup/unified/cgroup.controllers"
    if not os.path.isfile(unified) or "memory" in Path(unified).read_text().split():
        pytest.skip("not a hybrid cgroup host without v2 memory (the development VM is one)")
    from etmemd_proc import EtmemdProc

    d = EtmemdProc(tmp_path)
    try:
        text = "[project]\nname=psi\nscan_type=psi\ninterval=1\n[engine]\nname=psi\nproject=psi\n"
        res = d.add("psi", text, check=False)
        assert res.returncode != 0
        assert "[engine] name=psi: cannot work here" in res.stdout + res.stderr
        assert "has no memory controller" in d.logtext()
        assert "psi" not in d.etmem("project", "show").stdout  # nothing half-applied
    finally:
        d.stop()
