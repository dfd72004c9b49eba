"""etmem_scan.cgroup: PSI parsing, brace globs, layouts and the memory.reclaim writer."""

from __future__ import annotations

import errno
import os

import pytest
from etmem_scan import cgroup
from fake_cgroups import FakeCgroups


def test_parse_psi():
    got = cgroup.parse_psi(
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    )
    assert got["some"] == cgroup.Pressure(1.5, 0.25, 0.0, 12345)
    assert got["full"].total_us == 7
    assert got["some"].window("avg60") == 0.25
    with pytest.raises(ValueError):
        got["some"].window("total")
    with pytest.raises(ValueError, match="not a PSI file"):
        cgroup.parse_psi("garbage")


@pytest.mark.parametrize(
    ("pattern", "expanded"),
    [
        ("a/*", ["a/*"]),
        ("{a,b}/x", ["a/x", "b/x"]),
        ("x{1,{2,3}}", ["x1", "x2", "x3"]),
        ("{a}", ["{a}"]),
        ("a{b", ["a{b"]),
    ],
)
def test_expand_braces(pattern, expanded):
    assert cgroup.expand_braces(pattern) == expanded


def test_find_refuses_leaving_the_tree(tmp_path):
    FakeCgroups(tmp_path / "sys", tmp_path / "proc")
    layout = cgroup.detect_layout(str(tmp_path / "sys"), str(tmp_path / "proc"))
    with pytest.raises(ValueError, match=r"'\.\.'"):
        layout.find("a/../..")


def test_reclaim_write_and_eagain(tmp_path, monkeypatch):
    tree = FakeCgroups(tmp_path / "sys", tmp_path / "proc")
    tree.add("g", usage=1 << 20)
    layout = cgroup.detect_layout(str(tmp_path / "sys"), str(tmp_path / "proc"))
    assert layout.reclaim("g", 8192) is True
    assert tree.reclaim_written("g") == "8192"

    def eagain(fd, data):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "write", eagain)
    assert layout.reclaim("g", 8192) is False  # the kernel gave up early: not an error
    monkeypatch.setattr(os, "write", lambda fd, d: (_ for _ in ()).throw(OSError(errno.EBUSY, "x")))
    with pytest.raises(cgroup.EngineError, match="memory.reclaim: writing 8192"):
        layout.reclaim("g", 8192)
    monkeypatch.undo()
    with pytest.raises(cgroup.CgroupGone):
        layout.reclaim("gone", 8192)
    with pytest.raises(cgroup.CgroupGone):
        layout.memory("gone")


def test_v2_memory_state_caps_swap_room(tmp_path):
    tree = FakeCgroups(tmp_path / "sys", tmp_path / "proc")
    (tmp_path / "proc" / "meminfo").write_text("SwapFree: 1024 kB\n")
    tree.add("g", usage=100, anon=60, file=40, limit=1000, min=5, low=7)
    layout = cgroup.detect_layout(str(tmp_path / "sys"), str(tmp_path / "proc"))
    state = layout.memory("g")
    assert state == cgroup.MemoryState(100, 1000, 5, 7, 60, 40, 1 << 20)
    (tree.fs / "g" / "memory.swap.max").write_text("300\n")
    (tree.fs / "g" / "memory.swap.current").write_text("100\n")
    assert layout.memory("g").swap_room == 200


def test_v1_unlimited_limit_is_none(tmp_path):
    tree = FakeCgroups(tmp_path / "sys", tmp_path / "proc", "v1")
    tree.add("g", usage=100, anon=60, file=40)
    layout = cgroup.detect_layout(str(tmp_path / "sys"), str(tmp_path / "proc"))
    assert layout.version == cgroup.CGROUP_V1
    state = layout.memory("g")
    assert state.limit is None and state.anon_lru == 60 and state.file_lru == 40


def test_pid_pressure_path_v2_v1_and_none(tmp_path):
    for version in ("v2", "v1"):
        root = tmp_path / version
        tree = FakeCgroups(root / "sys", root / "proc", version)
        tree.add("svc/db", usage=1)
        tree.put_pid(42, "svc/db")
        path = cgroup.pid_pressure_path(42, str(root / "sys"), str(root / "proc"))
        assert path == str(tree.pressure_dir("svc/db") / "memory.pressure")
        tree.put_pid(43, "")  # the root cgroup has no memory.pressure file of its own
        assert cgroup.pid_pressure_path(43, str(root / "sys"), str(root / "proc")) is None
        assert cgroup.pid_pressure_path(44, str(root / "sys"), str(root / "proc")) is None
