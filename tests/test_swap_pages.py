"""swap_pages actuator: whole lines in every write(), golden batch contents, swapcache ioctls."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import swap_pages as sp
from etmem_scan.actuators import ActuatorError
from etmem_sdk.errors import TargetGone


def golden_cold(golden: Path, name: str) -> tuple[bytes, np.ndarray]:
    text = (golden / "idle_pages" / name / "c_swap_pages.txt").read_bytes()
    addrs = np.array([int(x, 16) for x in text.split()], dtype=np.uint64)
    return text, addrs


def fake_proc(tmp_path: Path, pid: int = 77) -> Path:
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "swap_pages").write_bytes(b"")
    return tmp_path


def cold_cases(golden: Path) -> list[str]:
    cases = json.loads((golden / "idle_pages" / "manifest.json").read_text())["cases"]
    return [c["name"] for c in cases if (golden / "idle_pages" / c["name"] / "c_swap_pages.txt")
            .stat().st_size]  # fmt: skip


def test_batches_are_whole_lines_and_match_golden(golden: Path, tmp_path: Path) -> None:
    """Deliberate difference from etmemd_migrate.c: C's stdio stream issued writes of 1024/2048
    bytes that cut addresses in two (c_swap_writes.txt); we write one 200-line batch per
    write().  Joined, the writes are exactly the bytes C wrote, in the same (descending) order."""
    root = fake_proc(tmp_path)
    for name in cold_cases(golden):
        text, addrs = golden_cold(golden, name)
        writes: list[bytes] = []

        def write(fd: int, data, writes=writes) -> int:
            writes.append(bytes(data))
            return len(data)

        rng = np.random.default_rng(1)
        sp.SwapPages(root, write=write).apply(77, rng.permutation(addrs))  # order is ours to fix
        assert b"".join(writes) == text, name
        for w in writes:
            assert w.endswith(b"\n") and len(w.splitlines()) <= sp.SWAP_LIMIT
        assert [len(w.splitlines()) for w in writes[:-1]] == [200] * (len(writes) - 1)
        c_writes = [
            int(x) for x in (golden / "idle_pages" / name / "c_swap_writes.txt").read_text().split()
        ]
        if name == "swap_batches":
            # the original's second write ended inside an address; none of ours does
            cut = c_writes[0]
            assert text[cut - 1 : cut] != b"\n"


def test_apply_writes_the_file(golden: Path, tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    text, addrs = golden_cold(golden, "swap_batches")
    assert sp.make(proc_root=root).apply(77, addrs[::-1].copy()) is None
    assert (root / "77" / "swap_pages").read_bytes() == text


def test_empty_list_does_not_open(tmp_path: Path) -> None:
    # no such pid: opening would fail, so this proves the file is not touched
    sp.SwapPages(tmp_path).apply(99, np.empty(0, np.uint64))


def test_missing_process_and_missing_module(tmp_path: Path) -> None:
    with pytest.raises(TargetGone):
        sp.SwapPages(tmp_path).apply(99, np.array([0x1000], np.uint64))
    (tmp_path / "98").mkdir()
    with pytest.raises(ActuatorError, match="etmem_swap"):
        sp.SwapPages(tmp_path).apply(98, np.array([0x1000], np.uint64))


def test_short_write_mid_line_is_an_error(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    with pytest.raises(ActuatorError, match="mid-line"):
        sp.SwapPages(root, write=lambda fd, d: 3).apply(77, np.array([0x7F0000000000], np.uint64))


def test_short_write_at_line_end_continues(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    got: list[bytes] = []

    def write(fd: int, data) -> int:
        got.append(bytes(data[:15]))
        return 15

    a = np.array([0x7F0000000000, 0x7F0000001000], np.uint64)
    sp.SwapPages(root, write=write).apply(77, a)
    assert got == [b"0x7f0000001000\n", b"0x7f0000000000\n"]


def test_esrch_is_target_gone(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)

    def write(fd: int, data) -> int:
        raise ProcessLookupError(3, "No such process")

    with pytest.raises(TargetGone):
        sp.SwapPages(root, write=write).apply(77, np.array([0x1000], np.uint64))


def test_swapcache_ioctls(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    calls: list[tuple[int, int]] = []

    def ioctl(fd: int, req: int, arg: bytes) -> int:
        calls.append((req, struct.unpack("I", arg)[0]))
        return 0

    sp.set_swapcache_wmark(77, 30, 70, proc_root=root, ioctl=ioctl)
    sp.reclaim_swapcache_on(77, proc_root=root, ioctl=ioctl)
    sp.reclaim_swapcache_off(77, proc_root=root, ioctl=ioctl)
    assert calls == [(0x40047702, 30 | 70 << 8), (0x40047701, 0), (0x40047700, 0)]
    assert sp.wmark_arg(0, 100) == 0x6400
    for low, high in ((50, 40), (-1, 10), (10, 101)):
        with pytest.raises(ValueError):
            sp.wmark_arg(low, high)


def test_ioctl_refused_is_actuator_error(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)

    def ioctl(fd: int, req: int, arg: bytes) -> int:
        raise OSError(1, "Operation not permitted")

    with pytest.raises(ActuatorError, match="0x40047701"):
        sp.reclaim_swapcache_on(77, proc_root=root, ioctl=ioctl)
