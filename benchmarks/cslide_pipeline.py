"""cslide's page path on a simulated 64 GiB process: memory per scanned page and time per
cycle, with no real process and no second NUMA node (issue 12's "<= 8 bytes per scanned page").

    .venv/bin/python benchmarks/cslide_pipeline.py                  # 64 GiB, 2 cycles
    .venv/bin/python benchmarks/cslide_pipeline.py --gib 4 --cycles 3

A simulated machine stands behind the seams cslide's tests use (a ``Host`` subclass): node
pools, VMAs, a tracker whose passes are runs plus a weight byte per page, and move_pages over
a node byte per page (query and move). All of it is allocated before the baseline, so only
what etmemd keeps is counted. Each cycle is ``run_cycle`` itself: ``loop`` passes -> counts ->
node query -> statistics -> confirmation -> plan -> moves.

The process: ``--vmas`` anonymous VMAs of 4 KiB pages, the first half of the pages on the hot
node 0, the rest on the cold node 1, 1 % of them not resident (query: ``-ENOENT``); a tenth is
hot (``--hot-run`` pages every ten times that). The tracker is called ``damon``, so memory=normal
confirms every move twice (the default): the first cycle holds every move and remembers it,
the second moves. The hot node has 512 MiB free and a 1 GiB reserve, the quota is 1 GiB:
promotion (phase A) displaces cold pages, which phase C demotes.

*extra B/page* is the peak RSS (VmHWM, reset through ``/proc/self/clear_refs`` after the
setup) above the RSS at the baseline, over the scanned pages; the digest of every address
moved, per destination node and in call order, shows that two versions planned the same
moves. The last line says PASS or FAIL against the 8 B/page target.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

PAGE = 4096
BASE = 0x7F0000000000
GAP = 1 << 30  # between VMAs
TARGET_BPP = 8.0
ABSENT = 255
CHUNK = 1 << 16  # pages per step of the simulation's own work


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class Machine:
    """The simulated kernel: one node byte per page (``ABSENT``: not resident), hot bits."""

    def __init__(self, npages: int, nvmas: int, hot_run: int) -> None:
        self.n = npages
        per = -(-npages // nvmas)
        self.vma_pages = [min(per, npages - i * per) for i in range(nvmas)]
        self.vma_start = np.array(
            [BASE + i * (per * PAGE + GAP) for i in range(nvmas)], dtype=np.uint64
        )
        self.vma_first = np.cumsum([0] + self.vma_pages[:-1]).astype(np.int64)
        # np.full, not np.zeros: calloc'd memory would be faulted in during the run
        self.node = np.full(npages, 0, np.uint8)
        self.node[npages // 2 :] = 1
        self.node[::100] = ABSENT  # 1 % not resident
        pattern = (np.arange(10 * hot_run) < hot_run).astype(np.uint8)
        self.hot = np.tile(pattern, -(-npages // pattern.size))[:npages]
        self.digest = {0: hashlib.blake2b(), 1: hashlib.blake2b()}
        self.moved = {0: 0, 1: 0}

    def index(self, addrs: np.ndarray) -> np.ndarray:
        vma = np.searchsorted(self.vma_start, addrs, side="right") - 1
        return self.vma_first[vma] + ((addrs - self.vma_start[vma]) // PAGE).astype(np.int64)

    def move_pages(self, addrs: np.ndarray, node: int | None) -> np.ndarray:
        addrs = np.asarray(addrs, np.uint64)
        status = np.empty(len(addrs), np.int32)
        for lo in range(0, len(addrs), CHUNK):
            a = addrs[lo : lo + CHUNK]
            idx = self.index(a)
            if node is not None:
                self.digest[node].update(a.tobytes())
                self.moved[node] += len(a)
                present = self.node[idx] != ABSENT
                self.node[idx[present]] = node
            on = self.node[idx].astype(np.int32)
            on[on == ABSENT] = -2  # -ENOENT
            status[lo : lo + CHUNK] = on
        return status


class Vma:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class Tracker:
    """Passes of the simulated process: one run per VMA, weight 1 on hot pages."""

    name = "damon"  # a tracker of regions: memory=normal confirms moves twice

    def __init__(self, machine: Machine) -> None:
        from etmem_sdk.scan import PageRuns

        m = machine
        self.machine = machine
        self.runs = PageRuns(
            m.vma_start.copy(),
            np.array(m.vma_pages, np.int64),
            np.zeros(len(m.vma_pages), np.uint8),
            np.full(len(m.vma_pages), PAGE, np.uint64),
        )

    def scan_pass(self, vmas):
        from etmem_sdk.scan import PassRefs

        return PassRefs.from_runs(self.runs, self.machine.hot.copy())

    def close(self) -> None:
        pass


def make_host(machine: Machine, free_mib: int):
    from etmem_cslide.config import NodeMem
    from etmem_cslide.host import Host

    total = machine.n * PAGE

    class SimHost(Host):
        def node_mem(self, nodes, memory):
            return {0: NodeMem(total, free_mib << 20), 1: NodeMem(total, total // 2)}

        def read_vmas(self, pid, task):
            return [
                Vma(int(s), int(s) + n * PAGE)
                for s, n in zip(machine.vma_start, machine.vma_pages, strict=True)
            ]

        def open_tracker(self, pid, task, memory):
            return Tracker(machine)

        def move_pages(self, pid, addrs, node):
            return machine.move_pages(addrs, node)

        def affinity(self):
            return set()

        def set_affinity(self, cpus):
            pass

        def run_on_node(self, node):
            pass

    return SimHost(proc_root="/nonexistent", sys_root="/nonexistent")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=64, help="process size (GiB of 4 KiB pages)")
    ap.add_argument("--vmas", type=int, default=4, help="VMAs the process is cut into")
    ap.add_argument("--hot-run", type=int, default=16, help="hot pages in a row (a tenth hot)")
    ap.add_argument("--cycles", type=int, default=2, help="cycles to run")
    ap.add_argument("--loop", type=int, default=3, help="passes per cycle")
    ap.add_argument("--quota", type=int, default=1024, help="node_mig_quota (MiB)")
    ap.add_argument("--free", type=int, default=512, help="free MiB on the hot node")
    ap.add_argument("--reserve", type=int, default=1024, help="node_hot_reserve (MiB)")
    args = ap.parse_args()

    from etmem_cslide import cycle as cy
    from etmem_cslide.config import NORMAL, EngineConfig, NodePair, TaskConfig
    from etmem_cslide.state import CslideEngineParams, CslidePidParams, PidState

    npages = int(args.gib * (1 << 30)) // PAGE
    machine = Machine(npages, args.vmas, args.hot_run)
    cfg = EngineConfig(
        pairs=(NodePair(0, 0, 1),),
        nodes=(0, 1),
        hot_threshold=1,
        mig_quota=args.quota,
        hot_reserve=args.reserve,
        loop=args.loop,
        interval=1,
        sleep=0,
        memory=NORMAL,
    )
    eng = CslideEngineParams(config=cfg, host=make_host(machine, args.free))
    task = TaskConfig(vm_flags=(), anon_only=True, ign_host=True, scan_flags=0)
    p = CslidePidParams(pid=4242, task_name="sim", task=task, state=PidState.WORKING)
    eng.factory.working.append(p)

    where = Path(cy.__file__).resolve().parents[3]
    load = os.getloadavg()
    print(f"# etmem_cslide from {where}; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"# {args.gib:g} GiB = {npages:,} pages of 4 KiB in {args.vmas} VMAs; "
          f"loop={args.loop}, quota {args.quota} MiB, hot node {args.free} MiB free, "
          f"reserve {args.reserve} MiB")  # fmt: skip
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = status_kib("VmRSS")
    peak_extra = 0
    for c in range(args.cycles):
        t0, c0 = time.perf_counter(), time.process_time()
        result = cy.run_cycle(eng)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        extra = (status_kib("VmHWM") - base) * 1024
        peak_extra = max(peak_extra, extra)
        moved = {node: b >> 20 for (_pid, node), b in sorted(result.moved.items())}
        print(f"cycle {c + 1}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak above baseline "
              f"{extra / 2**20:7.1f} MiB = {extra / npages:5.2f} B/page; moved MiB {moved}; "
              f"stats {p.pages}; skipped {result.skipped or '-'}")  # fmt: skip
        del result
    print("moved pages:", {n: machine.moved[n] for n in (0, 1)},
          "digest:", {n: machine.digest[n].hexdigest()[:16] for n in (0, 1)})  # fmt: skip
    bpp = peak_extra / npages
    verdict = "PASS" if bpp <= TARGET_BPP else "FAIL"
    print(f"{verdict}: peak {bpp:.2f} B/page above the baseline (target <= {TARGET_BPP:g})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
