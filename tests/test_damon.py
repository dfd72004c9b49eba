"""The damon tracker on a fake DAMON sysfs that behaves like Linux 6.12's.

The real /sys/kernel/mm/damon is never written: the machine's own kdamond runs there.  The fake
kernel (:class:`FakeDamon`) replaces ``etmem_scan.damon._write_once`` and models what the tracker
relies on: ``nr_kdamonds``/``nr_targets``/``nr_schemes`` rebuild their directories with
defaults, ``on`` builds a running context, ``commit`` matches targets by index (a target keeps
its learned regions, here a "history" id) and stops the kdamond when a pid no longer exists,
and ``update_schemes_tried_regions`` fills each scheme's ``tried_regions`` with the regions of
the targets its ``target`` filter lets through that match its access pattern.  DAMOS inputs are
modelled too: quotas (with ``goals`` where the kernel has them), watermarks, ``target_nid``,
action names checked like 6.12's, and per-scheme ``stats`` that belong to the scheme index
(they survive commits; ``update_schemes_stats`` shows them).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import damon, damon_record
from etmem_scan.damon import DamonBusy, DamonTracker
from etmem_scan.pagemap import PAGE_SIZE
from etmem_scan.trackers import TrackerUnavailable, make_tracker
from etmem_sdk import TargetGone

PRESENT = 1 << 63
BASE = 0x7F0000000000
PAGES = 8
ACTIONS_612 = ("willneed", "cold", "pageout", "hugepage", "nohugepage", "lru_prio", "lru_deprio",
               "migrate_hot", "migrate_cold", "stat")  # fmt: skip
STAT_FILES = ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds")
FAST = {"sample_us": 100, "aggr_us": 1_000, "update_us": 2_000}


class V:
    def __init__(self, start: int, end: int):
        self.start, self.end = start, end


VMAS = [V(BASE, BASE + PAGES * PAGE_SIZE)]


def _w(p: Path, text: object) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{text}\n")


def page(i: int) -> int:
    return BASE + i * PAGE_SIZE


def add_process(proc: Path, pid: int, npages: int = PAGES) -> None:
    """A fake process whose pages 0..npages-1 at BASE are present."""
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "pagemap", "wb") as f:
        f.seek(BASE // PAGE_SIZE * 8)
        f.write(np.full(npages, PRESENT | 1, dtype=np.uint64).tobytes())
    (d / "stat").write_text(f"{pid} (fake) S 1 1\n")


class FakeDamon:
    def __init__(
        self,
        root: Path,
        proc: Path,
        *,
        avail="vaddr fvaddr paddr",
        target_filter=True,
        goals=True,
        target_nid=True,
    ):
        self.kds = root / "kernel/mm/damon/admin/kdamonds"
        self.proc = proc
        self.avail = avail
        self.target_filter = target_filter
        self.goals = goals
        self.target_nid = target_nid
        #: per kernel scheme index: its DAMOS statistics (kept across commits, as the kernel's)
        self.kstats: dict[int, dict[str, int]] = {}
        #: per pid: the regions DAMON reports, or a list of such lists (one per update, cycled)
        self.regions: dict[int, list] = {}
        self.running: list[list[int]] | None = None  # [pid, history id] per running target
        self.thread = 700
        self.history = 0
        self.starts = self.commits = self.updates = 0
        self.before_commit = None
        _w(self.kds / "nr_kdamonds", 0)

    # -- helpers
    def kd(self) -> Path:
        return self.kds / "0"

    def ctx(self) -> Path:
        return self.kd() / "contexts/0"

    def state(self) -> str:
        return (self.kd() / "state").read_text().strip()

    def _pids(self) -> list[int]:
        t = self.ctx() / "targets"
        n = int((t / "nr_targets").read_text())
        return [int((t / str(i) / "pid_target").read_text()) for i in range(n)]

    def _exists(self, pid: int) -> bool:
        return (self.proc / str(pid) / "stat").exists() or pid == os.getpid()

    @staticmethod
    def _rebuild(parent: Path, n: int, make) -> None:
        for d in parent.iterdir():
            if d.is_dir() and d.name.isdigit():
                shutil.rmtree(d)
        for i in range(n):
            make(parent / str(i))

    def _new_history(self) -> int:
        self.history += 1
        return self.history

    # -- the kernel
    def write(self, path: Path, value) -> None:
        value = str(value)
        rel = path.relative_to(self.kds).as_posix()
        name = path.name
        if rel == "nr_kdamonds":
            if (self.kd() / "state").exists() and self.state() == "on":
                raise OSError(errno.EBUSY, "busy")
            self._rebuild(self.kds, int(value), self._make_kdamond)
        elif name == "nr_contexts":
            self._rebuild(path.parent, int(value), self._make_context)
        elif name == "nr_targets":
            self._rebuild(path.parent, int(value), lambda d: _w(d / "pid_target", 0))
        elif name == "nr_schemes":
            self._rebuild(path.parent, int(value), self._make_scheme)
        elif name == "nr_filters":
            self._rebuild(path.parent, int(value), self._make_filter)
        elif name == "type" and path.parent.parent.name == "filters":
            if value not in ("anon", "memcg", "young", "addr", "target"):
                raise OSError(errno.EINVAL, "bad filter type")
        elif name == "nr_goals":
            self._rebuild(path.parent, int(value), self._make_goal)
        elif name == "action" and value not in ACTIONS_612:
            raise OSError(errno.EINVAL, "bad action")
        elif name == "target_metric" and value not in ("user_input", "some_mem_psi_us"):
            raise OSError(errno.EINVAL, "bad goal metric")
        elif name == "metric" and value not in ("none", "free_mem_rate"):
            raise OSError(errno.EINVAL, "bad watermarks metric")
        elif name == "state":
            self._state(value)
            return
        if not path.exists():
            raise PermissionError(errno.EACCES, f"no such sysfs file {rel}")
        path.write_text(value + "\n")

    def _make_kdamond(self, d: Path) -> None:
        _w(d / "state", "off")
        _w(d / "pid", -1)
        _w(d / "contexts/nr_contexts", 0)

    def _make_context(self, d: Path) -> None:
        _w(d / "avail_operations", self.avail)
        _w(d / "operations", "vaddr")
        for f in ("sample_us", "aggr_us", "update_us"):
            _w(d / "monitoring_attrs/intervals" / f, 0)
        for f in ("min", "max"):
            _w(d / "monitoring_attrs/nr_regions" / f, 0)
        _w(d / "targets/nr_targets", 0)
        _w(d / "schemes/nr_schemes", 0)

    def _make_scheme(self, d: Path) -> None:
        for key in ("sz", "nr_accesses", "age"):
            for f in ("min", "max"):
                _w(d / "access_pattern" / key / f, 0)
        _w(d / "action", "pageout")  # not what a user wants: every scheme must be written
        _w(d / "apply_interval_us", 0)
        for f in ("ms", "bytes", "reset_interval_ms"):
            _w(d / "quotas" / f, 0)
        if self.goals:
            _w(d / "quotas/goals/nr_goals", 0)
        _w(d / "watermarks/metric", "none")
        for f in ("interval_us", "high", "mid", "low"):
            _w(d / "watermarks" / f, 0)
        if self.target_nid:
            _w(d / "target_nid", -1)
        for f in STAT_FILES:
            _w(d / "stats" / f, 0)
        if self.target_filter:
            _w(d / "filters/nr_filters", 0)
        (d / "tried_regions").mkdir()

    def _make_goal(self, d: Path) -> None:
        _w(d / "target_metric", "user_input")
        _w(d / "target_value", 0)
        _w(d / "current_value", 0)

    def _make_filter(self, d: Path) -> None:
        _w(d / "type", "anon")
        _w(d / "damon_target_idx", 0)
        _w(d / "matching", "N")

    def _stop(self) -> None:
        self.running = None
        _w(self.kd() / "state", "off")
        _w(self.kd() / "pid", -1)

    def _state(self, cmd: str) -> None:
        on = self.state() == "on"
        if cmd == "on":
            if on:
                raise OSError(errno.EBUSY, "running")
            pids = self._pids()
            if not all(self._exists(p) for p in pids):
                raise OSError(errno.EINVAL, "no such pid")
            self.running = [[p, self._new_history()] for p in pids]
            self.kstats = {}  # a new context: new schemes
            self.thread += 1
            self.starts += 1
            _w(self.kd() / "state", "on")
            _w(self.kd() / "pid", self.thread)
        elif cmd == "off":
            if not on:
                raise OSError(errno.EPERM, "not running")
            self._stop()
        elif not on:
            raise OSError(errno.EINVAL, "not running")
        elif cmd == "commit":
            if self.before_commit:
                self.before_commit()
            self.commits += 1
            pids = self._pids()
            if not all(self._exists(p) for p in pids):
                self._stop()  # 6.12: the failed commit ends the kdamond; the write succeeds
                return
            assert self.running is not None
            n = int((self.ctx() / "schemes/nr_schemes").read_text())
            self.kstats = {i: v for i, v in self.kstats.items() if i < n}
            kept = [[p, h] for (_, h), p in zip(self.running, pids, strict=False)]
            self.running = kept + [[p, self._new_history()] for p in pids[len(kept) :]]
        elif cmd == "update_schemes_tried_regions":
            self._update()
        elif cmd == "update_schemes_stats":
            schemes = self.ctx() / "schemes"
            for i in range(int((schemes / "nr_schemes").read_text())):
                for f in STAT_FILES:
                    _w(schemes / str(i) / "stats" / f, self.kstats.get(i, {}).get(f, 0))
        else:
            raise OSError(errno.EINVAL, cmd)

    def _update(self) -> None:
        assert self.running is not None
        schemes = self.ctx() / "schemes"
        for i in range(int((schemes / "nr_schemes").read_text())):
            sc = schemes / str(i)
            idxs = range(len(self.running))
            f = sc / "filters/0"
            if (f / "type").exists() and (f / "type").read_text().strip() == "target":
                want = int((f / "damon_target_idx").read_text())
                assert (f / "matching").read_text().strip() == "N"
                idxs = [want]
            tried = sc / "tried_regions"
            self._rebuild(tried, 0, None)
            ap = sc / "access_pattern"

            def bounds(key: str, ap: Path = ap) -> tuple[int, int]:
                return tuple(int((ap / key / f).read_text()) for f in ("min", "max"))

            sz, nr, ag = bounds("sz"), bounds("nr_accesses"), bounds("age")
            n = 0
            for t in idxs:
                regs = self.regions.get(self.running[t][0], [])
                if regs and isinstance(regs[0], list):
                    regs = regs[self.updates % len(regs)]
                for start, end, acc, age in regs:
                    if not (sz[0] <= end - start <= sz[1] and nr[0] <= acc <= nr[1]
                            and ag[0] <= age <= ag[1]):  # fmt: skip
                        continue
                    for k, v in (
                        ("start", start),
                        ("end", end),
                        ("nr_accesses", acc),
                        ("age", age),
                    ):
                        _w(tried / str(n) / k, v)
                    n += 1
        self.updates += 1

    def histories(self) -> list[int]:
        assert self.running is not None
        return [h for _, h in self.running]


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    proc.mkdir()
    k = FakeDamon(tmp_path / "sys", proc)
    monkeypatch.setattr(damon, "_write_once", k.write)
    return k


def tracker(kernel: FakeDamon, pid: int, **kw) -> DamonTracker:
    add_process(kernel.proc, pid)
    t = make_tracker(
        "damon", pid, proc_root=kernel.proc, sys_root=kernel.kds.parents[4], **{**FAST, **kw}
    )
    assert isinstance(t, DamonTracker)
    return t


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_damon_creates_its_own_kdamond_reads_regions_and_removes_it(kernel):
    kernel.regions[10] = [
        (page(0), page(2), 3, 1),  # accessed in the last aggregation
        (page(2), page(4), 0, 1_000_000),  # idle for ages
        # age 0 but no accesses: DAMON also restarts ages on split/merge, so this is idle
        (page(4), page(6), 0, 0),
    ]  # pages 6, 7: in no region -> idle
    t = tracker(kernel, 10, aggr_us=5_000)
    ctx = kernel.ctx()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "1"
    assert (ctx / "operations").read_text().strip() == "vaddr"
    assert kernel._pids() == [10]
    assert (ctx / "schemes/0/action").read_text().strip() == "stat"
    assert (ctx / "schemes/0/filters/0/type").read_text().strip() == "target"
    assert (ctx / "monitoring_attrs/intervals/aggr_us").read_text().strip() == "5000"
    assert kernel.state() == "on" and kernel.starts == 1
    refs = t.scan_pass(VMAS)
    assert refs.addr.tolist() == [page(i) for i in range(PAGES)]
    assert refs.weight.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert kernel.updates == 3  # one pass ORs three aggregation windows
    t.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"
    t.close()  # idempotent


def test_a_pass_ors_its_aggregation_windows(kernel):
    # DAMON saw page 0 in the first window only and page 3 in the third only
    kernel.regions[10] = [
        [(page(0), page(1), 2, 0), (page(1), page(8), 0, 5)],
        [(page(0), page(8), 0, 5)],
        [(page(0), page(3), 0, 5), (page(3), page(4), 1, 0), (page(4), page(8), 0, 5)],
    ]
    with tracker(kernel, 10) as t:
        assert t.scan_pass(VMAS).weight.tolist() == [1, 0, 0, 1, 0, 0, 0, 0]
    kernel.updates = 0
    with tracker(kernel, 10, windows=1) as t:
        assert t.scan_pass(VMAS).weight.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


def test_two_processes_share_one_kdamond_and_each_sees_its_own_regions(kernel):
    # the same addresses in both processes: only the target filter tells them apart
    kernel.regions[10] = [(page(0), page(4), 5, 0), (page(4), page(8), 0, 9)]
    kernel.regions[20] = [(page(0), page(4), 0, 9), (page(4), page(8), 5, 0)]
    a = tracker(kernel, 10)
    thread = (kernel.kd() / "pid").read_text()
    history_a = kernel.histories()[0]
    b = tracker(kernel, 20)
    assert kernel.starts == 1 and kernel.commits == 1  # added by a commit, not a restart
    assert (kernel.kd() / "pid").read_text() == thread
    assert kernel._pids() == [10, 20]
    assert kernel.histories()[0] == history_a  # A kept its regions
    assert a.scan_pass(VMAS).weight.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert b.scan_pass(VMAS).weight.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    updates = kernel.updates
    c = tracker(kernel, 30)
    history_b = kernel.histories()[1]

    a.close()  # slot 0 of three: parked on our own pid, B and C do not move
    assert kernel._pids() == [os.getpid(), 20, 30]
    assert kernel.histories()[1:] == [history_b, kernel.histories()[2]]
    assert kernel.histories()[1] == history_b
    assert (kernel.kd() / "pid").read_text() == thread
    assert b.scan_pass(VMAS).weight.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert kernel.updates > updates

    d = tracker(kernel, 40)  # takes the parked slot
    assert kernel._pids() == [40, 20, 30] and d.slot == 0
    c.close()
    d.close()  # the trailing free slots go; B stays at index 1 behind a parked slot 0
    assert kernel._pids() == [os.getpid(), 20]
    assert kernel.histories()[1] == history_b
    b.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"
    assert kernel.starts == 1


def test_a_process_that_exited_is_target_gone_and_is_parked_before_the_next_commit(kernel):
    kernel.regions[20] = [(page(0), page(8), 5, 0)]
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    shutil.rmtree(kernel.proc / "10")  # A exits (and is reaped)
    with pytest.raises(TargetGone):
        a.scan_pass(VMAS)
    c = tracker(kernel, 30)  # a commit naming pid 10 would stop the kdamond
    assert kernel._pids() == [os.getpid(), 20, 30]
    assert kernel.state() == "on" and kernel.starts == 1
    assert b.scan_pass(VMAS).weight.all()
    for t in (a, b, c):
        t.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def test_a_commit_that_stopped_the_kdamond_starts_it_again(kernel):
    kernel.regions[20] = [(page(0), page(8), 5, 0)]
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    # A is reaped between our liveness check and the kernel's commit
    kernel.before_commit = lambda: shutil.rmtree(kernel.proc / "10")
    c = tracker(kernel, 30)
    kernel.before_commit = None
    assert kernel.state() == "on" and kernel.starts == 2
    assert kernel._pids() == [os.getpid(), 20, 30]
    assert b.scan_pass(VMAS).weight.all()
    for t in (a, b, c):
        t.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def test_a_new_target_is_waited_for_until_it_has_regions(kernel):
    a = tracker(kernel, 10)
    with pytest.raises(damon.ScanError, match="no regions"):
        a.scan_pass(VMAS)  # never any regions: not "all idle"
    a.close()
    # the kernel gives a target added by a commit its regions at its next operations update
    kernel.regions[10] = [(page(0), page(8), 0, 5)]
    kernel.regions[20] = [[], [], [(page(0), page(8), 1, 0)]]
    a = tracker(kernel, 10, update_us=2_000_000)
    b = tracker(kernel, 20, update_us=2_000_000)
    assert b.scan_pass(VMAS).weight.all()
    b.close()
    a.close()


def test_a_later_update_without_regions_is_waited_out_too(kernel):
    # a kdamond restarted mid-run lists no regions until its next operations update (seen
    # under TCG): a pass long after the target was added waits for them as the first one did
    r = (page(0), page(8), 1, 0)
    kernel.regions[10] = [[r], [], [r]]
    a = tracker(kernel, 10, windows=1)
    assert a.scan_pass(VMAS).weight.all()
    time.sleep(0.1)  # well past the first pass's grace (5 updates + 10 windows: 20 ms)
    assert a.scan_pass(VMAS).weight.all()
    a.close()


@pytest.mark.parametrize("state", ["on", "off"])
def test_damon_never_touches_a_kdamond_it_did_not_create(kernel, state):
    kernel.write(kernel.kds / "nr_kdamonds", 1)
    kernel.write(kernel.kd() / "contexts/nr_contexts", 1)
    if state == "on":
        kernel._state("on")
    before = snapshot(kernel.kds)
    add_process(kernel.proc, 10)
    with pytest.raises(DamonBusy, match="running" if state == "on" else "someone else"):
        DamonTracker(10, proc_root=kernel.proc, sys_root=kernel.kds.parents[4])
    assert snapshot(kernel.kds) == before


def test_damon_leaves_a_kdamond_that_was_replaced_or_reconfigured(kernel):
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    (kernel.ctx() / "targets/1/pid_target").write_text("999\n")  # someone else's change
    before = snapshot(kernel.kds)
    with pytest.raises(DamonBusy, match="someone else"):
        tracker(kernel, 30)
    a.close()
    b.close()
    assert snapshot(kernel.kds) == before

    # a new monitor after that: the kdamond there is not ours, so nothing is written
    with pytest.raises(DamonBusy):
        tracker(kernel, 40)
    assert snapshot(kernel.kds) == before


def test_damon_leaves_a_kdamond_whose_thread_changed(kernel):
    a = tracker(kernel, 10)
    (kernel.kd() / "pid").write_text("888\n")  # someone rebuilt kdamonds and started theirs
    before = snapshot(kernel.kds)
    a.close()
    assert snapshot(kernel.kds) == before


def test_damon_refuses_without_vaddr_and_cleans_up_its_kdamond(kernel):
    kernel.avail = "paddr"
    add_process(kernel.proc, 10)
    with pytest.raises(TrackerUnavailable, match="no vaddr"):
        DamonTracker(10, proc_root=kernel.proc, sys_root=kernel.kds.parents[4])
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def test_damon_intervals_belong_to_the_shared_kdamond(kernel):
    a = tracker(kernel, 10)
    with pytest.raises(TrackerUnavailable, match="shared kdamond"):
        tracker(kernel, 20, aggr_us=50_000)
    a.close()
    tracker(kernel, 20, aggr_us=50_000).close()  # no kdamond running: fine again


def test_without_target_filters_one_process_at_a_time(kernel):
    kernel.target_filter = False
    kernel.regions[10] = [(page(0), page(8), 5, 0)]
    a = tracker(kernel, 10)
    assert a.scan_pass(VMAS).weight.all()
    with pytest.raises(TrackerUnavailable, match="one process at a time"):
        tracker(kernel, 20)
    a.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def test_damon_missing(tmp_path):
    with pytest.raises(TrackerUnavailable, match="no DAMON sysfs"):
        DamonTracker(1, proc_root=tmp_path, sys_root=tmp_path)


def test_damon_refuses_on_this_machine_without_writing(monkeypatch):
    # Any write attempt fails the test before it reaches the real sysfs.
    def no_write(path, value):
        raise AssertionError(f"tried to write {value!r} to {path}")

    monkeypatch.setattr(damon, "_write_once", no_write)
    with pytest.raises(TrackerUnavailable):
        make_tracker("damon", 1)


def test_the_probe_counts_our_own_kdamond_as_usable(kernel):
    from etmem_scan.probe import probe

    sys_root = kernel.kds.parents[4]
    assert probe(kernel.proc, sys_root).trackers["damon"].usable
    a = tracker(kernel, 10)
    caps = probe(kernel.proc, sys_root)
    assert caps.trackers["damon"].usable, caps.trackers["damon"]
    assert caps.facts["damon_ours"] is True
    a.close()
    kernel.write(kernel.kds / "nr_kdamonds", 1)  # someone else's kdamond
    assert not probe(kernel.proc, sys_root).trackers["damon"].usable


def test_regions_of_one_target(kernel):
    kernel.regions[10] = [(page(4), page(8), 0, 3), (page(0), page(4), 2, 0)]
    with tracker(kernel, 10) as t:
        assert t.regions().tolist() == [[page(0), page(4), 2, 0], [page(4), page(8), 0, 3]]


def test_a_handle_of_a_kdamond_we_gave_up_never_reads_a_new_ones_slots(kernel):
    kernel.regions[20] = [(page(0), page(8), 5, 0)]
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    (kernel.kd() / "pid").write_text("888\n")  # someone else's thread now
    b.close()  # not ours any more: left alone, and the monitor lets go of it
    kernel._stop()
    kernel.write(kernel.kds / "nr_kdamonds", 0)  # that someone went away again
    c = tracker(kernel, 30)  # a new kdamond of ours, pid 30 in slot 0
    with pytest.raises(damon.ScanError, match="gone"):
        a.scan_pass(VMAS)  # A's slot 0 is C's now
    a.close()
    assert kernel._pids() == [30] and kernel.state() == "on"
    c.close()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def busy_for(monkeypatch, name: str, times: int, *, write: bool = False) -> list[str]:
    """Make the next ``times`` reads (or writes) of sysfs files called ``name`` fail with EBUSY,
    as DAMON's trylocked handlers do while the kdamond holds the lock."""
    hits: list[str] = []
    attr = "_write_once" if write else "_read_once"
    real = getattr(damon, attr)

    def flaky(path, *args):
        if Path(path).name == name and len(hits) < times:
            hits.append(str(path))
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(path, *args)

    monkeypatch.setattr(damon, attr, flaky)
    return hits


def test_a_moment_of_ebusy_from_damon_sysfs_is_waited_out(kernel, monkeypatch):
    # Failed in the test bed: reading the kdamond's pid right after an aggregation window
    # answered EBUSY and the pass was skipped.
    kernel.regions[10] = [(page(0), page(4), 5, 0), (page(4), page(8), 0, 9)]
    with tracker(kernel, 10) as t:
        pid_hits = busy_for(monkeypatch, "pid", 3)
        assert t.scan_pass(VMAS).weight.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        assert len(pid_hits) == 3
        state_hits = busy_for(monkeypatch, "state", 2, write=True)
        assert t.scan_pass(VMAS).weight.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        assert len(state_hits) == 2


def test_ebusy_that_does_not_pass_is_reported_not_waited_on_forever(kernel, monkeypatch):
    kernel.regions[10] = [(page(0), page(8), 5, 0)]
    monkeypatch.setattr(damon, "BUSY_RETRY_S", 0.05)
    with tracker(kernel, 10) as t:
        busy_for(monkeypatch, "pid", 10**6)
        with pytest.raises(DamonBusy, match="Device or resource busy"):
            t.scan_pass(VMAS)


def test_a_kernel_built_without_vaddr_is_refused_before_any_write(kernel, monkeypatch):
    # This VM: DAMON sysfs with no kdamond, paddr only. Its avail_operations can only be read
    # inside a kdamond, which would take a write; the kernel's configuration says it first.
    import gzip

    with gzip.open(kernel.proc / "config.gz", "wt") as f:
        f.write("CONFIG_DAMON=y\n# CONFIG_DAMON_VADDR is not set\nCONFIG_DAMON_PADDR=y\n")
    writes = []
    monkeypatch.setattr(damon, "_write_once", lambda path, value: writes.append(path))
    with pytest.raises(TrackerUnavailable, match="CONFIG_DAMON_VADDR"):
        tracker(kernel, 10)
    assert writes == []


def test_every_slot_has_a_stat_scheme_and_a_second_one_that_never_acts_for_the_tracker(kernel):
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    schemes = kernel.ctx() / "schemes"
    assert (schemes / "nr_schemes").read_text().strip() == "4"
    for i in (1, 3):  # the DAMOS slot of a tracker target: stat, and no region matches it
        sc = schemes / str(i)
        assert (sc / "action").read_text().strip() == "stat"
        assert (sc / "access_pattern/nr_accesses/min").read_text().strip() == str(2**32 - 1)
        assert (sc / "filters/0/damon_target_idx").read_text().strip() == str(i // 2)
    assert (schemes / "2/filters/0/damon_target_idx").read_text().strip() == "1"
    kernel.regions[20] = [(page(0), page(8), 5, 0)]
    assert b.scan_pass(VMAS).weight.all()
    assert not list((schemes / "3/tried_regions").iterdir())  # matched nothing
    a.close()
    b.close()


def test_shutdown_removes_our_kdamond_even_with_handles_left_open(kernel):
    a = tracker(kernel, 10)
    b = tracker(kernel, 20)
    damon.shutdown_all()  # etmemd exiting with a handle a stuck worker never closed
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"
    before = snapshot(kernel.kds)
    a.close()  # stale handles write nothing
    b.close()
    with pytest.raises(damon.ScanError):
        b.regions()
    assert snapshot(kernel.kds) == before


def test_shutdown_leaves_a_kdamond_that_is_not_ours_any_more(kernel):
    a = tracker(kernel, 10)
    (kernel.kd() / "pid").write_text("888\n")  # someone else's thread now
    before = snapshot(kernel.kds)
    damon.shutdown_all()
    assert snapshot(kernel.kds) == before
    a.close()


# -- a kdamond left behind by a killed etmemd (damon_record) -----------------------------------


def fake_stat(kernel: FakeDamon, pid: int, start: int) -> None:
    """/proc/PID/stat with a start time (field 22), which tells a reused pid apart."""
    d = kernel.proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(f"{pid} (etmemd) S {' '.join(['1'] * 18)} {start}\n")


@pytest.fixture
def leftover(kernel):
    """A kdamond watching pid 10, made by 'this process' which then died without removing it
    (a SIGKILLed etmemd): its monitor is forgotten, and our pid now belongs to another start."""
    (kernel.proc / "sys/kernel/random").mkdir(parents=True)
    (kernel.proc / "sys/kernel/random/boot_id").write_text("boot-1\n")
    fake_stat(kernel, os.getpid(), 100)
    tracker(kernel, 10)
    record = damon_record.record_path(kernel.kds)
    assert damon_record.read(record).targets == (10,)
    damon._monitors.clear()  # the process is gone: nothing of it runs its teardown
    fake_stat(kernel, os.getpid(), 200)
    return record


def test_a_kdamond_left_by_a_dead_maker_is_taken_back(kernel, leftover):
    kernel.regions[20] = [(page(0), page(8), 5, 0)]
    b = tracker(kernel, 20)
    assert kernel._pids() == [20] and kernel.starts == 2
    assert b.scan_pass(VMAS).weight.all()
    assert damon_record.read(leftover).targets == (20,)
    b.close()
    assert not leftover.exists()
    assert (kernel.kds / "nr_kdamonds").read_text().strip() == "0"


def test_a_kdamond_whose_maker_still_runs_is_left_alone(kernel, leftover):
    fake_stat(kernel, os.getpid(), 100)  # the same start time: the maker is alive
    before = snapshot(kernel.kds)
    with pytest.raises(DamonBusy, match=f"process {os.getpid()}, which made it, still runs"):
        tracker(kernel, 20)
    assert snapshot(kernel.kds) == before and leftover.exists()


def test_a_recorded_kdamond_changed_since_is_left_alone(kernel, leftover):
    (kernel.ctx() / "targets/0/pid_target").write_text("999\n")  # someone else's change
    before = snapshot(kernel.kds)
    with pytest.raises(DamonBusy, match="changed since"):
        tracker(kernel, 20)
    assert snapshot(kernel.kds) == before
    assert not leftover.exists()  # its maker is dead and it describes nothing now


def test_a_record_others_could_have_written_is_not_trusted(kernel, leftover):
    leftover.parent.chmod(0o777)
    before = snapshot(kernel.kds)
    with pytest.raises(DamonBusy):
        tracker(kernel, 20)
    assert snapshot(kernel.kds) == before
    leftover.parent.chmod(0o700)
    leftover.chmod(0o666)
    with pytest.raises(DamonBusy):
        tracker(kernel, 20)
    assert snapshot(kernel.kds) == before


def test_a_record_from_before_a_reboot_names_a_dead_maker(kernel, leftover):
    fake_stat(kernel, os.getpid(), 100)
    (kernel.proc / "sys/kernel/random/boot_id").write_text("boot-2\n")
    assert not damon_record.maker_alive(damon_record.read(leftover), kernel.proc)


def test_the_record_follows_the_run_dir_of_the_moment(kernel, tmp_path, monkeypatch):
    # monitors live as long as the process; the run dir is read at each use
    tracker(kernel, 10).close()
    monkeypatch.setenv("ETMEM_RUN_DIR", str(tmp_path / "later"))
    t = tracker(kernel, 20)
    assert damon_record.read(damon_record.record_path(kernel.kds)).targets == (20,)
    assert str(damon_record.record_path(kernel.kds)).startswith(str(tmp_path / "later"))
    t.close()
