"""Inside the QEMU guest (real NUMA nodes and hugepages): cslide moves a workload's hot hugepages
to the hot node and its cold ones to the cold node, at most the quota per cycle, and the show
commands report it. Run in the test bed by tests/vm/test_guest_suites.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import etmem_cslide.engine as ce
import numpy as np
import pytest
from etmem_cslide import config as cc
from etmem_cslide.cycle import close_tracker, run_cycle
from etmem_scan import actuators
from etmem_sdk import BufferReply, ConfigSection, Engine, Project, Task

HUGE = cc.HUGE_2M
PAGES = 16  # per mapping: 32 MiB hot, 32 MiB cold
POOL = 64  # hugepages reserved on every node
QUOTA_MIB = 16  # 8 hugepages per pair and cycle
WORKLOAD = Path(__file__).with_name("cslide_workload.py")
NODE_DIR = Path("/sys/devices/system/node")
TASK_KEYS = {
    # no idle_pages on a stock kernel: DAMON is what sees hugetlb accesses here
    "hugetlb": {"vm_flags": "ht", "tracker": "damon"},
    # only the workload's two halves (MADV_NOHUGEPAGE and readable: not the guard between
    # them). refs, because these assertions want every 4 KiB page on its node, and the halves
    # are whole mappings: with damon (the default with the per-page chain) DAMON's region
    # jitter under TCG kept moving 16 MiB back and forth every cycle.
    "normal": {"vm_flags": "rd nh", "tracker": "refs"},
}


def nr_file(node: int) -> Path:
    return NODE_DIR / f"node{node}/hugepages/hugepages-2048kB/nr_hugepages"


@pytest.fixture
def nodes():
    found = cc.configured_nodes("/sys")
    assert len(found) in (2, 4), f"the test bed gave {found}"
    return found


@pytest.fixture
def hugepages(nodes):
    before = {n: nr_file(n).read_text() for n in nodes}
    try:
        for n in nodes:
            nr_file(n).write_text(f"{POOL}\n")
            assert int(nr_file(n).read_text()) == POOL, f"node{n} could not reserve {POOL}"
        yield
    finally:
        for n, text in before.items():
            nr_file(n).write_text(text)


@pytest.fixture
def pair(nodes):
    """The first pair: hot node 0, cold node 1 (2 nodes) or 2 (4 nodes: 0,2;1,3)."""
    return (0, 1, "0,1") if len(nodes) == 2 else (0, 2, "0,2;1,3")


@pytest.fixture(params=["hugetlb", "normal"])
def memory(request):
    return request.param


@pytest.fixture
def workload(hugepages, pair, memory):
    hot_node, cold_node, _ = pair
    kind = "huge" if memory == "hugetlb" else "normal"
    # both halves start on the wrong node: the hot one on the cold node and vice versa
    with subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(PAGES), str(cold_node), str(hot_node), kind],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            assert line, "the workload died before placing its pages"
            hot, cold = (int(x, 16) for x in line.split())
            yield proc.pid, hot, cold
        finally:
            proc.kill()
            proc.wait()


def placement(pid: int, start: int) -> list[int]:
    """The node of each 2 MiB stretch (of its every 4 KiB page when they disagree: -1)."""
    addrs = start + np.arange(PAGES * 512, dtype=np.uint64) * np.uint64(4096)
    nodes = actuators.query_nodes(pid, addrs).reshape(PAGES, 512)
    return [int(row[0]) if (row == row[0]).all() else -1 for row in nodes]


def show(engine, cmd, task=None) -> str:
    reply = BufferReply()
    ce.eng_mgt_func(engine=engine, task=task, cmd=cmd, reply=reply)
    return reply.text


def rows(text: str) -> dict[int, list[int]]:
    return {
        int(f[0]): [int(x) for x in f[1:]] for f in (ln.split() for ln in text.splitlines()[2:])
    }


def test_hot_half_ends_on_the_hot_node_and_cold_half_on_the_cold_node(
    workload, pair, nodes, memory
):
    pid, hot_start, cold_start = workload
    hot_node, cold_node, node_pair = pair
    assert placement(pid, hot_start) == [cold_node] * PAGES
    assert placement(pid, cold_start) == [hot_node] * PAGES

    project = Project(name="vm", loop=3, interval=1, sleep=1)
    engine = Engine(name="cslide", kind="cslide", project=project)
    ce.fill_eng_params(
        engine=engine,
        config=ConfigSection(
            "engine",
            {
                "project": "vm",
                "name": "cslide",
                "node_pair": node_pair,
                "hot_threshold": "2",
                "node_mig_quota": str(QUOTA_MIB),
                # above any free space the hot node can have: prefetch never runs, demotion may
                "node_hot_reserve": str(POOL * 2 if memory == "hugetlb" else 1 << 16),
                "memory": memory,
            },
            path="eng.config",
        ),
    )
    task = Task(name="workload", type="pid", value=str(pid), engine=engine)
    engine.tasks.append(task)
    ce.fill_task_params(
        task=task,
        config=ConfigSection(
            "task",
            {
                "project": "vm",
                "engine": "cslide",
                "name": "workload",
                "type": "pid",
                "value": str(pid),
                "anon_only": "no",
                "ign_host": "no",
                **TASK_KEYS[memory],
            },
            path="task.config",
        ),
    )
    eng = engine.params
    tracker = eng.host.check_tracker(task.params, eng.config.memory)
    assert tracker == ("damon" if memory == "hugetlb" else "refs")
    p = task.pids[0].params
    eng.factory.add(p)
    eng.factory.update()
    per_cycle, log = [], []
    try:
        for _ in range(12):
            result = run_cycle(eng)
            assert not result.error and not result.skipped, (result.error, result.skipped)
            # the quota is per pair: count what went to our pair's two nodes
            per_cycle.append(sum(result.moved.get((pid, n), 0) for n in (hot_node, cold_node)))
            log.append((result.moved, result.plan.budgets))
            done = (
                placement(pid, hot_start) == [hot_node] * PAGES
                and placement(pid, cold_start) == [cold_node] * PAGES
            )
            if done:
                break
        assert done, (per_cycle, placement(pid, hot_start), placement(pid, cold_start))
        # never more than the pair's quota in one cycle, and the first cycle was held to it
        assert max(per_cycle) <= QUOTA_MIB << 20, log
        assert per_cycle[0] == QUOTA_MIB << 20, per_cycle
        assert len(per_cycle) >= 4  # 64 MiB to move at 16 MiB per cycle

        run_cycle(eng)  # statistics are taken before a cycle's moves: one more shows the result
        assert placement(pid, hot_start) == [hot_node] * PAGES  # and nothing moved back
        assert placement(pid, cold_start) == [cold_node] * PAGES
    finally:
        close_tracker(p)

    mib32 = PAGES * 2048
    host = show(engine, "showhostpages")
    assert host.splitlines()[0].endswith("] host pages info (KB):")
    assert host.splitlines()[1] == " node      total       used        hot       cold"
    table = rows(host)
    assert sorted(table) == list(nodes)
    total = {n: m.total // 1024 for n, m in eng.mem.items()}
    taskp = show(engine, "showtaskpages", task)
    assert taskp.splitlines()[0].endswith(f"] task {pid} pages info (KB):")
    if memory == "hugetlb":
        assert total[hot_node] == POOL * 2048
        assert table[hot_node] == [total[hot_node], mib32, mib32, 0]
        assert table[cold_node] == [total[cold_node], mib32, 0, mib32]
        assert rows(taskp)[hot_node] == [mib32, mib32, 0]
        assert rows(taskp)[cold_node] == [mib32, 0, mib32]
    else:
        # "rd nh" may also match a stray small mapping of the interpreter: allow a few KiB
        (_, used_h, hot_h, cold_h), (_, _, hot_c, cold_c) = table[hot_node], table[cold_node]
        assert hot_h == mib32 and cold_h <= 64 and used_h == hot_h + cold_h
        assert mib32 <= cold_c <= mib32 + 64 and hot_c <= 64
        assert rows(taskp)[hot_node] == table[hot_node][1:]
        assert rows(taskp)[cold_node] == table[cold_node][1:]
    assert engine.stats["nodes"][str(hot_node)]["hot_kb"] == mib32
    ce.clear_task_params(task=task)
    ce.clear_eng_params(engine=engine)
