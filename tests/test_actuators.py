"""Actuators on the real kernel: process_madvise pageout to a real swap file, move_pages."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import actuators
from etmem_scan.actuators import (
    ActuatorError,
    Madvise,
    Migrate,
    NoSwap,
    make_actuator,
    merge_ranges,
    move_pages,
    query_nodes,
)
from etmem_scan.pagemap import PAGE_SIZE, present_pages
from etmem_scan.procfs import read_status
from etmem_sdk import TargetGone
from etmem_sdk.testing import Workload, spawn_workload


def pages(r: tuple[int, int]) -> np.ndarray:
    return np.arange(r[0], r[1], PAGE_SIZE, dtype=np.uint64)


def test_merge_ranges_joins_adjacent_and_overlapping_pages():
    a = np.array([0x3000, 0x0, 0x1000, 0x10000, 0x5000, 0x4000], dtype=np.uint64)
    assert merge_ranges(a).tolist() == [[0, 0x2000], [0x3000, 0x3000], [0x10000, 0x1000]]
    # a 2 MiB page swallows the 4 KiB pages inside it
    b = np.array([0x200000, 0x201000, 0x600000], dtype=np.uint64)
    sizes = np.array([0x200000, 0x1000, 0x1000], dtype=np.uint64)
    assert merge_ranges(b, sizes).tolist() == [[0x200000, 0x200000], [0x600000, 0x1000]]
    assert merge_ranges(np.zeros(0, np.uint64)).shape == (0, 2)


def _fake_meminfo(tmp_path, swap_kb: int):
    (tmp_path / "meminfo").write_text(
        f"MemTotal:       24000000 kB\nMemFree:        20000000 kB\nSwapTotal:      {swap_kb} kB\n"
    )
    return tmp_path


def test_pageout_refuses_without_swap(tmp_path, etmem_workload):
    root = _fake_meminfo(tmp_path, 0)
    before = present_pages(etmem_workload.pid, [etmem_workload.cold])
    with pytest.raises(NoSwap, match="no swap"):
        Madvise(actuators.MADV_PAGEOUT, proc_root=root).apply(
            etmem_workload.pid, pages(etmem_workload.cold)
        )
    assert len(present_pages(etmem_workload.pid, [etmem_workload.cold])) == len(before)
    # MADV_COLD only deactivates; it needs no swap
    cold = Madvise(actuators.MADV_COLD, proc_root=root)
    assert (
        cold.apply(etmem_workload.pid, pages(etmem_workload.cold))
        == etmem_workload.cold[1] - etmem_workload.cold[0]
    )


@pytest.mark.swap
@pytest.mark.root
def test_pageout_moves_cold_mapping_to_swap_and_keeps_hot_resident(etmem_swapped_workload):
    w: Workload = etmem_swapped_workload
    cold_len = w.cold[1] - w.cold[0]
    swap_before = read_status(w.pid)["VmSwap"]
    assert len(present_pages(w.pid, [w.cold])) == cold_len // PAGE_SIZE

    # hand over the pages one by one, out of order: the actuator must merge them itself
    addrs = pages(w.cold)[::-1].copy()
    moved = make_actuator("pageout").apply(w.pid, addrs)

    assert moved == cold_len
    assert len(present_pages(w.pid, [w.cold])) == 0
    assert read_status(w.pid)["VmSwap"] - swap_before >= cold_len // 1024 * 9 // 10
    assert len(present_pages(w.pid, [w.hot])) == (w.hot[1] - w.hot[0]) // PAGE_SIZE


@pytest.mark.swap
@pytest.mark.root
def test_pageout_batches_more_than_iov_max_ranges(etmem_swapped_workload):
    w: Workload = etmem_swapped_workload
    every_other = pages(w.cold)[::2]  # 4096 separate ranges -> 4 calls of 1024 iovecs
    assert len(merge_ranges(every_other)) > actuators.IOV_MAX
    moved = make_actuator("pageout").apply(w.pid, every_other)
    assert moved == len(every_other) * PAGE_SIZE
    left = present_pages(w.pid, [w.cold])
    assert len(left) == len(every_other)
    assert np.array_equal(left, pages(w.cold)[1::2])


def test_process_madvise_resumes_after_a_partial_return(monkeypatch):
    # The kernel handles at most 2 GiB - 4 KiB per call; simulate it stopping mid-range.
    calls = []

    def fake_call(name, pidfd, ptr, n, advice, flags):
        iov = np.ctypeslib.as_array(
            (actuators.ctypes.c_uint64 * (2 * n)).from_address(ptr)
        ).reshape(n, 2)
        calls.append(iov.copy())
        return min(int(iov[:, 1].sum()), 3 * PAGE_SIZE)

    monkeypatch.setattr(actuators, "_call", fake_call)
    ranges = np.array([[0x10000, 2 * PAGE_SIZE], [0x20000, 4 * PAGE_SIZE]], dtype=np.uint64)
    assert actuators.process_madvise(-1, ranges, actuators.MADV_PAGEOUT) == 6 * PAGE_SIZE
    assert [c.tolist() for c in calls] == [
        [[0x10000, 2 * PAGE_SIZE], [0x20000, 4 * PAGE_SIZE]],
        [[0x21000, 3 * PAGE_SIZE]],
    ]


def test_process_madvise_skips_a_range_the_kernel_refuses(monkeypatch):
    def fake_call(name, pidfd, ptr, n, advice, flags):
        iov = np.ctypeslib.as_array((actuators.ctypes.c_uint64 * (2 * n)).from_address(ptr))
        if iov[0] == 0x10000:  # unmapped meanwhile
            raise OSError(errno.ENOMEM, "process_madvise")
        return int(iov.reshape(n, 2)[:, 1].sum())

    monkeypatch.setattr(actuators, "_call", fake_call)
    ranges = np.array([[0x10000, PAGE_SIZE], [0x20000, PAGE_SIZE]], dtype=np.uint64)
    assert actuators.process_madvise(-1, ranges, actuators.MADV_PAGEOUT) == PAGE_SIZE


def test_pageout_of_a_vanished_process_is_target_gone(tmp_path):
    root = _fake_meminfo(tmp_path, 1024)
    with spawn_workload(hot_mib=1, cold_mib=1) as w:
        cold = pages(w.cold)
        w.kill()
        with pytest.raises(TargetGone):
            Madvise(proc_root=root).apply(w.pid, cold)
        with pytest.raises(TargetGone):
            query_nodes(w.pid, cold)


def test_move_pages_query_reports_node_0_and_absent_pages(etmem_workload):
    hot = pages(etmem_workload.hot)
    unmapped = np.uint64(etmem_workload.hot[1])  # the guard page after hot: mapped PROT_NONE
    status = query_nodes(etmem_workload.pid, np.append(hot, [unmapped, np.uint64(PAGE_SIZE)]))
    assert status.dtype == np.int32
    assert (status[: len(hot)] == 0).all()
    assert status[-2] in (-errno.ENOENT, -errno.EFAULT)
    assert status[-1] == -errno.EFAULT  # address 4096 is never mapped


def test_move_pages_moves_to_node_0_in_batches(etmem_workload):
    cold = pages(etmem_workload.cold)
    status = Migrate(node=0, batch=1000).apply(etmem_workload.pid, cold)
    assert status.shape == cold.shape
    assert (status == 0).all()
    assert (query_nodes(etmem_workload.pid, cold, batch=777) == 0).all()


def test_move_pages_to_a_node_that_is_not_online_is_an_error(etmem_workload):
    online = Path("/sys/devices/system/node/online").read_text().strip()
    if online != "0":
        pytest.skip(f"needs a single-node machine, nodes online: {online}")
    with pytest.raises(ActuatorError, match="not online"):
        move_pages(etmem_workload.pid, pages(etmem_workload.hot)[:4], 1)


def test_make_actuator_names():
    assert make_actuator("pageout").advice == actuators.MADV_PAGEOUT
    assert make_actuator("cold").advice == actuators.MADV_COLD
    assert isinstance(make_actuator("migrate", node=0), Migrate)
    with pytest.raises(ValueError, match="unknown actuator"):
        make_actuator("teleport")


def test_pageout_of_pid_that_never_existed():
    with pytest.raises(TargetGone):
        Madvise(require_swap=False).apply(2**22 + 12345, np.zeros(1, np.uint64))
    assert os.path.exists("/proc/self")


def test_make_actuator_builds_swap_pages(tmp_path):
    from etmem_scan.swap_pages import SwapPages

    a = make_actuator("swap_pages", proc_root=tmp_path, sys_root=tmp_path)
    assert isinstance(a, SwapPages) and a.proc_root == tmp_path
