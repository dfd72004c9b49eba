"""procfs readers: the original's VMA rules on fake trees and on a live child process."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_scan.pagemap import PAGE_SIZE, present_pages, present_runs
from etmem_scan.procfs import Vma, parse_maps, read_meminfo, read_status, read_vmas
from etmem_sdk import ConfigError, TargetGone
from etmem_sdk.testing import spawn_workload

MAPS = "".join(
    line + "\n"
    for line in [
        "7f0000000000-7f0000010000 rw-p 00000000 00:00 0 ",
        "7f0000010000-7f0000020000 r-xp 00000000 fe:00 1234                     /usr/lib/libx.so",
        "7f0000020000-7f0000080000 rw-p 00000000 00:00 0 ",
        "7f0000100000-7f0000108000 rw-p 00000000 00:00 0 ",
        "7f0000200000-7f0000400000 rw-s 00000000 fe:00 55                     /dev/shm/x",
        "7f0000400000-7f0000600000 rw-p 00000000 fe:00 77                     /usr/lib/liby.so",
        "7f0000600000-7f0000700000 r--p 00000000 fe:00 78          /usr/lib/my data (deleted)",
        "7f0000700000-7f0000800000 ---p 00000000 00:00 0 ",
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]",
    ]
)

SMAPS_TAIL = "Size: 64 kB\nRss: 4 kB\nReferenced: 4 kB\nVmFlags: {}\n"


def fake_proc(tmp_path, pid=4242, maps=MAPS, flags=None):
    d = tmp_path / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "maps").write_text(maps)
    lines = maps.splitlines()
    flags = flags or ["rd wr mr mw me ac"] * len(lines)
    (d / "smaps").write_text(
        "".join(line + "\n" + SMAPS_TAIL.format(f) for line, f in zip(lines, flags, strict=True))
    )
    return tmp_path


def test_parse_all_fields_and_keep_path_whole(tmp_path):
    vmas = read_vmas(4242, anon_only=False, proc_root=fake_proc(tmp_path))
    assert len(vmas) == 9
    lib = vmas[1]
    assert (lib.start, lib.end, lib.perms, lib.offset) == (
        0x7F0000010000,
        0x7F0000020000,
        "r-xp",
        0,
    )
    assert (lib.major, lib.minor, lib.inode, lib.path) == ("fe", "00", 1234, "/usr/lib/libx.so")
    assert lib.readable and lib.exec and not lib.writable and not lib.may_share
    assert vmas[0].path == "" and vmas[0].vmflags is None
    # deliberate difference from get_vma (etmemd_scan.c): no trailing newline, spaces kept
    assert vmas[6].path == "/usr/lib/my data (deleted)"
    assert vmas[8].path == "[stack]"


def test_anonymous_rule(tmp_path):
    got = [v.start for v in read_vmas(4242, proc_root=fake_proc(tmp_path))]
    assert got == [
        0x7F0000000000,  # anonymous rw
        0x7F0000020000,
        0x7F0000100000,
        # r-xp library: executable -> no; rw-s: may share -> no
        0x7F0000400000,  # private writable file mapping counts as anonymous
        # r--p file: inode and not writable -> no
        0x7F0000700000,  # ---p with inode 0: accepted (inode == 0)
        0x7FFD00000000,  # stack
    ]


def test_vmflags_read_smaps_and_every_flag_must_match(tmp_path):
    flags = ["rd wr mr mw me ac"] * 9
    flags[2] = "rd wr mr mw me ac ht"
    flags[3] = "rd wr mr mw me ht sd"
    root = fake_proc(tmp_path, flags=flags)
    vmas = read_vmas(4242, vmflags=["ht"], proc_root=root)
    assert [v.start for v in vmas] == [0x7F0000020000, 0x7F0000100000]
    assert vmas[1].vmflags == ("rd", "wr", "mr", "mw", "me", "ht", "sd")
    assert [v.start for v in read_vmas(4242, ["ht", "sd"], proc_root=root)] == [0x7F0000100000]
    assert read_vmas(4242, ["ht", "xx"], proc_root=root) == []
    # an empty list still means "read smaps", so every VMA carries its flags
    assert all(v.vmflags for v in read_vmas(4242, [], proc_root=root))


@pytest.mark.parametrize("bad", ["h", "htx", "h ", " t", ""])
def test_vmflag_validation(tmp_path, bad):
    with pytest.raises(ConfigError, match="exactly 2 characters"):
        read_vmas(4242, vmflags=[bad], proc_root=fake_proc(tmp_path))


def test_smaps_vma_without_vmflags_line_is_not_kept():
    text = "7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \nRss: 4 kB\n"
    assert parse_maps(text, vmflags=[]) == []


def test_gone_process_is_target_gone(tmp_path):
    with pytest.raises(TargetGone):
        read_vmas(999999, proc_root=tmp_path)
    with pytest.raises(TargetGone):
        read_status(999999, proc_root=tmp_path)


def test_status_and_meminfo(tmp_path):
    d = tmp_path / "7"
    d.mkdir()
    (d / "status").write_text(
        "Name:\tfoo bar\nState:\tS (sleeping)\nPid:\t7\nVmRSS:\t    1024 kB\nVmSwap:\t  512 kB\n"
        "Threads:\t3\n"
    )
    (tmp_path / "meminfo").write_text(
        "MemTotal:       24683656 kB\nMemFree:        24183656 kB\nSwapCached:            0 kB\n"
        "SwapTotal:        262140 kB\nHugePages_Total:       0\n"
    )
    st = read_status(7, proc_root=tmp_path)
    assert (st["VmRSS"], st["VmSwap"], st["Threads"], st["Pid"]) == (1024, 512, 3, 7)
    assert "Name" not in st and "State" not in st
    mi = read_meminfo(tmp_path)
    assert mi == {
        "MemTotal": 24683656,
        "MemFree": 24183656,
        "SwapCached": 0,
        "SwapTotal": 262140,
        "HugePages_Total": 0,
    }


def test_live_child_vmas_and_anonymous_rule(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * (4 * PAGE_SIZE))
    with spawn_workload(hot_mib=1, cold_mib=2, file=str(data)) as w:
        everything = {(v.start, v.end): v for v in read_vmas(w.pid, anon_only=False)}
        anon = {(v.start, v.end) for v in read_vmas(w.pid)}
        # each workload mapping is exactly one VMA (guard pages keep them apart)
        assert w.hot in anon and w.cold in anon
        ro, rw, sh = w.extra["file_ro"], w.extra["file_rw"], w.extra["shared"]
        assert everything[ro].path == str(data) and everything[ro].inode != 0
        assert ro not in anon  # file, not writable
        assert rw in anon  # private writable file mapping counts as anonymous
        assert everything[sh].may_share and sh not in anon
        assert all(not everything[k].exec for k in anon)
        # the smaps path gives the same VMAs, with flags
        flagged = read_vmas(w.pid, vmflags=["rd", "wr"])
        assert {(v.start, v.end) for v in flagged} <= anon
        assert w.hot in {(v.start, v.end) for v in flagged}
        st = read_status(w.pid)
        assert st["VmRSS"] >= 3 * 1024
        # pagemap agrees the filled mappings are resident
        res = present_pages(w.pid, [w.hot, w.cold])
        assert len(res) == (3 << 20) // PAGE_SIZE
        assert np.all(np.diff(res.astype(np.int64)) > 0)
        # ... and as runs (PAGEMAP_SCAN here): the same pages
        runs = np.concatenate(present_runs(w.pid, [w.hot, w.cold]))
        n = ((runs[:, 1] - runs[:, 0]) // PAGE_SIZE).astype(np.int64)
        pages = np.repeat(runs[:, 0], n) + (
            np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        ).astype(np.uint64) * np.uint64(PAGE_SIZE)
        assert pages.tolist() == res.tolist()


def test_vma_properties():
    v = Vma(0x1000, 0x3000, "rw-s", 0, "00", "00", 0)
    assert v.size == 0x2000 and v.may_share and not v.is_anonymous
