"""etmem_core.filecheck: which object files are refused, and that the reason is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from etmem_sdk import ConfigError

from etmem_core.filecheck import MAX_OBJECT_FILE_SIZE, check_object_file, read_object_file

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to root:root needs root"),
]


def _file(tmp_path: Path, mode: int = 0o600, data: bytes = b"[project]\nname=p\n") -> Path:
    p = tmp_path / "obj.conf"
    p.write_bytes(data)
    os.chown(p, 0, 0)
    os.chmod(p, mode)
    return p


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_accepted_modes(tmp_path: Path, mode: int) -> None:
    p = _file(tmp_path, mode)
    check_object_file(p)
    assert read_object_file(p) == b"[project]\nname=p\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o700, 0o200, 0o000, 0o666, 0o604])
def test_other_modes_refused(tmp_path: Path, mode: int) -> None:
    p = _file(tmp_path, mode)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match=rf"mode {mode:04o}; .*0600 or 0400"):
            check(p)


def test_setuid_bit_is_not_looked_at(tmp_path: Path) -> None:
    # Only the 0777 bits are compared, as in C.
    check_object_file(_file(tmp_path, 0o4600))


@pytest.mark.parametrize("uid, gid", [(1000, 0), (0, 1000), (65534, 65534)])
def test_owner_must_be_root_root(tmp_path: Path, uid: int, gid: int) -> None:
    p = _file(tmp_path)
    os.chown(p, uid, gid)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match=rf"owned by {uid}:{gid}; .*root:root"):
            check(p)


def test_size_limit(tmp_path: Path) -> None:
    p = _file(tmp_path)
    os.truncate(p, MAX_OBJECT_FILE_SIZE)  # sparse: costs no disk
    check_object_file(p)
    assert len(read_object_file(p)) == MAX_OBJECT_FILE_SIZE
    os.truncate(p, MAX_OBJECT_FILE_SIZE + 1)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match=rf"size {MAX_OBJECT_FILE_SIZE + 1} bytes"):
            check(p)


def test_directory_refused(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o600)
    os.chmod(d, 0o600)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match="is a directory"):
            check(d)


def test_fifo_refused_without_hanging(tmp_path: Path) -> None:
    f = tmp_path / "fifo"
    os.mkfifo(f, 0o600)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match="not a regular file"):
            check(f)


def test_missing_file(tmp_path: Path) -> None:
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match="nope.conf: cannot be read"):
            check(tmp_path / "nope.conf")


def test_symlink_to_good_file_is_refused(tmp_path: Path) -> None:
    """Deliberate difference: the original resolves links; a link anyone may have made, to a
    root file that is no object file, must not be read."""
    target = _file(tmp_path)
    link = tmp_path / "link.conf"
    link.symlink_to(target)
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match="link.conf: is a symbolic link"):
            check(link)


@pytest.mark.parametrize("how", ["owned by nobody", "world-writable", "group-writable"])
def test_a_file_in_a_directory_others_can_write_is_refused(tmp_path: Path, how: str) -> None:
    d = tmp_path / "d"
    d.mkdir()
    p = _file(d)
    if how == "owned by nobody":
        os.chown(d, 65534, 65534)
        says = "owned by uid 65534"
    else:
        d.chmod(0o777 if how == "world-writable" else 0o775)
        says = "writable by root only"
    for check in (check_object_file, read_object_file):
        with pytest.raises(ConfigError, match=says):
            check(p)


def test_a_root_sticky_directory_is_accepted(tmp_path: Path) -> None:
    d = tmp_path / "sticky"
    d.mkdir()
    d.chmod(0o1777)  # like /tmp: only root can rename root's files here
    p = _file(d)
    check_object_file(p)
    assert read_object_file(p).startswith(b"[project]")


def test_proc_status_is_0444_and_refused() -> None:
    # The original's own test: /proc/1/status is root's but mode 0444.
    with pytest.raises(ConfigError, match="mode 0444"):
        check_object_file("/proc/1/status")
