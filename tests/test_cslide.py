"""The cslide engine: hooks, the engine loop on a fake machine (fake /proc and /sys, fake tracker
passes, injected move_pages), the show commands, and on this machine for real: the engine-add
preconditions and move_pages through the host adapter."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from pathlib import Path

import etmem_cslide.engine as ce
import numpy as np
import pytest
from conftest import ready_child
from etmem_cslide import config as cc
from etmem_cslide.cycle import close_tracker, fold_hugepages, run_cycle
from etmem_cslide.host import Host
from etmem_cslide.show import host_pages_text, task_pages_text
from etmem_cslide.state import CslidePidParams, PidFactory, PidState
from etmem_sdk import (
    BufferReply,
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    Project,
    TargetGone,
    Task,
    scan,
)

HUGE = cc.HUGE_2M
BASE = 0x7F0000000000
PID, PID2 = 4242, 4343


# --- a fake machine ---------------------------------------------------------------------------


def fake_sys(root: Path, nr: list[int], free: list[int]) -> Path:
    for n, (total, avail) in enumerate(zip(nr, free, strict=True)):
        hp = root / f"devices/system/node/node{n}/hugepages/hugepages-2048kB"
        hp.mkdir(parents=True)
        (hp / "nr_hugepages").write_text(f"{total}\n")
        (hp / "free_hugepages").write_text(f"{avail}\n")
    return root


def fake_proc(root: Path, pid: int, comm: str, pages: int) -> Path:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0\n")
    end = BASE + pages * HUGE
    (d / "smaps").write_text(
        "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n"
        "Size:                132 kB\nVmFlags: rd wr mr mw me ac\n"
        f"{BASE:x}-{end:x} rw-p 00000000 00:0f 90210        /anon_hugepage (deleted)\n"
        f"Size:           {pages * 2048} kB\nKernelPageSize:     2048 kB\n"
        "VmFlags: rd wr mr mw me de ht\n"
    )
    return root


PMD_ACCESSED, PMD_IDLE, SET_HVA = 1, 6, 0xA0


def idle_stream(start: int, types: list[int]) -> bytes:
    """An idle_pages byte stream: SET_HVA start, then runs of (type << 4 | n), n <= 15."""
    out = bytearray([SET_HVA]) + start.to_bytes(8, "big")
    i = 0
    while i < len(types):
        n = 1
        while i + n < len(types) and types[i + n] == types[i] and n < 15:
            n += 1
        out.append(types[i] << 4 | n)
        i += n
    return bytes(out)


class FakeIdlePages:
    """An open /proc/PID/idle_pages of the fake machine: the hugetlb VMA's pages, those in
    ``host.hot`` reported accessed, the rest idle."""

    def __init__(self, host: FakeHost, pid: int) -> None:
        self.host, self.pid = host, pid

    def add_flags(self, request: int, flags: int) -> None:
        self.host.ioctls.append((self.pid, request, flags))

    def read_at(self, pos: int, count: int) -> bytes:
        pages = self.host.vma_pages[self.pid]
        if pos != BASE:
            return b""
        hot = self.host.hot.get(self.pid, set())
        types = [PMD_ACCESSED if BASE + i * HUGE in hot else PMD_IDLE for i in range(pages)]
        return idle_stream(BASE, types)

    def close(self) -> None:
        self.host.closed.append(self.pid)


@dataclasses.dataclass
class FakeHost(Host):
    """Host over fake trees; trackers and move_pages are simulated on ``placement``."""

    placement: dict = dataclasses.field(default_factory=dict)  # (pid, addr) -> node
    hot: dict = dataclasses.field(default_factory=dict)  # pid -> set of addrs touched
    dead: set = dataclasses.field(default_factory=set)
    calls: list = dataclasses.field(default_factory=list)
    closed: list = dataclasses.field(default_factory=list)
    ioctls: list = dataclasses.field(default_factory=list)
    vma_pages: dict = dataclasses.field(default_factory=dict)
    opened: list = dataclasses.field(default_factory=list)
    trackers_closed: list = dataclasses.field(default_factory=list)
    cpu_calls: list = dataclasses.field(default_factory=list)

    def run_on_node(self, node):
        self.cpu_calls.append(("node", node))

    def set_affinity(self, cpus):
        self.cpu_calls.append(("restore", cpus))

    def capabilities(self):
        from etmem_sdk.scan import Capabilities, Verdict

        # the fake idle_pages file always works; nothing else does
        no = Verdict(False, "not in the fake tree")
        return Capabilities(
            trackers={
                "idle_pages": Verdict(True),
                "page_idle": no,
                "damon": no,
                "probe": no,
                "refs": no,
            },  # fmt: skip
        )

    def open_tracker(self, pid, task, memory):
        tracker = super().open_tracker(pid, task, memory)
        self.opened.append(pid)
        close = tracker.close

        def recorded_close():
            self.trackers_closed.append(pid)
            close()

        tracker.close = recorded_close
        return tracker

    def tracker_options(self, pid):
        def opener(path):
            if pid in self.dead:
                raise FileNotFoundError(2, "No such file or directory", str(path))
            assert path == Path(self.proc_root) / str(pid) / "idle_pages"
            return FakeIdlePages(self, pid)

        return {"opener": opener}

    def move_pages(self, pid, addrs, node):
        if pid in self.dead:
            raise TargetGone(f"process {pid} is gone")
        self.calls.append((pid, None if node is None else int(node), [int(a) for a in addrs]))
        out = []
        for a in addrs:
            key = (pid, int(a))
            if key not in self.placement:
                out.append(-2)  # -ENOENT: not present
                continue
            if node is not None:
                self.placement[key] = int(node)
            out.append(self.placement[key])
        return np.array(out, np.int32)


def engine_config(**over) -> ConfigSection:
    items = {
        "project": "p",
        "name": "cslide",
        "node_pair": "0,1",
        "hot_threshold": "2",
        "node_mig_quota": "1024",
        "node_hot_reserve": "40",
        **over,
    }
    return ConfigSection("engine", items, path="/etc/etmem/eng.config")


def task_config(name="vm1", value=str(PID), **extra) -> ConfigSection:
    items = {
        "project": "p",
        "engine": "cslide",
        "name": name,
        "type": "pid",
        "value": value,
        "vm_flags": "ht",
        "anon_only": "no",
        "ign_host": "yes",
        **extra,
    }
    return ConfigSection("task", items, path="/etc/etmem/task.config")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Two nodes of 20 hugepages, 10 free on each; pid 4242 with 20 hugepages: the first 10
    (touched every pass) on the cold node 1, the other 10 (never touched) on the hot node 0."""
    sys_root = fake_sys(tmp_path / "sys", nr=[20, 20], free=[10, 10])
    proc_root = fake_proc(tmp_path / "proc", PID, "qemu-kvm", 20)
    host = FakeHost(proc_root=proc_root, sys_root=sys_root)
    addrs = [BASE + i * HUGE for i in range(20)]
    for i, a in enumerate(addrs):
        host.placement[(PID, a)] = 1 if i < 10 else 0
    host.hot[PID] = set(addrs[:10])
    host.vma_pages[PID] = 20
    # the engine makes its Host at fill_eng_params: this one simulates the machine
    monkeypatch.setattr(ce, "Host", lambda: host)
    return host


@pytest.fixture
def scan_roots():
    """Point the SDK's scan defaults -- where cslide's Host takes its /proc and /sys from, as
    every engine does -- at fake trees for one test."""
    previous = scan.defaults()
    yield lambda **roots: scan.set_defaults(**{k: str(v) for k, v in roots.items()})
    scan.set_defaults(**dataclasses.asdict(previous))


def new_engine(project=None, **over) -> Engine:
    project = project or Project(name="p", loop=3, interval=1, sleep=1)
    engine = Engine(name="cslide", kind="cslide", project=project)
    project.engines.insert(0, engine)
    ce.fill_eng_params(engine=engine, config=engine_config(**over))
    return engine


def new_task(engine, name="vm1", value=str(PID), **extra) -> Task:
    task = Task(name=name, type="pid", value=value, engine=engine)
    engine.tasks.insert(0, task)
    ce.fill_task_params(task=task, config=task_config(name, value, **extra))
    return task


def no_sleep(engine) -> None:
    eng = engine.params
    eng.config = dataclasses.replace(eng.config, sleep=0)


def started(engine, task) -> None:
    """start_task without the engine thread: the test drives cycles itself."""
    for tp in task.pids:
        engine.params.factory.add(tp.params)
    engine.params.factory.update()


@pytest.fixture
def cycling(machine):
    """``(engine, task)`` on the fake machine: filled, started without the engine thread and
    without sleeping between passes, so the test runs the cycles itself."""
    engine = new_engine()
    task = new_task(engine)
    no_sleep(engine)
    started(engine, task)
    return engine, task


# --- the engine loop on the fake machine ------------------------------------------------------


def test_cycle_promotes_hot_and_demotes_cold_pages(machine, cycling):
    engine, task = cycling

    result = run_cycle(engine.params)

    addrs = [BASE + i * HUGE for i in range(20)]
    assert [machine.placement[(PID, a)] for a in addrs] == [0] * 10 + [1] * 10
    moves = [(pid, node, len(a)) for pid, node, a in machine.calls if node is not None]
    assert moves == [(PID, 1, 10), (PID, 0, 10)]  # cold pages first, as the original
    assert result.moved == {(PID, 1): 10 * HUGE, (PID, 0): 10 * HUGE}
    # moved while running on the pair's lower node, then the thread's CPU set came back
    assert machine.cpu_calls == [("node", 0), ("restore", os.sched_getaffinity(0))]
    assert result.skipped == {}
    # loop=3 passes, each opening idle_pages afresh with SCAN_AS_HUGE | SCAN_IGN_HOST
    assert machine.closed == [PID] * 3
    assert machine.ioctls == [(PID, 0x40046600, 0x03000000)] * 3
    # the query was one batch over every page of the hugetlb VMA only (the heap has no ht)
    query = [a for pid, node, a in machine.calls if node is None]
    assert query == [addrs]


def test_query_and_moves_go_a_batch_at_a_time_with_the_same_result(machine, cycling, monkeypatch):
    import etmem_cslide.cycle as cy

    monkeypatch.setattr(cy, "MOVE_BATCH", 7)
    engine, _task = cycling

    result = run_cycle(engine.params)

    addrs = [BASE + i * HUGE for i in range(20)]
    assert [machine.placement[(PID, a)] for a in addrs] == [0] * 10 + [1] * 10
    query = [a for _pid, node, a in machine.calls if node is None]
    assert [len(q) for q in query] == [7, 7, 6] and sum(query, []) == addrs
    moves = [(node, len(a)) for _pid, node, a in machine.calls if node is not None]
    assert moves == [(1, 7), (1, 3), (0, 7), (0, 3)]  # cold pages first, in batches
    assert result.moved == {(PID, 1): 10 * HUGE, (PID, 0): 10 * HUGE}
    assert engine.params.host_pages == {0: (0, 10 * 2048), 1: (10 * 2048, 0)}


def test_cycle_statistics_are_taken_before_the_moves(cycling):
    engine, task = cycling
    run_cycle(engine.params)

    eng = engine.params
    kb = 10 * 2048
    assert eng.host_pages == {0: (0, kb), 1: (kb, 0)}
    assert task.pids[0].params.pages == {0: (0, kb), 1: (kb, 0)}
    assert engine.stats["nodes"]["0"] == {
        "total_kb": 20 * 2048,
        "free_kb": 10 * 2048,
        "used_kb": kb,
        "hot_kb": 0,
        "cold_kb": kb,
    }
    assert engine.stats["pairs"] == [{"hot": 0, "cold": 1}]
    assert engine.stats["cycles"] == 0  # counted after the moves
    assert task.stats["pid"] == PID
    assert task.stats["nodes"]["1"] == {"used_kb": kb, "hot_kb": kb, "cold_kb": 0}
    assert task.stats["skipped"] == ""
    assert eng.cycles == 1


def test_quota_limits_a_cycle_and_the_next_cycle_continues(machine):
    engine = new_engine(node_mig_quota="8", node_hot_reserve="0")
    task = new_task(engine)
    no_sleep(engine)
    started(engine, task)

    run_cycle(engine.params)
    on_hot = [i for i in range(10) if machine.placement[(PID, BASE + i * HUGE)] == 0]
    assert on_hot == [0, 1, 2, 3]  # 8 MiB of quota = 4 hugepages, lowest addresses first
    run_cycle(engine.params)
    on_hot = [i for i in range(10) if machine.placement[(PID, BASE + i * HUGE)] == 0]
    assert on_hot == list(range(8))


def test_confirm_cycles_holds_moves_until_the_second_cycle_asks_again(machine):
    engine = new_engine()
    task = new_task(engine, confirm_cycles="2")
    no_sleep(engine)
    started(engine, task)
    addrs = [BASE + i * HUGE for i in range(20)]

    first = run_cycle(engine.params)
    assert first.moved == {}  # asked once: held
    assert [machine.placement[(PID, a)] for a in addrs] == [1] * 10 + [0] * 10
    assert task.pids[0].params.pages == {0: (0, 10 * 2048), 1: (10 * 2048, 0)}  # stats unheld
    second = run_cycle(engine.params)
    assert second.moved == {(PID, 1): 10 * HUGE, (PID, 0): 10 * HUGE}
    assert [machine.placement[(PID, a)] for a in addrs] == [0] * 10 + [1] * 10


def test_a_page_trackers_task_moves_on_the_first_cycle_as_the_original(cycling):
    engine, task = cycling
    run_cycle(engine.params)
    assert task.pids[0].params.confirmation.confirm == 1  # idle_pages sees each page


def test_a_dead_pid_is_skipped_and_the_others_still_move(machine, tmp_path):
    fake_proc(machine.proc_root, PID2, "qemu-kvm2", 20)
    engine = new_engine()
    t1 = new_task(engine)
    t2 = new_task(engine, name="vm2", value=str(PID2))
    for i in range(20):
        machine.placement[(PID2, BASE + i * HUGE)] = 1
    machine.vma_pages[PID2] = 20
    no_sleep(engine)
    started(engine, t1)
    started(engine, t2)
    machine.dead.add(PID2)

    result = run_cycle(engine.params)

    assert set(result.skipped) == {PID2}
    assert result.skipped[PID2].startswith("scan failed: open ")
    assert [p.pid for p in result.scanned] == [PID]
    assert machine.placement[(PID, BASE)] == 0  # the live pid got its hot page promoted
    assert t2.stats["skipped"] and t2.pids[0].params.pages == {0: (0, 0), 1: (0, 0)}


def test_a_pid_whose_vmas_cannot_be_read_is_skipped(machine, cycling):
    engine, task = cycling
    (machine.proc_root / str(PID) / "smaps").unlink()
    result = run_cycle(engine.params)
    assert PID in result.skipped
    assert [c for c in machine.calls if c[1] is not None] == []


def test_a_node_losing_its_hugepages_fails_the_cycle(machine, cycling):
    engine, task = cycling
    hp = machine.sys_root / "devices/system/node/node1/hugepages/hugepages-2048kB"
    (hp / "nr_hugepages").write_text("0\n")
    result = run_cycle(engine.params)
    assert result.error == "no 2 MiB hugepages on node 1"
    assert machine.calls == []


def test_the_engine_thread_runs_cycles_and_stops_at_engine_delete(machine):
    engine = new_engine()
    task = new_task(engine)
    no_sleep(engine)
    ce.start_task(engine=engine, task=task)
    eng = engine.params
    p = task.pids[0].params
    thread = eng.thread
    assert thread is not None and thread.is_alive()
    deadline = time.monotonic() + 30
    while eng.cycles < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eng.cycles >= 2
    assert machine.opened == [PID]  # one tracker, kept across cycles
    ce.stop_task(engine=engine, task=task)
    assert p.state is PidState.REMOVE
    ce.clear_task_params(task=task)
    assert p.state is PidState.FREE
    ce.clear_eng_params(engine=engine)
    assert not thread.is_alive()
    assert engine.params is None
    assert machine.trackers_closed == [PID] and p.tracker is None


def test_a_failed_scan_closes_the_tracker_and_the_next_cycle_reopens_it(machine, cycling):
    engine, task = cycling
    run_cycle(engine.params)
    machine.dead.add(PID)
    assert PID in run_cycle(engine.params).skipped
    assert machine.trackers_closed == [PID]
    machine.dead.clear()
    assert run_cycle(engine.params).skipped == {}
    assert machine.opened == [PID, PID]


def test_base_pages_of_hugetlb_vmas_fold_into_2mib_pages():
    addr = np.array([BASE + 4096, BASE, BASE + HUGE + 8192, BASE + 2 * HUGE], np.uint64)
    ptype = np.array([0, 0, 0, 1], np.uint8)
    count = np.array([3, 3, 0, 2], np.int32)
    a, t, c = fold_hugepages(addr, ptype, count)
    assert list(a) == [BASE, BASE + HUGE, BASE + 2 * HUGE]
    assert list(t) == [1, 1, 1]
    assert list(c) == [3, 0, 2]


def test_a_region_boundary_inside_a_hugepage_does_not_make_it_hot():
    # 511 idle parts and one accessed part (a DAMON region starting 4 KiB before the page end)
    addr = BASE + np.arange(512, dtype=np.uint64) * np.uint64(4096)
    count = np.zeros(512, np.int32)
    count[-1] = 3
    a, _, c = fold_hugepages(addr, np.zeros(512, np.uint8), count)
    assert list(a) == [BASE] and list(c) == [0]


# --- hooks and the per-pid state machine ------------------------------------------------------


def test_run_on_node_uses_the_nodes_cpulist(tmp_path):
    import threading

    node = tmp_path / "devices/system/node/node1"
    node.mkdir(parents=True)
    (node / "cpulist").write_text("0\n")
    host = Host(sys_root=tmp_path)
    seen = {}

    def body():
        before = host.affinity()
        host.run_on_node(1)
        seen["on"] = os.sched_getaffinity(0)
        host.run_on_node(7)  # no such node: nothing changes
        seen["missing"] = os.sched_getaffinity(0)
        host.set_affinity(before)
        seen["back"] = os.sched_getaffinity(0) == before

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == {"on": {0}, "missing": {0}, "back": True}


def test_pid_state_machine():
    f = PidFactory()
    a = CslidePidParams(pid=1, task_name="a", task=None)
    b = CslidePidParams(pid=2, task_name="b", task=None)
    f.free(b)  # never started: freed at once
    assert b.state is PidState.NONE and f.working == []
    f.add(a)
    assert a.state is PidState.WORKING and f.working == []  # waits for the engine thread
    assert f.has_working()
    f.update()
    assert f.working == [a] and f.working_pids() == [a]
    f.remove(a)
    assert a.state is PidState.REMOVE and f.working_pids() == [] and not f.has_working()
    f.add(a)  # restarted: back to WORKING without queueing twice
    f.update()
    assert f.working == [a]
    f.free(a)
    assert a.state is PidState.FREE and f.working == [a]
    f.update()
    assert f.working == []


def test_task_add_needs_a_live_process(machine):
    engine = new_engine()
    with pytest.raises(ConfigError, match=r"task.config: \[task\] value=999999: no such process"):
        new_task(engine, value="999999")


def test_task_add_resolves_the_pid_once_and_start_queues_it(machine):
    engine = new_engine()
    task = new_task(engine)
    assert [tp.pid for tp in task.pids] == [PID]
    p = task.pids[0].params
    assert isinstance(p, CslidePidParams) and p.state is PidState.NONE
    assert p.task.scan_flags == cc.SCAN_AS_HUGE | cc.SCAN_IGN_HOST
    engine.params.factory.add(p)
    assert p.state is PidState.WORKING


def test_engine_add_reads_the_pools_and_publishes_stats(machine):
    engine = new_engine()
    assert engine.params.mem[0] == cc.NodeMem(total=20 * HUGE, free=10 * HUGE)
    assert engine.stats["nodes"]["1"]["total_kb"] == 20 * 2048
    assert engine.stats["stat_time"] == 0.0


def test_engine_add_refuses_an_odd_node_count_on_a_fake_tree(tmp_path, scan_roots):
    scan_roots(proc_root=tmp_path, sys_root=fake_sys(tmp_path / "sys", [4] * 3, [4] * 3))
    with pytest.raises(ConfigError, match=r"this machine has 3 NUMA nodes \(node0, node1, node2\)"):
        new_engine(node_pair="0,1")


# --- show commands ----------------------------------------------------------------------------


def test_show_text_layout():
    t = time.mktime((2026, 11, 5, 9, 8, 7, 0, 0, -1))
    text = host_pages_text(t, [0, 1], {0: 40960, 1: 2048}, {0: (2048, 4096), 1: (0, 0)})
    assert text == (
        "[Thu Nov  5 09:08:07 2026] host pages info (KB):\n"
        " node      total       used        hot       cold\n"
        "    0      40960       6144       2048       4096\n"
        "    1       2048          0          0          0\n"
    )
    text = task_pages_text(t, 4242, [0, 1], {0: (2048, 4096)})
    assert text == (
        "[Thu Nov  5 09:08:07 2026] task 4242 pages info (KB):\n"
        " node       used        hot       cold\n"
        "    0       6144       2048       4096\n"
        "    1          0          0          0\n"
    )


def _show(engine, cmd, task=None) -> str:
    reply = BufferReply()
    ce.eng_mgt_func(engine=engine, task=task, cmd=cmd, reply=reply)
    return reply.text


def test_show_commands_after_a_cycle(cycling):
    engine, task = cycling
    run_cycle(engine.params)
    stamp = re.escape(time.asctime(time.localtime(engine.params.stat_time)))

    host = _show(engine, "showhostpages")
    assert re.fullmatch(
        rf"\[{stamp}\] host pages info \(KB\):\n"
        r" node      total       used        hot       cold\n"
        r"    0      40960      20480          0      20480\n"
        r"    1      40960      20480      20480          0\n",
        host,
    )
    taskp = _show(engine, "showtaskpages", task)
    assert re.fullmatch(
        rf"\[{stamp}\] task {PID} pages info \(KB\):\n"
        r" node       used        hot       cold\n"
        r"    0      20480          0      20480\n"
        r"    1      20480      20480          0\n",
        taskp,
    )


def test_show_before_the_first_cycle_uses_the_epoch(machine):
    engine = new_engine()
    task = new_task(engine)
    started(engine, task)
    epoch = time.asctime(time.localtime(0))
    assert _show(engine, "showhostpages").startswith(f"[{epoch}] host pages info (KB):\n")
    assert "    0          0          0          0\n" in _show(engine, "showtaskpages", task)


def test_show_command_errors(machine):
    engine = new_engine()
    task = new_task(engine)
    with pytest.raises(EngineError, match="no working pid"):
        _show(engine, "showhostpages")  # nothing started yet
    started(engine, task)
    with pytest.raises(EngineError, match="not supported"):
        _show(engine, "showfoo")
    with pytest.raises(EngineError, match="not found"):
        _show(engine, "showtaskpages")  # no -t
    other = Task(name="idle", type="pid", value="1", engine=engine)
    with pytest.raises(EngineError, match="not started"):
        _show(engine, "showtaskpages", other)
    ce.stop_task(engine=engine, task=task)
    with pytest.raises(EngineError, match="no working pid"):
        _show(engine, "showhostpages")


# --- this machine, for real -------------------------------------------------------------------


def test_engine_add_on_this_machine_fails_with_what_it_has():
    nodes = cc.configured_nodes("/sys")
    assert nodes, "this machine shows no NUMA node directory"
    with pytest.raises(ConfigError) as e:
        new_engine(node_pair=";".join(f"{n},{n}" for n in nodes))
    msg = str(e.value)
    if len(nodes) % 2:  # the development and CI machines: one node
        assert msg.endswith(
            f"needs an even number of nodes; this machine has "
            f"{len(nodes)} NUMA node{'s' if len(nodes) > 1 else ''} "
            f"({', '.join(f'node{n}' for n in nodes)})"
        )
    else:
        assert "node_pair" in msg or "nr_hugepages" in msg


CHILD = r"""
import mmap, sys
m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.write(b"x" * (32 * 4096))  # the first 32 pages present, the rest never touched
import ctypes
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
print(hex(addr), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child():
    with ready_child([sys.executable, "-c", CHILD]) as (proc, line):
        yield proc.pid, int(line, 16)


@pytest.mark.root
def test_move_pages_query_and_node0_moves_for_real(child):
    pid, addr = child
    host = Host()
    addrs = addr + np.arange(64, dtype=np.uint64) * np.uint64(os.sysconf("SC_PAGE_SIZE"))
    status = host.move_pages(pid, addrs, None)
    assert list(status[:32]) == [0] * 32  # present pages are on node 0
    assert all(s < 0 for s in status[32:])  # never touched: not present
    moved = host.move_pages(pid, addrs[:32], 0)
    assert list(moved) == [0] * 32
    with pytest.raises(TargetGone):
        host.move_pages(2**22 + 12345, addrs[:1], None)


@pytest.mark.root
def test_real_process_resolves_and_its_pages_are_filed_by_node(child, tmp_path, scan_roots):
    """The engine's node query on a real process, through a normal-memory engine whose node
    list comes from a fake 2-node tree (this machine has one node)."""
    pid, addr = child
    sys_root = tmp_path / "sys"
    for n in range(2):
        d = sys_root / f"devices/system/node/node{n}"
        d.mkdir(parents=True)
        (d / "meminfo").write_text(f"Node {n} MemTotal: 1048576 kB\nNode {n} MemFree: 524288 kB\n")
    scan_roots(proc_root="/proc", sys_root=sys_root)
    engine = new_engine(memory="normal")
    host = engine.params.host
    task = Task(name="real", type="pid", value=str(pid), engine=engine)
    cfg = dict(task_config("real", str(pid)))
    cfg.pop("vm_flags")
    ce.fill_task_params(task=task, config=ConfigSection("task", cfg, path="t.config"))
    assert [tp.pid for tp in task.pids] == [pid]
    vmas = host.read_vmas(pid, task.params)
    mine = [v for v in vmas if v.start <= addr < v.end]
    assert mine, "the child's anonymous mapping is among the VMAs"
    page = os.sysconf("SC_PAGE_SIZE")
    status = host.move_pages(pid, np.array([addr, addr + 40 * page], np.uint64), None)
    assert status[0] == 0 and status[1] < 0


@pytest.mark.root
def test_hugetlb_task_without_idle_pages_fails_to_start_saying_why(child, tmp_path, scan_roots):
    """This kernel has no idle_pages: a hugetlb task must name another tracker or not start."""
    pid, _addr = child
    scan_roots(proc_root="/proc", sys_root=fake_sys(tmp_path / "sys", [8, 8], [8, 8]))
    engine = new_engine()
    task = Task(name="vm", type="pid", value=str(pid), engine=engine)
    ce.fill_task_params(task=task, config=task_config("vm", str(pid)))
    with pytest.raises(EngineError) as e:
        ce.start_task(engine=engine, task=task)
    msg = str(e.value)
    assert msg.startswith(
        "cslide: no tracker for memory=hugetlb works here: no usable page tracker"
    )
    assert "idle_pages: etmem_scan kernel module not loaded" in msg  # the probe's reasons
    assert "damon: " in msg and "refs: refs does not see hugetlb accesses" in msg
    assert "probe: probe pages memory out to swap" in msg
    assert msg.endswith("(hugetlb accesses need idle_pages, or DAMON with vaddr on a stock kernel)")
    assert engine.params.thread is None  # nothing was started
    assert task.pids[0].params.state is PidState.NONE


# --- through the core (lifecycle.ObjectStore, the engine found by its entry point) -----------


def _objfile(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


PROJ = "[project]\nname=test\nscan_type=page\nloop=3\ninterval=1\nsleep=1\n"
ENG = (
    "[engine]\nname=cslide\nproject=test\nnode_pair={pairs}\nhot_threshold=2\n"
    "node_mig_quota=1024\nnode_hot_reserve=40\n"
)
TASK = (
    "[task]\nproject=test\nengine=cslide\nname=vm1\ntype=pid\nvalue={pid}\nvm_flags=ht\n"
    "anon_only=no\nign_host=yes\n"
)


def test_core_refuses_the_originals_test_engine_on_this_machine(golden, tmp_path):
    from etmem_core.errors import OptCode, OptError
    from etmem_core.lifecycle import ObjectStore

    nodes = cc.configured_nodes("/sys")
    conf = golden / "config/c-test-conf/conf_cslide"
    d = ObjectStore()
    try:
        d.obj_add(_objfile(tmp_path, "proj.config", (conf / "proj.config").read_text()))
        if len(nodes) % 2 == 0:
            pytest.skip("this machine has an even number of nodes")  # never on dev/CI machines
        with pytest.raises(OptError) as e:
            d.obj_add(_objfile(tmp_path, "eng.config", (conf / "eng.config").read_text()))
        assert e.value.code == OptCode.OPT_INTER_ERR
        assert f"this machine has {len(nodes)} NUMA node" in e.value.reason
    finally:
        d.shutdown()


def test_core_end_to_end_on_the_fake_machine(machine, tmp_path):
    from etmem_core.errors import OptCode, OptError
    from etmem_core.lifecycle import ObjectStore

    d = ObjectStore()
    try:
        d.obj_add(_objfile(tmp_path, "p.config", PROJ))
        d.obj_add(_objfile(tmp_path, "e.config", ENG.format(pairs="0,1")))
        with pytest.raises(OptError) as e:  # pid 1 is never a target
            d.obj_add(_objfile(tmp_path, "t1.config", TASK.format(pid=1)))
        assert "no such process" in e.value.reason
        d.obj_add(_objfile(tmp_path, "t.config", TASK.format(pid=PID)))
        with pytest.raises(OptError) as e:
            d.engine_cmd("test", "cslide", None, "showhostpages", BufferReply())
        assert e.value.code == OptCode.OPT_INVAL  # project not started

        d.project_start("test")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            doc = d.project_show_json("test")[0]
            engine_doc = doc["engines"][0]
            if engine_doc["stats"].get("cycles", 0) >= 1:
                break
            time.sleep(0.1)
        assert engine_doc["stats"]["cycles"] >= 1
        task_doc = engine_doc["tasks"][0]
        assert task_doc["stats"]["pid"] == PID
        # stats of a cycle after the first one's moves: hot pages on node 0, cold on node 1
        kb = 10 * 2048
        assert task_doc["stats"]["nodes"]["0"] == {"used_kb": kb, "hot_kb": kb, "cold_kb": 0}
        assert task_doc["stats"]["nodes"]["1"] == {"used_kb": kb, "hot_kb": 0, "cold_kb": kb}
        assert [machine.placement[(PID, BASE + i * HUGE)] for i in range(10)] == [0] * 10

        reply = BufferReply()
        d.engine_cmd("test", "cslide", "vm1", "showtaskpages", reply)
        assert reply.text.splitlines()[1] == " node       used        hot       cold"
        with pytest.raises(OptError) as e:
            d.engine_cmd("test", "cslide", None, "nosuchcmd", BufferReply())
        assert e.value.code == OptCode.OPT_INVAL
        d.project_stop("test")
        engine = d.find_project("test").find_engine("cslide")
        thread = engine.params.thread
        d.obj_del(_objfile(tmp_path, "e.config", ENG.format(pairs="0,1")))
        assert not thread.is_alive()
    finally:
        d.shutdown()


WORKLOAD = Path(__file__).parent / "vm/guest/cslide_workload.py"


@pytest.fixture
def normal_workload():
    """8 MiB written continuously and 8 MiB written once, 4 KiB pages, both on node 0."""
    with ready_child([sys.executable, str(WORKLOAD), "4", "0", "0", "normal"]) as (proc, line):
        hot, cold = (int(x, 16) for x in line.split())
        yield proc.pid, hot, cold


def _meminfo_tree(root: Path, nodes: int) -> Path:
    for n in range(nodes):
        d = root / f"devices/system/node/node{n}"
        d.mkdir(parents=True)
        (d / "meminfo").write_text(f"Node {n} MemTotal: 4194304 kB\nNode {n} MemFree: 2097152 kB\n")
    return root


@pytest.mark.root
def test_normal_memory_cycle_on_a_real_process(normal_workload, tmp_path, scan_roots):
    """memory=normal on this kernel: the probe's best tracker (refs here) tells the hot mapping
    from the cold one; with a zero quota nothing moves, with a quota the demotion to the
    second node of the (fake) pair fails because this machine has no node 1 — the pid is
    skipped with the reason and stays intact."""
    pid, hot, cold = normal_workload
    scan_roots(proc_root="/proc", sys_root=_meminfo_tree(tmp_path / "sys", 2))
    engine = new_engine(memory="normal", node_mig_quota="0", node_hot_reserve="0")
    host = engine.params.host
    task = Task(name="real", type="pid", value=str(pid), engine=engine)
    cfg = {k: v for k, v in task_config("real", str(pid)).items() if k != "vm_flags"}
    cfg["anon_only"] = "yes"
    ce.fill_task_params(task=task, config=ConfigSection("task", cfg, path="t.config"))
    assert host.check_tracker(task.params, "normal") == "refs"  # what this kernel offers
    eng = engine.params
    p = task.pids[0].params
    started(engine, task)
    try:
        result = run_cycle(eng)
        assert result.skipped == {} and not result.error
        pages = result.pages[0]
        size = 4 * HUGE
        in_hot = (pages.addr >= hot) & (pages.addr < hot + size)
        in_cold = (pages.addr >= cold) & (pages.addr < cold + size)
        assert in_hot.sum() == in_cold.sum() == size // 4096
        assert (pages.count[in_hot] == 3).all()  # touched between every pass
        assert (pages.count[in_cold] <= 1).all()  # only "since the process started"
        assert (pages.node[in_hot | in_cold] == 0).all()
        assert (pages.size[in_hot] == 4096).all()
        assert result.moved == {}
        hot_kb, cold_kb = p.pages[0]
        assert hot_kb >= size // 1024 and cold_kb >= size // 1024

        eng.config = dataclasses.replace(eng.config, mig_quota=1024, hot_reserve=4096)
        result = run_cycle(eng)
        assert set(result.skipped) == {pid}
        assert result.skipped[pid].startswith("move_pages failed: ")
        status = host.move_pages(pid, np.array([hot, cold], np.uint64), None)
        assert list(status) == [0, 0]
    finally:
        close_tracker(p)


# --- the tracker cslide gets: the SDK's choice for a migrating engine ------------------------


def _caps_with(*usable):
    from etmem_sdk.scan import Capabilities, Verdict

    names = ("idle_pages", "page_idle", "damon", "probe", "refs")
    return Capabilities(
        trackers={n: Verdict(n in usable, "" if n in usable else f"{n} missing") for n in names}
    )


class _CapsHost(Host):
    def __init__(self, caps):
        super().__init__()
        self._caps = caps

    def capabilities(self):
        return self._caps


def test_hugetlb_on_a_stock_kernel_with_damon_gets_damon():
    """The seed's cslide config (memory=hugetlb, no tracker key) in the test bed."""
    host = _CapsHost(_caps_with("damon", "probe", "refs"))
    cfg = cc.TaskConfig(("ht",), False, False, 0)
    assert host.check_tracker(cfg, "hugetlb") == "damon"
    assert host.check_tracker(cfg, "normal") == "damon"


def test_cslide_never_gets_the_probe():
    host = _CapsHost(_caps_with("probe", "refs"))
    assert host.check_tracker(cc.TaskConfig((), True, False, 0), "normal") == "refs"
    with pytest.raises(EngineError, match="tracker probe .*task's config.*must not swap"):
        host.check_tracker(cc.TaskConfig((), True, False, 0, tracker="probe"), "normal")
    from etmem_sdk import scan

    with scan.using_defaults(tracker="probe"):  # etmemd.toml's default is for slide: passed over
        assert host.check_tracker(cc.TaskConfig((), True, False, 0), "normal") == "refs"
    with scan.using_defaults(tracker="refs"):  # honoured where it fits
        assert host.check_tracker(cc.TaskConfig((), True, False, 0), "normal") == "refs"
        # ... and passed over for hugetlb, which refs cannot see
        with pytest.raises(EngineError, match="no tracker for memory=hugetlb"):
            host.check_tracker(cc.TaskConfig((), True, False, 0), "hugetlb")
