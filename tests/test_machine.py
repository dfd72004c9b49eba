"""etmem_scan.machine: page size and per-architecture syscall numbers."""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest
from etmem_scan import actuators, machine
from etmem_scan.machine import UnknownArchitecture, syscall_number


def test_page_size_is_this_machines() -> None:
    assert machine.PAGE_SIZE == os.sysconf("SC_PAGE_SIZE")
    assert 1 << machine.PAGE_SHIFT == machine.PAGE_SIZE


@pytest.mark.parametrize(
    ("arch", "name", "number"),
    [
        ("x86_64", "process_madvise", 440),
        ("x86_64", "pidfd_open", 434),
        ("x86_64", "move_pages", 279),
        ("aarch64", "process_madvise", 440),
        ("aarch64", "pidfd_open", 434),
        ("aarch64", "move_pages", 239),
        ("riscv64", "move_pages", 239),
    ],
)
def test_syscall_numbers_of_each_architecture(arch: str, name: str, number: int) -> None:
    assert syscall_number(name, arch) == number


def test_unknown_architecture_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "vax")
    with pytest.raises(UnknownArchitecture, match="'vax'"):
        syscall_number("move_pages")


def test_an_actuator_on_an_unknown_architecture_makes_no_syscall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "vax")
    called = []
    monkeypatch.setattr(actuators, "_syscall", lambda *a: called.append(a) or 0)
    with pytest.raises(UnknownArchitecture, match="move_pages.*'vax'"):
        actuators.query_nodes(os.getpid(), np.zeros(1, dtype=np.uint64))
    assert called == []


def test_the_table_matches_this_machine() -> None:
    """On the machine the suite runs on, the number really is that syscall: pidfd_open of
    ourselves gives a pid fd."""
    fd = actuators._syscall(syscall_number("pidfd_open"), os.getpid(), 0)
    assert fd >= 0
    os.close(fd)


def test_the_probe_reports_an_unknown_architecture_as_unusable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from etmem_scan import probe

    monkeypatch.setattr(platform, "machine", lambda: "vax")
    works, why = probe._syscall_works("process_madvise")
    assert not works
    assert "'vax'" in why
