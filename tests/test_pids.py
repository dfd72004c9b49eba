"""etmem_scan.pids against a fake /proc tree and against real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from etmem_scan import pids


def fake_proc(
    root: Path,
    pid: int,
    comm: str,
    ppid: int = 1,
    *,
    flags: int = 0x400100,
    children: list[int] | None = None,
    comm_file: bool = True,
) -> None:
    """One /proc/PID entry with a stat line shaped like the kernel's."""
    d = root / str(pid)
    d.mkdir(parents=True)
    tail = " ".join(["0"] * 40)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 {flags} {tail}\n")
    if comm_file:
        (d / "comm").write_text(comm + "\n")
    if children is not None:
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "task" / str(pid) / "children").write_text("".join(f"{c} " for c in children))


@pytest.fixture
def tree(tmp_path: Path) -> str:
    root = tmp_path / "proc"
    root.mkdir()
    fake_proc(root, 1, "systemd", 0)
    fake_proc(root, 2, "kthreadd", 0, flags=0x208040)
    fake_proc(root, 40, "kworker/0:1", 2, flags=0x4208060)
    fake_proc(root, 100, "mysqld", 1)
    fake_proc(root, 230, "mysqld", 1)
    fake_proc(root, 101, "helper", 100)
    fake_proc(root, 150, "helper", 100)
    fake_proc(root, 160, "grandchild", 150)
    fake_proc(root, 300, "a very long nam", 1)  # the kernel cut it to 15 chars
    fake_proc(root, 400, "odd) (name", 1, comm_file=False)
    fake_proc(root, 500, "parent", 1, children=[502, 501, 999])  # 999 already gone
    fake_proc(root, 501, "kid", 500)
    fake_proc(root, 502, "kid", 500)
    (root / "self").mkdir()
    (root / "meminfo").write_text("MemTotal: 1 kB\n")
    return str(root)


def test_read_stat_parses_comm_with_parentheses(tree: str) -> None:
    st = pids.read_stat(400, tree)
    assert st is not None
    assert st.comm == "odd) (name"
    assert st.ppid == 1
    assert st.state == "S"
    assert pids.read_stat(7, tree) is None


def test_alive(tree: str) -> None:
    assert pids.alive(100, tree)
    assert not pids.alive(7, tree)
    assert not pids.alive(0, tree)
    assert not pids.alive(-1, tree)


def test_comm_from_comm_file_or_stat(tree: str) -> None:
    assert pids.comm(100, tree) == "mysqld"
    assert pids.comm(400, tree) == "odd) (name"
    assert pids.comm(7, tree) is None


def test_all_pids_skips_non_numeric(tree: str) -> None:
    assert pids.all_pids(tree) == [1, 2, 40, 100, 101, 150, 160, 230, 300, 400, 500, 501, 502]


def test_pids_by_name_exact_sorted(tree: str) -> None:
    assert pids.pids_by_name("mysqld", tree) == [100, 230]
    assert pids.pids_by_name("mysql", tree) == []
    assert pids.pids_by_name("mysqld ", tree) == []
    assert pids.pids_by_name("", tree) == []
    assert pids.pids_by_name("a very long nam", tree) == [300]
    # 16 characters can never equal a 15-character comm, as with pgrep -x
    assert pids.pids_by_name("a very long name", tree) == []


def test_children_by_ppid_scan(tree: str) -> None:
    assert pids.children_of(100, tree) == [101, 150]
    assert pids.children_of(150, tree) == [160]
    assert pids.children_of(160, tree) == []
    assert pids.children_of(7, tree) == []


def test_children_from_children_files(tree: str) -> None:
    # the gone pid 999 listed by the kernel snapshot is dropped; order is ascending
    assert pids.children_of(500, tree) == [501, 502]


def test_kernel_threads(tree: str) -> None:
    assert pids.is_kernel_thread(2, tree)
    assert pids.is_kernel_thread(40, tree)
    assert not pids.is_kernel_thread(1, tree)
    assert not pids.is_kernel_thread(100, tree)
    assert not pids.is_kernel_thread(7, tree)


def test_live_process_children_and_name(process_tree) -> None:
    parent, kids = process_tree
    assert pids.alive(parent)
    # the extra thread of the parent is not a child process
    assert pids.children_of(parent) == kids
    st = pids.read_stat(parent)
    assert st is not None and pids.comm(parent) == st.comm
    name = pids.comm(kids[0])
    assert name is not None and kids[0] in pids.pids_by_name(name)
    assert not pids.is_kernel_thread(parent)
    assert pids.is_kernel_thread(2)
    assert not pids.is_kernel_thread(os.getpid())
    assert pids.children_of(kids[0]) == []


def test_live_children_by_ppid_scan_matches_children_files() -> None:
    """The fallback scan finds the same children as the kernel's children files."""
    kids = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        me = os.getpid()
        want = sorted(k.pid for k in kids)
        assert set(want) <= set(pids.children_of(me))
        scanned = [
            p for p in pids.all_pids() if (st := pids.read_stat(p)) is not None and st.ppid == me
        ]
        assert set(want) <= set(scanned)
    finally:
        for k in kids:
            k.kill()
            k.wait()
