"""The two trust rules of etmem_scan.trusted_files, on made-up stat results."""

from __future__ import annotations

import os
import stat

import pytest
from etmem_scan.trusted_files import (
    Flaw,
    owned_by_root_with_mode,
    untrusted_directory,
    writable_only_by,
)


def fake_stat(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


def flaw(verdict):
    return None if verdict is None else verdict.flaw


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        (fake_stat(stat.S_IFREG | 0o600), None),
        (fake_stat(stat.S_IFREG | 0o400), None),
        (fake_stat(stat.S_IFDIR | 0o600), Flaw.TYPE),
        (fake_stat(stat.S_IFREG | 0o600, uid=1), Flaw.OWNER),
        (fake_stat(stat.S_IFREG | 0o600, gid=1), Flaw.OWNER),
        (fake_stat(stat.S_IFREG | 0o644), Flaw.MODE),
        (fake_stat(stat.S_IFREG | 0o4600), Flaw.MODE),  # every bit of S_IMODE counts
    ],
)
def test_owned_by_root_with_mode(st, expected):
    assert flaw(owned_by_root_with_mode(st, (0o600, 0o400))) is expected


def test_owned_by_root_with_mode_mask():
    st = fake_stat(stat.S_IFREG | 0o4600)
    assert owned_by_root_with_mode(st, (0o600,), mask=0o777) is None
    verdict = owned_by_root_with_mode(fake_stat(stat.S_IFREG | 0o4644), (0o600,), mask=0o777)
    assert verdict is not None and verdict.mode == 0o644


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        (fake_stat(stat.S_IFREG | 0o755, gid=5), None),  # the group does not matter
        (fake_stat(stat.S_IFREG | 0o644, uid=7), None),
        (fake_stat(stat.S_IFIFO | 0o600), Flaw.TYPE),
        (fake_stat(stat.S_IFREG | 0o600, uid=8), Flaw.OWNER),
        (fake_stat(stat.S_IFREG | 0o620), Flaw.MODE),
        (fake_stat(stat.S_IFREG | 0o602), Flaw.MODE),
    ],
)
def test_writable_only_by(st, expected):
    assert flaw(writable_only_by(st, (0, 7))) is expected


def test_writable_only_by_directory_and_sticky():
    sticky = fake_stat(stat.S_IFDIR | 0o1777)
    assert flaw(writable_only_by(sticky, (0,), kind=stat.S_ISDIR)) is Flaw.MODE
    assert writable_only_by(sticky, (0,), kind=stat.S_ISDIR, sticky_ok=True) is None
    assert flaw(writable_only_by(fake_stat(stat.S_IFREG | 0o700), (0,), kind=stat.S_ISDIR)) is (
        Flaw.TYPE
    )
    assert writable_only_by(fake_stat(stat.S_IFLNK | 0o755), (0,), kind=None) is None


def test_untrusted_directory(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    found = untrusted_directory(open_dir / "f")
    assert found is not None
    directory, verdict = found
    assert directory == os.path.realpath(open_dir) and not isinstance(verdict, OSError)
    assert verdict.flaw is (Flaw.MODE if os.geteuid() == 0 else Flaw.OWNER)
    missing = untrusted_directory(tmp_path / "gone" / "f")
    assert missing is not None
    assert missing[0] == os.path.realpath(tmp_path / "gone")
    assert isinstance(missing[1], OSError)
