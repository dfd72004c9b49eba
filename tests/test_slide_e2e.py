"""slide end to end on the real kernel: a swap file, a workload with a hot and a cold mapping, a
real ``etmemd`` driven through the ``etmem`` client (obj add, project start/stop, showstats).

Order of teardown matters and is guaranteed by fixture nesting: etmemd is stopped first, then the
workload killed, then the swap file switched off and deleted (swapoff with a live workload would
read every swapped page back in).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from etmem_scan import pagemap, procfs
from etmem_sdk.testing import Workload, spawn_workload, swap_on
from etmemd_proc import EtmemdProc as ObjectStore
from etmemd_proc import wait_for

pytestmark = [pytest.mark.root, pytest.mark.swap]

HOT_MIB, COLD_MIB = 64, 128
DEADLINE = 30.0  # seconds for the cold mapping to leave RAM


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (swapon, process_madvise on another process)")


def slide_config(project: str, pid: int, *, project_keys: str = "", task_keys: str = "") -> str:
    """A slide object file: loop, interval and sleep at 1 second so tests take seconds."""
    return (
        f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n{project_keys}"
        f"[engine]\nname=slide\nproject={project}\n"
        f"[task]\nproject={project}\nengine=slide\nname=background\ntype=pid\nvalue={pid}\n"
        f"T=1\n{task_keys}"
    )


@pytest.fixture
def rig(tmp_path) -> Iterator[tuple[ObjectStore, Workload]]:
    """Swap on, a 64 MiB hot / 128 MiB cold workload, and an etmemd; torn down in that reverse
    order (etmemd, workload, swap)."""
    _need_root()
    with swap_on(512), spawn_workload(HOT_MIB, COLD_MIB) as w:
        d = ObjectStore(tmp_path)
        try:
            yield d, w
        finally:
            d.stop()
            w.kill()


def vm_swap_kb(pid: int) -> int:
    return procfs.read_status(pid).get("VmSwap", 0)


def showstats(d: ObjectStore, project: str) -> dict[str, int]:
    """The ``total`` row of ``etmem engine showstats`` as numbers."""
    out = d.etmem("engine", "showstats", "-n", project, "-e", "slide").stdout
    header = next(line for line in out.splitlines() if line.startswith("pid"))
    total = next(line for line in out.splitlines() if line.startswith("total"))
    return {k: int(float(v)) for k, v in zip(header.split()[1:], total.split()[1:], strict=True)}


def test_cold_mapping_swapped_hot_stays(rig):
    d, w = rig
    cold_kb = COLD_MIB << 10
    assert vm_swap_kb(w.pid) < cold_kb // 10  # starting point: nothing of it swapped
    d.add("e2e", slide_config("e2e", w.pid))
    d.etmem("project", "start", "-n", "e2e")

    assert wait_for(lambda: vm_swap_kb(w.pid) >= cold_kb * 9 // 10, DEADLINE), (
        f"VmSwap {vm_swap_kb(w.pid)} kB < 90 % of {cold_kb} kB\n{d.logtext()}"
    )
    # VmSwap also counts hot pages a probe has just paged out (they come straight back), so
    # judge the mappings page by page.
    cold_pages = (w.cold[1] - w.cold[0]) // os.sysconf("SC_PAGE_SIZE")
    assert wait_for(
        lambda: len(pagemap.present_pages(w.pid, [w.cold])) * 10 <= cold_pages, DEADLINE
    ), f"{len(pagemap.present_pages(w.pid, [w.cold]))}/{cold_pages} cold pages still resident"
    # A tracker that pages out itself (probe), or misjudges a region for a pass (damon under
    # TCG), may have some hot pages out for a moment: the workload's next touch brings them back.
    # What must hold is that they stay: >= 99 % resident again within a few seconds.
    hot_pages = (w.hot[1] - w.hot[0]) // os.sysconf("SC_PAGE_SIZE")
    assert wait_for(
        lambda: len(pagemap.present_pages(w.pid, [w.hot])) * 100 >= hot_pages * 99, 10.0
    ), f"only {len(pagemap.present_pages(w.pid, [w.hot]))}/{hot_pages} hot pages resident"
    assert w.proc.poll() is None, "the workload died"

    # A tracker that pages out itself (probe) judges its sample one cycle later.
    assert wait_for(lambda: showstats(d, "e2e")["cold_pages"] > 0, DEADLINE), d.logtext()
    stats = showstats(d, "e2e")
    assert stats["cycles"] >= 1 and stats["errors"] == 0
    # the same numbers reach `project show --json`, per task and per pid
    doc = json.loads(d.etmem("project", "show", "-n", "e2e", "--json").stdout)
    (task,) = doc[0]["engines"][0]["tasks"]
    # moved by the actuator, or by the probe tracker while it watched for refaults
    moved = task["stats"]["bytes_swapped"] + task["stats"]["probe_bytes_out"]
    assert moved >= (cold_kb * 9 // 10) * 1024
    assert task["stats"]["tracker"] and task["stats"]["running"] is True
    (tp,) = task["pids"]
    assert tp["pid"] == w.pid and tp["stats"]["cycles"] >= 1
    d.etmem("project", "stop", "-n", "e2e")


def test_project_stop_stops_swapping(rig):
    d, w = rig
    cold_kb = COLD_MIB << 10
    d.add("stop", slide_config("stop", w.pid))
    d.etmem("project", "start", "-n", "stop")
    assert wait_for(lambda: vm_swap_kb(w.pid) >= cold_kb * 9 // 10, DEADLINE), d.logtext()
    d.etmem("project", "stop", "-n", "stop")

    # Read the cold mapping back in through /proc/PID/mem: a running slide would swap it out
    # again within a few 1-second cycles; a stopped one must leave it in RAM.
    with open(f"/proc/{w.pid}/mem", "rb", buffering=0) as mem:
        mem.seek(w.cold[0])
        data = mem.read(w.cold[1] - w.cold[0])
    assert data[:1] == b"\x5a"
    back = vm_swap_kb(w.pid)
    assert back < cold_kb // 10, f"reading did not bring the cold mapping back ({back} kB)"
    time.sleep(5)
    assert vm_swap_kb(w.pid) < cold_kb // 10, "pages left RAM after project stop"
    assert w.proc.poll() is None


def _cycles_skipped(d: ObjectStore, project: str, n: int = 3) -> dict[str, int]:
    ok = wait_for(lambda: showstats(d, project)["cycles"] >= n, DEADLINE)
    assert ok, d.logtext()
    return showstats(d, project)


def test_sysmem_threshold_not_met_nothing_swapped(rig):
    d, w = rig
    # MemFree is far above 1 % of MemTotal here, so the gate never opens.
    meminfo = procfs.read_meminfo()
    assert meminfo["MemFree"] * 100 // meminfo["MemTotal"] >= 1
    d.add("sysmem", slide_config("sysmem", w.pid, project_keys="sysmem_threshold=1\n"))
    d.etmem("project", "start", "-n", "sysmem")
    stats = _cycles_skipped(d, "sysmem")
    assert stats["skipped"] == stats["cycles"] and stats["pages_scanned"] == 0
    assert vm_swap_kb(w.pid) < (COLD_MIB << 10) // 10
    d.etmem("project", "stop", "-n", "sysmem")


def test_swap_threshold_above_rss_nothing_swapped(rig):
    d, w = rig
    rss = procfs.read_status(w.pid)["VmRSS"]
    assert rss < 1 << 20  # the workload holds well under 1 GiB
    # sysmem_threshold=100 always opens the memory gate; swap_threshold=1g then keeps it shut.
    cfg = slide_config(
        "swapthr", w.pid, project_keys="sysmem_threshold=100\n", task_keys="swap_threshold=1g\n"
    )
    d.add("swapthr", cfg)
    d.etmem("project", "start", "-n", "swapthr")
    stats = _cycles_skipped(d, "swapthr")
    assert stats["skipped"] == stats["cycles"]
    assert vm_swap_kb(w.pid) < (COLD_MIB << 10) // 10
    d.etmem("project", "stop", "-n", "swapthr")


def test_second_scanner_of_same_pid_refused(rig):
    d, w = rig
    d.add("first", slide_config("first", w.pid))
    d.etmem("project", "start", "-n", "first")
    d.add("second", slide_config("second", w.pid))
    res = d.etmem("project", "start", "-n", "second", check=False)
    assert res.returncode != 0
    said = res.stdout + res.stderr + d.logtext()
    assert re.search(rf"pid {w.pid} is already scanned by task background of project first", said)
    d.etmem("project", "stop", "-n", "first")


def test_target_exiting_mid_cycle_is_quiet(rig):
    d, w = rig
    d.add("exit", slide_config("exit", w.pid).replace("loop=1\n", "loop=3\n"))
    d.etmem("project", "start", "-n", "exit")
    # A cycle is 3 passes with a 1 s sleep after each, then 1 s to the next one: 1.5 s after a
    # cycle ended, the next one is in the middle of its passes.
    assert wait_for(lambda: showstats(d, "exit")["cycles"] >= 1, DEADLINE), d.logtext()
    time.sleep(1.5)
    w.kill()
    time.sleep(4)
    assert d.proc.poll() is None, "etmemd died with its target"
    stats = showstats(d, "exit")
    assert stats["errors"] == 0, d.logtext()
    d.etmem("project", "stop", "-n", "exit")


# -- one mapping, hot and cold pages interleaved: the default tracker must see inside it --------

INTERLEAVE, INTERLEAVED_MIB = 4, 64  # every 4th page hot: 25 %


def _out_fractions(w: Workload) -> tuple[float, float]:
    """Fractions of the cold and of the hot pages that are not resident, page by page."""
    cold, hot = w.pages("cold"), w.pages("hot")
    return 1 - w.resident_of("cold") / len(cold), 1 - w.resident_of("hot") / len(hot)


@pytest.fixture
def interleaved() -> Iterator[Workload]:
    """Swap on and a 64 MiB mapping whose every 4th page is written continuously; the workload
    is killed before the swapoff."""
    _need_root()
    # highest priority: another test switching its swap off must not read our pages back
    with (
        swap_on(256, priority=32767),
        spawn_workload(interleave=INTERLEAVE, size_mib=INTERLEAVED_MIB) as w,
    ):
        try:
            yield w
        finally:
            w.kill()


def test_default_tracker_splits_an_interleaved_mapping_in_three_cycles(interleaved, etmem_engine):
    w = interleaved
    from etmem_sdk import scan

    assert scan.choose_tracker() == "probe", "with swap on, this machine's best is the probe"
    h = etmem_engine("slide")
    h.add(project={"sleep": 1}, tasks=[{"value": w.pid, "T": 1}])
    h.start()
    assert h.task().stats["tracker"] == "probe"
    h.tick(3)
    cold_out, hot_out = _out_fractions(w)
    stats = h.task().stats
    assert cold_out >= 0.95, f"only {cold_out:.1%} of the cold pages out; {stats}"
    assert hot_out <= 0.01, f"{hot_out:.1%} of the hot pages out; {stats}"
    assert stats["probe_pages"] > 0 and stats["errors"] == 0
    assert "probe:" in h.command("showstats")
    assert w.proc.poll() is None


def test_interleaved_mapping_through_etmemd(interleaved, tmp_path):
    w = interleaved
    d = ObjectStore(tmp_path)
    try:
        d.add("mix", slide_config("mix", w.pid))
        d.etmem("project", "start", "-n", "mix")
        assert wait_for(lambda: showstats(d, "mix")["cycles"] >= 3, DEADLINE), d.logtext()

        def split() -> bool:
            # hot pages probed by the latest pass are written again within 50 ms
            cold_out, hot_out = _out_fractions(w)
            return cold_out >= 0.95 and hot_out <= 0.01

        assert wait_for(split, 5.0), (_out_fractions(w), showstats(d, "mix"))
        out = d.etmem("engine", "showstats", "-n", "mix", "-e", "slide").stdout
        assert "tracker: probe" in out and "pages paged out to watch refaults" in out
        d.etmem("project", "stop", "-n", "mix")
    finally:
        d.stop()
