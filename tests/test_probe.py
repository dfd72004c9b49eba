"""Capability probe: every verdict on fake trees, and this machine's real verdicts."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from etmem_scan import probe as probe_mod
from etmem_scan.probe import (
    NothingUsable,
    best_actuator,
    best_tracker,
    parse_node_list,
    probe,
)
from etmem_scan.procfs import read_meminfo
from etmem_sdk.testing import swap_on


def _w(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def fake_machine(
    root: Path,
    *,
    swap_kb: int = 0,
    nodes: str = "0",
    openeuler: bool = False,
    page_idle: bool = False,
    clear_refs: bool = True,
    damon: str | None = None,  # None: no DAMON sysfs; "free", "busy", "configured", "paddr"
    config: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    proc, sys_ = root / "proc", root / "sys"
    _w(proc / "meminfo", f"MemTotal: 1000000 kB\nMemFree: 900000 kB\nSwapTotal: {swap_kb} kB\n")
    _w(proc / "sys/kernel/osrelease", "6.6.0-fake\n")
    _w(proc / "pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    if clear_refs:
        _w(proc / "self/clear_refs", "")
    if openeuler:
        _w(proc / "self/idle_pages", "")
        _w(proc / "self/swap_pages", "")
    if config is not None:
        (proc / "config.gz").write_bytes(
            gzip.compress("".join(f"{k}={v}\n" for k, v in config.items()).encode())
        )
    _w(sys_ / "devices/system/node/online", nodes + "\n")
    _w(sys_ / "kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    if page_idle:
        _w(sys_ / "kernel/mm/page_idle/bitmap", "")
    if damon is not None:
        kds = sys_ / "kernel/mm/damon/admin/kdamonds"
        _w(kds / "nr_kdamonds", "0\n" if damon == "free" else "1\n")
        if damon != "free":
            _w(kds / "0/state", "on\n" if damon in ("busy", "paddr") else "off\n")
            ops = "paddr\n" if damon == "paddr" else "vaddr fvaddr paddr\n"
            _w(kds / "0/contexts/0/avail_operations", ops)
    _w(sys_ / "fs/cgroup/cgroup.controllers", "cpu io memory pids\n")
    return proc, sys_


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_openeuler_machine_prefers_idle_pages_and_swap_pages(tmp_path):
    caps = probe(*fake_machine(tmp_path, swap_kb=1024, openeuler=True, nodes="0-1"))
    assert caps.usable("tracker.idle_pages") and caps.usable("actuator.swap_pages")
    assert best_tracker(caps) == "idle_pages"
    assert best_actuator(caps, "swap") == "swap_pages"
    assert best_actuator(caps, "migrate") == "migrate"
    assert caps.facts["numa_nodes"] == [0, 1]
    assert caps.facts["kernel"] == "6.6.0-fake"
    assert caps.facts["cgroup2_memory_reclaim"] is True


def test_stock_kernel_without_swap(tmp_path):
    caps = probe(*fake_machine(tmp_path, config={"CONFIG_IDLE_PAGE_TRACKING": "n"}))
    t, a = caps.trackers, caps.actuators
    assert "etmem_scan kernel module not loaded" in t["idle_pages"].reason
    assert "CONFIG_IDLE_PAGE_TRACKING" in t["page_idle"].reason
    assert t["refs"].usable and "per-VMA" in t["refs"].note
    assert "no DAMON" in t["damon"].reason
    assert "etmem_swap kernel module not loaded" in a["swap_pages"].reason
    assert not a["pageout"].usable and "no swap" in a["pageout"].reason
    assert a["cold"].usable
    assert "one NUMA node" in a["migrate"].reason
    assert not t["probe"].usable and "no swap configured" in t["probe"].reason
    assert best_tracker(caps) == "refs"
    with pytest.raises(NothingUsable, match="pageout: no swap"):
        best_actuator(caps, "swap")
    assert caps.to_json()["defaults"] == {
        "tracker": "refs",
        "migrate_tracker": "refs",
        "hugetlb_tracker": None,
        "swap": None,
        "migrate": None,
    }
    assert caps.to_json()["trackers"]["refs"]["granularity"] == "mapping"


def test_stock_kernel_with_swap_sees_pages_through_the_probe(tmp_path):
    caps = probe(*fake_machine(tmp_path, swap_kb=4096))
    assert (
        caps.trackers["probe"].usable and "watches which come back" in caps.trackers["probe"].note
    )
    assert best_tracker(caps) == "probe"
    # a migrating engine never gets the probe (it swaps); hugetlb needs idle_pages or damon
    assert best_tracker(caps, "migrate") == "refs"
    assert best_tracker(caps, "cold") == "refs"
    with pytest.raises(NothingUsable, match="refs: refs does not see hugetlb accesses"):
        best_tracker(caps, "migrate", hugetlb=True)
    assert list(caps.trackers) == ["idle_pages", "page_idle", "damon", "probe", "refs"]
    doc = caps.to_json()["trackers"]
    assert {k: v["granularity"] for k, v in doc.items()} == {
        "idle_pages": "page",
        "page_idle": "page",
        "damon": "region",
        "probe": "page",
        "refs": "mapping",
    }


def test_stock_kernel_with_damon_picks_damon_for_hugetlb(tmp_path):
    caps = probe(*fake_machine(tmp_path, swap_kb=4096, damon="free"))
    assert best_tracker(caps, "migrate", hugetlb=True) == "damon"
    assert best_tracker(caps, "migrate") == "damon"
    assert best_tracker(caps, "cold") == "damon"


def test_swap_prefers_the_page_exact_probe_to_damon_regions(tmp_path):
    # DAMON's regions cannot split a page interleave; with swap on, slide gets the probe
    caps = probe(*fake_machine(tmp_path, swap_kb=4096, damon="free"))
    assert best_tracker(caps) == "probe"
    no_swap = probe(*fake_machine(tmp_path / "noswap", swap_kb=0, damon="free"))
    assert best_tracker(no_swap) == "damon"


def test_tracker_unfit_says_why():
    assert "cslide" in probe_mod.tracker_unfit("probe", "migrate")
    assert probe_mod.tracker_unfit("probe", "swap") == ""
    assert probe_mod.tracker_unfit("damon", "migrate", hugetlb=True) == ""
    with pytest.raises(ValueError, match="unknown purpose"):
        probe_mod.tracker_unfit("refs", "eat")


def test_openeuler_module_without_swap(tmp_path):
    caps = probe(*fake_machine(tmp_path, openeuler=True))
    assert "no swap" in caps.actuators["swap_pages"].reason


def test_page_idle_beats_refs_and_swap_makes_pageout_usable(tmp_path):
    caps = probe(*fake_machine(tmp_path, swap_kb=4096, page_idle=True))
    assert best_tracker(caps) == "page_idle"
    assert best_actuator(caps, "swap") == "pageout"


def test_no_tracker_at_all(tmp_path):
    caps = probe(*fake_machine(tmp_path, clear_refs=False))
    assert "CONFIG_PROC_PAGE_MONITOR" in caps.trackers["refs"].reason
    with pytest.raises(NothingUsable, match="no usable page tracker"):
        best_tracker(caps)


@pytest.mark.parametrize(
    ("damon", "usable", "words"),
    [
        ("free", True, []),
        ("busy", False, ["busy", "kdamond 0 is running"]),
        ("configured", False, ["configured by someone else"]),
        ("paddr", False, ["no vaddr", "paddr", "busy"]),
    ],
)
def test_damon_verdicts_read_only(tmp_path, damon, usable, words):
    proc, sys_ = fake_machine(tmp_path, damon=damon)
    before = snapshot(sys_)
    caps = probe(proc, sys_)
    v = caps.trackers["damon"]
    assert v.usable is usable
    for w in words:
        assert w in v.reason
    assert snapshot(sys_) == before  # the probe never writes DAMON sysfs
    # a free DAMON (region granularity) beats refs (mapping granularity)
    assert best_tracker(caps) == ("damon" if usable else "refs")


def test_damon_vaddr_from_kernel_config_when_no_context_exists(tmp_path):
    cfg = {"CONFIG_DAMON": "y", "CONFIG_DAMON_SYSFS": "y", "CONFIG_DAMON_PADDR": "y"}
    caps = probe(*fake_machine(tmp_path, damon="free", config=cfg))
    assert "CONFIG_DAMON_VADDR" in caps.trackers["damon"].reason


def test_missing_syscalls(tmp_path, monkeypatch):
    monkeypatch.setattr(probe_mod, "_syscall_works", lambda name: (False, f"no {name}(2)"))
    caps = probe(*fake_machine(tmp_path, swap_kb=1, nodes="0-3"))
    assert caps.actuators["pageout"].reason == "no process_madvise(2)"
    assert caps.actuators["migrate"].reason == "no move_pages(2)"


def test_parse_node_list():
    assert parse_node_list("0\n") == [0]
    assert parse_node_list("0-2,4,6-7") == [0, 1, 2, 4, 6, 7]


# ---------------------------------------------------------------- this machine, for real


def test_this_machines_verdicts():
    swap_before = read_meminfo()["SwapTotal"]
    caps = probe()
    swap_after = read_meminfo()["SwapTotal"]
    t, a = caps.trackers, caps.actuators
    assert not t["idle_pages"].usable  # no openEuler modules here
    assert not a["swap_pages"].usable
    assert not t["page_idle"].usable and "CONFIG_IDLE_PAGE_TRACKING" in t["page_idle"].reason
    assert t["refs"].usable
    assert not t["damon"].usable and "vaddr" in t["damon"].reason
    assert a["cold"].usable
    assert caps.facts["numa_nodes"] == [0]
    assert not a["migrate"].usable and "one NUMA node" in a["migrate"].reason
    assert caps.facts["psi"] is True
    assert caps.facts["cgroup2_memory_reclaim"] is False
    assert caps.facts["thp"] == "madvise"
    if swap_before == swap_after:  # another test may switch swap on or off meanwhile
        assert a["pageout"].usable is (swap_before > 0)
        assert t["probe"].usable is (swap_before > 0)
        assert best_tracker(caps) == ("probe" if swap_before else "refs")


@pytest.mark.swap
@pytest.mark.root
def test_this_machine_with_swap_uses_refs_and_pageout():
    with swap_on(64):
        caps = probe()
        assert caps.actuators["pageout"].usable
        assert caps.facts["swap_total_kb"] > 0
        assert best_actuator(caps, "swap") == "pageout"
