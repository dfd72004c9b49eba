"""The cslide engine thread: scan every working pid, file its pages, plan, move (C ``cslide_main``).

One cycle: node pools from sysfs -> VMAs and ``loop`` tracker passes per pid (``sleep`` seconds
after each pass) -> counts -> current node of every page (move_pages query) -> statistics ->
:func:`policy.plan_moves` -> move_pages, cold pages first, per pid and pair.

Pages stay runs the whole way (:class:`policy.NodePages`): the passes fold into the counts as
they come, the query and the moves go a batch of addresses at a time, and a page costs its
count, its node byte and (when moves are confirmed) its confirmation byte.

Unlike the original, a pid that is gone or unreadable is skipped for the cycle (logged, shown in
its task's stats) while the other pids go on; every wait is on the engine's stop event.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from etmem_sdk import EtmemError, scan
from etmem_sdk.scan import PMD, PTE, PageRefs, PageRuns, ScanError

from .config import HUGE_2M, HUGETLB
from .confirm import MoveConfirmation, default_confirm
from .policy import (
    NodePages,
    PidPages,
    Plan,
    as_node_pages,
    bucket_bytes,
    join_runs,
    plan_moves,
    where_dtype,
    where_of,
)
from .show import stamp
from .state import CslideEngineParams, CslidePidParams, PidState

log = logging.getLogger("etmemd.cslide")

#: pages per move_pages call, query or move (the kernel call's batch, as the original's)
MOVE_BATCH = 1 << 16


@dataclass
class CycleResult:
    """What one cycle did (for logs and tests)."""

    scanned: list[CslidePidParams] = field(default_factory=list)
    #: the pages of each scanned pid, as the statistics saw them (no move held back)
    pages: list[NodePages] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    plan: Plan | None = None
    #: (pid, destination node) -> bytes moved
    moved: dict[tuple[int, int], int] = field(default_factory=dict)
    error: str = ""


def engine_main(eng: CslideEngineParams) -> None:
    """Body of the engine thread; returns soon after ``eng.stop`` is set."""
    try:
        while True:
            for p in eng.factory.update():
                close_tracker(p)
            for p in eng.factory.working:
                if p.state is not PidState.WORKING:
                    close_tracker(p)
            if eng.stop.is_set():
                break
            if eng.factory.working_pids():
                try:
                    run_cycle(eng)
                except Exception:  # a policy bug must not end the thread silently
                    log.exception("cslide cycle failed")
            if eng.stop.wait(eng.config.interval):
                break
    finally:
        for p in eng.factory.update() + eng.factory.working:
            close_tracker(p)


def close_tracker(p: CslidePidParams) -> None:
    """Close the pid's tracker if it has one (engine thread only)."""
    tracker, p.tracker = p.tracker, None
    p.confirmation = None  # streaks belong to the tracker that saw them
    if tracker is not None:
        try:
            tracker.close()
        except Exception:
            log.exception("cslide: closing the tracker of pid %d failed", p.pid)


def fold_hugepages(
    addr: np.ndarray, ptype: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base-page rows of hugetlb VMAs (trackers that only see 4 KiB pages, e.g. damon) become
    one 2 MiB row each, like idle_pages with SCAN_AS_HUGE reports them.

    The row's count is the rounded mean of its parts: a hugepage has one accessed bit, so its
    parts only disagree where a tracker's region boundary cuts through it (DAMON regions are
    4 KiB-aligned), and then most of the page tells the truth.
    """
    small = ptype == PTE
    if not small.any():
        return addr, ptype, count
    mask = ~np.uint64(HUGE_2M - 1)
    addr = np.where(small, addr & mask, addr)
    ptype = np.where(small, np.uint8(PMD), ptype).astype(np.uint8)
    order = np.argsort(addr, kind="stable")
    addr, ptype, count = addr[order], ptype[order], count[order].astype(np.int64)
    uniq, first, parts = np.unique(addr, return_index=True, return_counts=True)
    mean = np.add.reduceat(count, first) / parts
    return uniq, ptype[first], np.floor(mean + 0.5).astype(np.int32)


def fold_huge_runs(runs: PageRuns, count: np.ndarray, block: int | None = None):
    """:func:`fold_hugepages` over runs and their counts, a block of pages at a time:
    ``(runs, int32 counts)`` of the folded pages.

    A 2 MiB page's parts are neighbours in address order, so a block's last page joins the
    next block; were the folded addresses ever out of order (a huge page off its 2 MiB grid),
    the whole page list is folded at once instead.
    """
    if not (runs.type == PTE).any():
        return runs, count
    mask = ~np.uint64(HUGE_2M - 1)
    n = len(runs)
    block = block or MOVE_BATCH
    pieces: list[PageRuns] = []
    counts: list[np.ndarray] = []
    tail = None  # (key, type, sum, parts) of the group the last block ended in
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        addr, ptype = runs.addresses(lo, hi), runs.types(lo, hi)
        small = ptype == PTE
        key = np.where(small, addr & mask, addr)
        if (key[1:] < key[:-1]).any() or (tail is not None and key[0] < tail[0]):
            whole = fold_hugepages(runs.addresses(), runs.types(), count)
            return PageRuns.from_addresses(whole[0], whole[1]), whole[2]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        gkey, gtype = key[first], np.where(small, np.uint8(PMD), ptype).astype(np.uint8)[first]
        total = np.add.reduceat(count[lo:hi].astype(np.int64), first)
        parts = np.diff(np.r_[first, hi - lo])
        if tail is not None:
            if gkey[0] == tail[0]:
                gtype[0] = tail[1]
                total[0] += tail[2]
                parts[0] += tail[3]
            else:
                gkey, gtype = np.r_[tail[0], gkey], np.r_[tail[1], gtype].astype(np.uint8)
                total, parts = np.r_[tail[2], total], np.r_[tail[3], parts]
        if hi < n:  # the last group may go on in the next block
            tail = (gkey[-1], gtype[-1], int(total[-1]), int(parts[-1]))
            gkey, gtype, total, parts = gkey[:-1], gtype[:-1], total[:-1], parts[:-1]
        else:
            tail = None
        if len(gkey):
            pieces.append(PageRuns.from_addresses(gkey, gtype))
            counts.append(np.floor(total / parts + 0.5).astype(np.int32))
    if not pieces:
        return PageRuns.empty(), np.empty(0, np.int32)
    return join_runs(pieces), np.concatenate(counts)


def query_where(host, pid: int, runs: PageRuns, nodes) -> np.ndarray:
    """The node byte of every page (``policy.where_of``), queried a batch at a time."""
    where = np.empty(len(runs), where_dtype(nodes))
    for lo in range(0, len(where), MOVE_BATCH):
        hi = min(lo + MOVE_BATCH, len(where))
        status = np.asarray(host.move_pages(pid, runs.addresses(lo, hi), None), dtype=np.int64)
        where[lo:hi] = where_of(status, nodes)
    return where


def _skip(result: CycleResult, p: CslidePidParams, why: str) -> None:
    p.skipped = why
    result.skipped[p.pid] = why
    log.warning("cslide: skipping pid %d this cycle: %s", p.pid, why)


def run_cycle(eng: CslideEngineParams) -> CycleResult:
    """One full cycle over the engine's working pids."""
    cfg, host = eng.config, eng.host
    result = CycleResult()
    working = eng.factory.working_pids()
    try:
        mem = host.node_mem(cfg.nodes, cfg.memory)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        result.error = f"cannot read node memory: {exc}"
        log.error("cslide: %s", result.error)
        return result
    if cfg.memory == HUGETLB:
        empty = [n for n, m in mem.items() if m.total <= 0]
        if empty:
            result.error = "no 2 MiB hugepages on node " + ", ".join(map(str, empty))
            log.error("cslide: %s", result.error)
            return result
    eng.mem = mem

    # Scan: loop passes over every pid, sleep after each pass. Trackers stay open across
    # cycles (a DAMON tracker needs time to learn regions); the thread closes them.
    # per pid: params, VMAs, [counts so far, whether they may be added to in place]
    scans: dict[int, tuple[CslidePidParams, list, list]] = {}
    for p in working:
        try:
            vmas = host.read_vmas(p.pid, p.task)
            if vmas and p.tracker is None:
                p.tracker = host.open_tracker(p.pid, p.task, cfg.memory)
                tracker = getattr(p.tracker, "name", "")
                confirm = p.task.confirm_cycles or default_confirm(tracker, cfg.memory)
                p.confirmation = MoveConfirmation(confirm)
        except (EtmemError, OSError) as exc:
            close_tracker(p)
            _skip(result, p, str(exc))
            continue
        p.skipped = ""
        scans[p.pid] = (p, vmas, [PageRefs.empty(), False])
    for _ in range(cfg.loop):
        for pid, (p, vmas, acc) in list(scans.items()):
            if not vmas:
                continue
            try:
                # folded as they come (as scan.accumulate folds a list): one pass alive at a time
                acc[0] = scan.merge(acc[0], p.tracker.scan_pass(vmas), in_place=acc[1])
                acc[1] = len(acc[0]) > 0
            except (ScanError, EtmemError, OSError, ValueError) as exc:
                close_tracker(p)
                _skip(result, p, f"scan failed: {exc}")
                del scans[pid]
        if eng.stop.wait(cfg.sleep):
            result.error = "stopped"
            return result

    # File every page by (count, current node).
    pids: list[CslidePidParams] = []
    pages: list[NodePages] = []
    planned: list[NodePages] = []  # as the policy sees them: unconfirmed moves held back
    for p, _vmas, acc in scans.values():
        refs = acc.pop(0)
        runs, count = refs.runs, refs.count
        del refs
        if cfg.memory == HUGETLB:
            runs, count = fold_huge_runs(runs, count)
        if len(runs):
            try:
                where = query_where(host, p.pid, runs, cfg.nodes)
            except (EtmemError, OSError) as exc:
                _skip(result, p, f"node query failed: {exc}")
                continue
            # a negative status (not present, unmapped) or another node: where = absent
            pid_pages = NodePages(runs, count, where, cfg.nodes)
        else:
            pid_pages = NodePages.empty(cfg.nodes)
        del runs, count
        pids.append(p)
        pages.append(pid_pages)
        if p.confirmation is not None:
            pid_pages = p.confirmation.hold(
                pid_pages,
                cfg.hot_threshold,
                (pr.hot for pr in cfg.pairs),
                (pr.cold for pr in cfg.pairs),
            )
        planned.append(pid_pages)
    result.scanned, result.pages = pids, pages
    update_stats(eng, working, pids, pages)

    plan = plan_moves(planned, mem, cfg)
    result.plan = plan
    migrate(eng, pids, plan, result)
    eng.cycles += 1
    return result


def node_pages_kb(
    pages: PidPages | NodePages, nodes, hot_threshold: int
) -> dict[int, tuple[int, int]]:
    """node -> (hot KiB, cold KiB) from each page's real size."""
    compact = as_node_pages(pages, nodes)
    low = min(hot_threshold - 1, 0)
    by_count = bucket_bytes(compact, low, max(hot_threshold, low), held=False)
    cold = by_count[: hot_threshold - low].sum(axis=0)
    hot = by_count[hot_threshold - low :].sum(axis=0)
    index = {n: i for i, n in enumerate(compact.nodes)}
    out = {}
    for n in nodes:
        i = index.get(n)
        out[n] = (0, 0) if i is None else (int(hot[i]) // 1024, int(cold[i]) // 1024)
    return out


def _nodes_json(nodes, pages, totals=None) -> dict[str, dict[str, int]]:
    out = {}
    for n in nodes:
        hot, cold = pages.get(n, (0, 0))
        row = {"used_kb": hot + cold, "hot_kb": hot, "cold_kb": cold}
        if totals is not None:
            row = {"total_kb": totals[n].total // 1024, "free_kb": totals[n].free // 1024, **row}
        out[str(n)] = row
    return out


def update_stats(
    eng: CslideEngineParams,
    working: list[CslidePidParams],
    scanned: list[CslidePidParams],
    pages: list[NodePages],
) -> None:
    """Per-pid and host hot/cold KiB per node, the time, and the JSON copies in the stats."""
    nodes = eng.config.nodes
    by_pid = {id(p): pp for p, pp in zip(scanned, pages, strict=True)}
    host = {n: [0, 0] for n in nodes}
    with eng.stat_lock:
        for p in working:
            pp = by_pid.get(id(p))
            p.pages = (
                node_pages_kb(pp, nodes, eng.config.hot_threshold)
                if pp is not None
                else {n: (0, 0) for n in nodes}
            )
            for n, (h, c) in p.pages.items():
                host[n][0] += h
                host[n][1] += c
        eng.host_pages = {n: (h, c) for n, (h, c) in host.items()}
        eng.stat_time = time.time()
        publish_stats(eng, working)


def publish_stats(eng: CslideEngineParams, pids: list[CslidePidParams] | None = None) -> None:
    """Replace ``engine.stats`` / ``task.stats`` with fresh JSON-ready dicts (atomic swaps)."""
    when = stamp(eng.stat_time).strip(" []")
    if eng.model is not None and eng.mem:
        eng.model.stats = {
            "stat_time": eng.stat_time,
            "stat_time_text": when,
            "cycles": eng.cycles,
            "memory": eng.config.memory,
            "pairs": [{"hot": p.hot, "cold": p.cold} for p in eng.config.pairs],
            "nodes": _nodes_json(eng.config.nodes, eng.host_pages, eng.mem),
        }
    for p in pids or ():
        if p.task_model is not None:
            p.task_model.stats = {
                "pid": p.pid,
                "stat_time": eng.stat_time,
                "stat_time_text": when,
                "skipped": p.skipped,
                "nodes": _nodes_json(eng.config.nodes, p.pages),
            }


def migrate(
    eng: CslideEngineParams, pids: list[CslidePidParams], plan: Plan, result: CycleResult
) -> None:
    """Move each pid's planned pages, cold ones first; a failing pid does not stop the others.

    Like the original, the thread runs on the pair's lower-numbered node while it moves (the
    copy then runs near the memory), and gets its own CPU set back afterwards.
    """
    saved = eng.host.affinity()
    try:
        for p, pair_moves in zip(pids, plan.moves, strict=True):
            try:
                for pair, moves in zip(eng.config.pairs, pair_moves, strict=True):
                    if moves.hot or moves.cold:
                        eng.host.run_on_node(min(pair.hot, pair.cold))
                    _move(eng, p, pair, moves, result)
            except (EtmemError, OSError) as exc:
                _skip(result, p, f"move_pages failed: {exc}")
    finally:
        eng.host.set_affinity(saved)


def _move(eng: CslideEngineParams, p: CslidePidParams, pair, moves, result: CycleResult) -> None:
    for pieces, node, nbytes, src in (
        (moves.cold, pair.cold, moves.cold_bytes, pair.hot),
        (moves.hot, pair.hot, moves.hot_bytes, pair.cold),
    ):
        npages = sum(len(r) for r in pieces)
        if not npages:
            continue
        landed = 0
        for addrs in moves.batches(pieces, MOVE_BATCH):
            status = np.asarray(eng.host.move_pages(p.pid, addrs, node))
            landed += int(np.count_nonzero(status == node))
        result.moved[(p.pid, node)] = result.moved.get((p.pid, node), 0) + nbytes
        log.info(
            "cslide: task %d move pages %d KB from node %d to node %d (%d of %d pages landed)",
            p.pid,
            nbytes // 1024,
            src,
            node,
            landed,
            npages,
        )
