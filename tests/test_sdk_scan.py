"""etmem_sdk.scan: the policy authors' facade over etmem_scan (defaults, choosing, page arrays)."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_sdk import EngineError, TargetGone, scan
from etmem_sdk.testing import FakeProc, spawn_workload

MIB = 1 << 20


def caps(trackers: dict[str, bool], actuators: dict[str, bool]) -> scan.Capabilities:
    def v(ok: bool, name: str) -> scan.Verdict:
        return scan.Verdict(True) if ok else scan.Verdict(False, f"{name} missing here")

    return scan.Capabilities(
        trackers={k: v(ok, k) for k, ok in trackers.items()},
        actuators={k: v(ok, k) for k, ok in actuators.items()},
    )


MACHINE = caps(
    {"idle_pages": False, "page_idle": False, "refs": True, "damon": False},
    {"swap_pages": False, "pageout": True, "cold": True, "migrate": False},
)


def test_defaults_change_for_a_block_and_come_back():
    before = scan.defaults()
    with scan.using_defaults(tracker="refs", proc_root="/x") as d:
        assert d.tracker == "refs" and d.proc_root == "/x" and d.actuator == before.actuator
        assert scan.defaults() is d
    assert scan.defaults() == before
    previous = scan.set_defaults(actuator="cold")
    try:
        assert previous == before and scan.defaults().actuator == "cold"
    finally:
        scan.set_defaults(actuator=previous.actuator)
    with pytest.raises(TypeError):
        scan.set_defaults(colour="blue")


def test_choose_prefers_config_then_daemon_default_then_probe():
    assert scan.choose_tracker(caps=MACHINE) == "refs"  # the probe's best
    assert scan.choose_actuator(caps=MACHINE) == "pageout"
    assert scan.choose_actuator(purpose="cold", caps=MACHINE) == "cold"
    with scan.using_defaults(actuator="cold"):
        assert scan.choose_actuator(caps=MACHINE) == "cold"  # daemon default beats the probe
        assert scan.choose_actuator("pageout", caps=MACHINE) == "pageout"  # config beats both


def test_choose_names_the_source_and_the_reason():
    with pytest.raises(EngineError, match=r"tracker idle_pages \(from the task's config\) is not "
                       r"usable here: idle_pages missing here"):  # fmt: skip
        scan.choose_tracker("idle_pages", caps=MACHINE)
    with scan.using_defaults(actuator="swap_pages"):
        with pytest.raises(EngineError, match=r"from the daemon's defaults.*swap_pages missing"):
            scan.choose_actuator(caps=MACHINE)
    with pytest.raises(EngineError, match="unknown"):
        scan.choose_tracker("psychic", caps=MACHINE)
    nothing = caps({"refs": False}, {"pageout": False, "swap_pages": False})
    with pytest.raises(scan.NothingUsable, match="refs: refs missing here"):
        scan.choose_tracker(caps=nothing)


def test_registered_mechanisms_are_used_without_the_probe(tmp_path):
    made = []

    class Null(scan.Actuator):
        def __init__(self, **kw):
            made.append(kw)

    scan.register_actuator("null", Null)
    try:
        nothing = caps({}, {})
        assert scan.choose_actuator("null", caps=nothing) == "null"
        with scan.using_defaults(proc_root=str(tmp_path)):
            assert isinstance(scan.open_actuator("null"), Null)
        assert made == [{"proc_root": str(tmp_path), "sys_root": "/sys"}]
    finally:
        scan.unregister("null")
    with pytest.raises(ValueError, match="unknown actuator"):
        scan.open_actuator("null")


def test_carry_lines_up_old_values_with_new_pages():
    old_addr = np.array([0x1000, 0x3000, 0x5000], np.uint64)
    old = np.array([7, 8, 9], np.uint16)
    new_addr = np.array([0x0000, 0x3000, 0x4000, 0x5000, 0x9000], np.uint64)
    got = scan.carry(old_addr, old, new_addr)
    assert got.dtype == np.uint16 and got.tolist() == [0, 8, 0, 9, 0]
    assert scan.carry(old_addr[:0], old[:0], new_addr, fill=3).tolist() == [3] * 5
    assert scan.carry(old_addr, old, new_addr[:0]).size == 0


def test_page_bytes():
    assert scan.page_bytes(np.array([scan.PTE, scan.PMD, scan.PTE], np.uint8)).tolist() == [
        scan.PAGE_SIZE,
        scan.PAGE_SIZE * scan.PAGE_SIZE // 8,
        scan.PAGE_SIZE,
    ]


class ScriptedTracker(scan.Tracker):
    """Reports the given passes in turn."""

    def __init__(self, passes):
        self.passes = list(passes)

    def scan_pass(self, vmas):
        addr, weight = self.passes.pop(0)
        a = np.array(addr, np.uint64)
        return scan.PassRefs(a, np.zeros(len(a), np.uint8), np.array(weight, np.uint8))


def test_sample_accumulates_passes_and_sleeps_between_them_only():
    slept = []
    tracker = ScriptedTracker(
        [([0x2000, 0x1000], [1, 0]), ([0x1000, 0x2000], [1, 1]), ([0x3000], [0])]
    )
    refs = scan.sample(tracker, [], passes=3, sleep=slept.append, interval=2)
    assert refs.addr.tolist() == [0x1000, 0x2000, 0x3000] and refs.count.tolist() == [1, 2, 0]
    assert slept == [2, 2]


def test_readers_follow_the_default_roots(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    p = tree.add_process(vmas=[(0x10000000, MIB), (0x20000000, 2 * MIB)])
    with scan.using_defaults(proc_root=tree.proc_root, sys_root=str(tree.sys_root)):
        assert [(v.start, v.end) for v in scan.read_vmas(p.pid)] == [
            (0x10000000, 0x10000000 + MIB),
            (0x20000000, 0x20000000 + 2 * MIB),
        ]
        assert scan.read_status(p.pid)["VmRSS"] == 3 * 1024
        assert scan.read_meminfo()["SwapTotal"] == tree.swap_total_kb
        assert len(scan.present_pages(p.pid, scan.read_vmas(p.pid))) == 3 * MIB // scan.PAGE_SIZE
        found = scan.capabilities()
        assert found.usable("tracker.refs") and not found.usable("tracker.idle_pages")
        with scan.open_tracker("refs", p.pid) as t:
            assert t.proc_root == tree.proc_root
    assert scan.defaults().proc_root == "/proc"
    tree.remove_process(p.pid)
    with pytest.raises(TargetGone):
        scan.read_status(p.pid, proc_root=tree.proc_root)


def test_live_child_vmas_and_pages():
    with spawn_workload(hot_mib=2, cold_mib=4) as w:
        spans = {(v.start, v.end) for v in scan.read_vmas(w.pid, proc_root="/proc")}
        assert w.hot in spans and w.cold in spans
        assert w.resident("cold") == 4 * MIB // scan.PAGE_SIZE
