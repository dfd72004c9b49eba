"""Why cslide with ``tracker=damon`` on normal memory oscillates (test bed only, issue 12 item 3).

    tests/vm/run --mem 4G .venv/bin/python benchmarks/cslide_damon_normal.py [CYCLES]

The workload of tests/vm/guest/test_cslide_guest.py (two 32 MiB halves of 4 KiB pages, the hot
one written every 2 ms, both starting on the wrong node) under cslide with DAMON; per cycle it
prints, for each half, the share of its pages the accumulated counts call hot, the MiB planned
up and down, and where the half's pages are.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import etmem_cslide.engine as ce
import numpy as np
from etmem_cslide import config as cc
from etmem_cslide.cycle import close_tracker, run_cycle
from etmem_scan import actuators
from etmem_sdk import ConfigSection, Engine, Project, Task

PAGES = 16  # 2 MiB stretches per half
HALF = PAGES * (2 << 20)
WORKLOAD = Path(__file__).resolve().parent.parent / "tests/vm/guest/cslide_workload.py"


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    nodes = cc.configured_nodes("/sys")
    hot_node, cold_node = nodes[0], nodes[1]
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(PAGES), str(cold_node), str(hot_node), "normal"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        hot, cold = (int(x, 16) for x in proc.stdout.readline().split())
        run(proc.pid, hot, cold, hot_node, cold_node, cycles)
    finally:
        proc.kill()
        proc.wait()


def run(pid, hot, cold, hot_node, cold_node, cycles) -> None:
    project = Project(name="vm", loop=3, interval=1, sleep=1)
    engine = Engine(name="cslide", kind="cslide", project=project)
    ce.fill_eng_params(
        engine=engine,
        config=ConfigSection(
            "engine",
            {"project": "vm", "name": "cslide", "node_pair": f"{hot_node},{cold_node}",
             "hot_threshold": "2", "node_mig_quota": "16", "node_hot_reserve": str(1 << 16),
             "memory": "normal"},
            path="eng.config",
        ),
    )  # fmt: skip
    task = Task(name="w", type="pid", value=str(pid), engine=engine)
    engine.tasks.append(task)
    ce.fill_task_params(
        task=task,
        config=ConfigSection(
            "task",
            {"project": "vm", "engine": "cslide", "name": "w", "type": "pid", "value": str(pid),
             "anon_only": "no", "ign_host": "no", "vm_flags": "rd nh", "tracker": "damon"},
            path="task.config",
        ),
    )  # fmt: skip
    eng = engine.params
    p = task.pids[0].params
    eng.factory.add(p)
    eng.factory.update()
    halves = {"hot": (hot, hot + HALF), "cold": (cold, cold + HALF)}
    try:
        for c in range(cycles):
            r = run_cycle(eng)
            pages = r.pages[0] if r.pages else None
            moves = r.plan.moves[0][0] if r.plan and r.plan.moves else None
            line = [f"cycle {c}:"]
            for name, (lo, hi) in halves.items():
                inside = lambda a, lo=lo, hi=hi: (a >= lo) & (a < hi)  # noqa: E731
                hot_share = up = down = 0.0
                counts: list[int] = []
                if pages is not None and len(pages):
                    m = inside(pages.addr)
                    hot_share = float((pages.count[m] >= 2).mean()) if m.any() else 0.0
                    counts = np.bincount(pages.count[m], minlength=7)[:7].tolist()
                if moves is not None:
                    up = int(inside(moves.hot_addrs()).sum()) * 4096 / 2**20
                    down = int(inside(moves.cold_addrs()).sum()) * 4096 / 2**20
                addrs = lo + np.arange(HALF // 4096, dtype=np.uint64) * np.uint64(4096)
                where = actuators.query_nodes(pid, addrs)
                on_hot = float((where == hot_node).mean())
                line.append(
                    f"{name} half: counts {counts} seen-hot {hot_share:.0%} "
                    f"up {up:.1f} MiB down {down:.1f} MiB, on hot node {on_hot:.0%};"
                )
            print(" ".join(line), flush=True)
    finally:
        close_tracker(p)


if __name__ == "__main__":
    main()
