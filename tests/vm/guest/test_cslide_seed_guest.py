"""The original's cslide example, unchanged, on a stock kernel (4 NUMA nodes, hugetlb pages).

The seed's object files (etmem user guide: ``node_pair=2,0;3,1``, ``hot_threshold=1``,
``node_mig_quota=1024``, ``node_hot_reserve=1024``; task ``vm_flags=ht``, ``anon_only=no``,
``ign_host=no``, no ``tracker=`` key) go through a real etmemd.  The only change: the task names
the workload's pid as its ``value`` (the guide's example writes ``name=23456`` twice instead).
On Debian's kernel there is no idle_pages, so the default tracker must be one that sees hugetlb
accesses (DAMON); the hot hugepages must end on hot node 2, the cold ones on cold node 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import actuators
from etmemd_proc import EtmemdProc, wait_for

PAGES = 16  # hugepages per half: 32 MiB hot, 32 MiB cold
POOL = 64
HOT_NODE, COLD_NODE = 2, 0  # the first pair of node_pair=2,0;3,1 (hot,cold)
WORKLOAD = Path(__file__).with_name("cslide_workload.py")
NODE_DIR = Path("/sys/devices/system/node")

PROJECT = "[project]\nname=test\nloop=3\ninterval=1\nsleep=1\n"
ENGINE = (
    "[engine]\nname=cslide\nproject=test\nnode_pair=2,0;3,1\nhot_threshold=1\n"
    "node_mig_quota=1024\nnode_hot_reserve=1024\n"
)
TASK = (
    "[task]\nproject=test\nengine=cslide\nname=background_cslide\ntype=pid\nvalue={pid}\n"
    "vm_flags=ht\nanon_only=no\nign_host=no\n"
)


def nr_file(node: int) -> Path:
    return NODE_DIR / f"node{node}/hugepages/hugepages-2048kB/nr_hugepages"


@pytest.fixture
def hugepages():
    nodes = sorted(int(p.name[4:]) for p in NODE_DIR.glob("node[0-9]*"))
    if len(nodes) != 4:
        pytest.skip(f"the seed's node_pair needs 4 nodes; this guest has {len(nodes)}")
    before = {n: nr_file(n).read_text() for n in nodes}
    try:
        for n in nodes:
            nr_file(n).write_text(f"{POOL}\n")
        yield
    finally:
        for n, text in before.items():
            nr_file(n).write_text(text)


@pytest.fixture
def workload(hugepages):
    # both halves start on the wrong node: the hot one on the cold node and vice versa
    with subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(PAGES), str(COLD_NODE), str(HOT_NODE), "huge"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            hot, cold = (int(x, 16) for x in proc.stdout.readline().split())
            yield proc.pid, hot, cold
        finally:
            proc.kill()
            proc.wait()


def placement(pid: int, start: int) -> list[int]:
    addrs = start + np.arange(PAGES, dtype=np.uint64) * np.uint64(2 << 20)
    return actuators.query_nodes(pid, addrs).tolist()


def test_the_seed_cslide_example_places_hugepages_on_a_stock_kernel(workload, tmp_path):
    pid, hot, cold = workload
    assert placement(pid, hot) == [COLD_NODE] * PAGES
    assert placement(pid, cold) == [HOT_NODE] * PAGES
    d = EtmemdProc(tmp_path)
    try:
        d.add("proj", PROJECT)
        d.add("eng", ENGINE)
        d.add("task", TASK.format(pid=pid))
        d.etmem("project", "start", "-n", "test")  # failed with "tracker idle_pages cannot work"
        done = wait_for(
            lambda: (
                placement(pid, hot) == [HOT_NODE] * PAGES
                and placement(pid, cold) == [COLD_NODE] * PAGES
            ),
            120,
            step=1,
        )
        assert done, (placement(pid, hot), placement(pid, cold), d.logtext())
        d.etmem("project", "stop", "-n", "test")
    finally:
        d.stop()
