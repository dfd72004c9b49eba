"""libetmemd_scan.so (scan_lib/c): the original scan API, on fake /proc trees and this kernel."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

import pytest
from etmem_thirdparty_so import abi, loader
from etmem_thirdparty_so.abi import CallFailed
from thirdparty_build import build_scan_lib

PAGE = 4096


@pytest.fixture
def scan():
    """The library, initialised, reading /proc again afterwards."""
    build_scan_lib()
    lib = loader.scan_lib()
    lib.etmemd_scan_exit()
    lib.etmemd_scan_init()
    yield lib
    lib.etmemd_scan_set_proc_root(b"/proc")


@pytest.fixture
def fake_proc(scan, tmp_path):
    root = tmp_path / "proc"
    (root / "77").mkdir(parents=True)
    scan.etmemd_scan_set_proc_root(str(root).encode())
    return root / "77"


def vma_list(vmas) -> list[abi.CVma]:
    out = []
    node = vmas.contents.vma_list
    while node:
        out.append(node.contents)
        node = node.contents.next
    assert len(out) == vmas.contents.vma_cnt
    return out


def get_vmas(scan, pid: bytes, flags: list[bytes] | None = None, anon_only: bool = False):
    flags = flags or []
    arr = (ctypes.c_char_p * max(len(flags), 1))(*flags)
    vmas = scan.etmemd_get_vmas(pid, arr, len(flags), anon_only)
    try:
        return [
            (v.start, v.end, tuple(v.stat), v.offset, v.inode, v.path, v.major, v.minor)
            for v in vma_list(vmas)
        ]
    finally:
        scan.etmemd_free_vmas(vmas)


LONG = "/" + "p" * 300
MAPS = (
    "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n"
    "00651000-00652000 rw-p 00051000 08:02 173521      /usr/bin/dbus-daemon\n"
    "00e03000-00e24000 rw-p 00000000 00:00 0           [heap]\n"
    "7f0000000000-7f0000200000 rw-s 00000000 00:05 1234        /dev/zero (deleted)\n"
    f"7f0000200000-7f0000400000 r--p 00000000 fd:01 99  {LONG}\n"
    "7f0000400000-7f0000600000 rw-p 00000000 00:00 0\n"
)


def test_vmas_from_maps(fake_proc, scan):
    (fake_proc / "maps").write_text(MAPS)
    every = get_vmas(scan, b"77")
    assert len(every) == 6
    assert every[0] == (
        0x400000,
        0x452000,
        (True, False, True, False),
        0,
        173521,
        b"/usr/bin/dbus-daemon\n",  # the newline stays, as in the original
        b"08",
        b"02",
    )
    assert every[3][2] == (True, True, False, True) and every[3][5] == b"/dev/zero"
    assert every[4][5] == b""  # too long for path[256]: left empty, VMA kept
    assert every[5][5] == b"" and every[5][4] == 0
    anon = get_vmas(scan, b"77", anon_only=True)
    # not shared, not executable, and anonymous (inode 0) or writable
    assert [v[0] for v in anon] == [0x651000, 0xE03000, 0x7F0000400000]


def test_vmas_with_vmflags_from_smaps(fake_proc, scan):
    (fake_proc / "smaps").write_text(
        "00400000-00452000 rw-p 00000000 00:00 0\n"
        "Size:                328 kB\n"
        "VmFlags: rd wr mr mw me ac sd ht\n"
        "00600000-00652000 rw-p 00000000 00:00 0\n"
        "Size:                328 kB\n"
        "VmFlags: rd wr mr mw me ac sd\n"
    )
    assert [v[0] for v in get_vmas(scan, b"77", [b"ht"])] == [0x400000]
    assert [v[0] for v in get_vmas(scan, b"77", [b"rd", b"sd"])] == [0x400000, 0x600000]


@pytest.mark.parametrize("flag", [b"h", b"htt", b"h ", None])
def test_vmflags_must_be_two_letters(scan, flag):
    arr = (ctypes.c_char_p * 1)(flag)
    with pytest.raises(CallFailed):
        scan.etmemd_get_vmas(b"1", arr, 1, False)


@pytest.mark.parametrize("pid", [b"0", b"1-", b"", None, b"../1"])
def test_bad_pids(scan, pid):
    with pytest.raises(CallFailed):
        scan.etmemd_get_vmas(pid, None, 0, False)


def test_malformed_maps_line_fails(fake_proc, scan):
    (fake_proc / "maps").write_text("garbage line\n")
    with pytest.raises(CallFailed):
        scan.etmemd_get_vmas(b"77", None, 0, False)


def test_vmas_of_a_live_process(scan):
    pid = str(os.getpid()).encode()
    lines = Path("/proc/self/maps").read_text().splitlines()
    assert abs(len(get_vmas(scan, pid)) - len(lines)) <= 2  # our own process keeps mapping


def test_vmflags_on_a_live_process(scan):
    pid = str(os.getpid()).encode()
    smaps = Path("/proc/self/smaps").read_text().splitlines()
    flagged = [line for line in smaps if line.startswith("VmFlags:") and " ex" in line]
    assert flagged  # our own text segments are executable
    assert abs(len(get_vmas(scan, pid, [b"ex"])) - len(flagged)) <= 2


def refs_list(head) -> list[tuple[int, int, int]]:
    out = []
    node = head
    while node:
        out.append((node.contents.addr, node.contents.count, node.contents.type))
        node = node.contents.next
    return out


def idle_pages(path: Path, chunks: dict[int, bytes]) -> None:
    """A sparse file whose bytes at offset A are what the kernel would return for address A."""
    with open(path, "wb") as f:
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)


def hva(addr: int) -> bytes:
    return b"\xa0" + struct.pack(">Q", addr)


def scan_pass(scan, refs, flags: int = 0) -> None:
    vmas = scan.etmemd_get_vmas(b"77", None, 0, True)
    try:
        scan.etmemd_get_page_refs(vmas, b"77", ctypes.byref(refs), flags)
    finally:
        scan.etmemd_free_vmas(vmas)


def test_page_refs_decoding_and_merging(fake_proc, scan):
    base = 0x200000
    (fake_proc / "maps").write_text(f"{base:x}-{base + 0x400000:x} rw-p 00000000 00:00 0\n")
    stream = (
        hva(base)
        + bytes([0x03, 0x52, 0x81, 0x01])  # 3 accessed, 2 idle, 1 hole, 1 accessed (4K)
        + hva(base + 0x200000)
        + bytes([0x11, 0x71])  # 1 accessed 2M, then 1 PMD of idle PTEs (512 x 4K)
    )
    idle_pages(fake_proc / "idle_pages", {base: stream})
    refs = ctypes.POINTER(abi.CPageRefs)()
    scan_pass(scan, refs)
    got = refs_list(refs)
    assert got[:6] == [
        (base, 1, abi.PTE_TYPE),
        (base + PAGE, 1, abi.PTE_TYPE),
        (base + 2 * PAGE, 1, abi.PTE_TYPE),
        (base + 3 * PAGE, 0, abi.PTE_TYPE),
        (base + 4 * PAGE, 0, abi.PTE_TYPE),
        (base + 6 * PAGE, 1, abi.PTE_TYPE),
    ]
    assert got[6] == (base + 0x200000, 1, abi.PMD_TYPE)
    idle = got[7:]
    assert len(idle) == 512 and idle[0] == (base + 0x400000, 0, abi.PTE_TYPE)
    # a second pass merges into the same list: counts add up, nothing is duplicated
    scan_pass(scan, refs)
    again = refs_list(refs)
    assert [a for a, _, _ in again] == [a for a, _, _ in got]
    assert [c for _, c, _ in again] == [2 * c for _, c, _ in got]
    scan.etmemd_free_page_refs(refs)


def test_page_refs_record_before_address_fails(fake_proc, scan):
    (fake_proc / "maps").write_text("200000-400000 rw-p 00000000 00:00 0\n")
    idle_pages(fake_proc / "idle_pages", {0x200000: b"\x03"})
    refs = ctypes.POINTER(abi.CPageRefs)()
    with pytest.raises(CallFailed):
        scan_pass(scan, refs)


def test_page_refs_flags_need_the_kernel_ioctl(fake_proc, scan):
    (fake_proc / "maps").write_text("200000-400000 rw-p 00000000 00:00 0\n")
    idle_pages(fake_proc / "idle_pages", {0x200000: hva(0x200000) + b"\x01"})
    refs = ctypes.POINTER(abi.CPageRefs)()
    scan_pass(scan, refs)  # no flags: no ioctl
    assert refs_list(refs) == [(0x200000, 1, abi.PTE_TYPE)]
    with pytest.raises(CallFailed):  # a regular file refuses IDLE_SCAN_ADD_FLAGS
        scan_pass(scan, refs, abi.SCAN_IGN_HOST)
    scan.etmemd_free_page_refs(refs)


def test_page_refs_require_init(fake_proc, scan):
    (fake_proc / "maps").write_text("200000-400000 rw-p 00000000 00:00 0\n")
    idle_pages(fake_proc / "idle_pages", {0x200000: hva(0x200000) + b"\x01"})
    scan.etmemd_scan_exit()
    refs = ctypes.POINTER(abi.CPageRefs)()
    with pytest.raises(CallFailed):
        scan_pass(scan, refs)
    scan.etmemd_scan_init()
    with pytest.raises(CallFailed):  # twice is an error, as in the original
        scan.etmemd_scan_init()


def test_this_kernel_has_no_idle_pages(scan):
    pid = str(os.getpid()).encode()
    vmas = scan.etmemd_get_vmas(pid, None, 0, True)
    refs = ctypes.POINTER(abi.CPageRefs)()
    try:
        with pytest.raises(CallFailed) as exc:
            scan.etmemd_get_page_refs(vmas, pid, ctypes.byref(refs), 0)
        assert exc.value.errno == errno.ENOENT
    finally:
        scan.etmemd_free_vmas(vmas)
