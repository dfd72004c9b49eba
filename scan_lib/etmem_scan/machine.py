"""Facts of the machine the scan library runs on: its page size and its syscall numbers.

One place for both, so that every module agrees on them.  The syscall numbers are per
architecture; on one not in the table a syscall is refused by name (:class:`UnknownArchitecture`)
rather than issued with another architecture's number, which would call some other syscall.
"""

from __future__ import annotations

import os
import platform

from .errors import EngineError

__all__ = ["PAGE_SHIFT", "PAGE_SIZE", "SYSCALLS", "UnknownArchitecture", "syscall_number"]

#: The base page size of this machine, in bytes.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

# The syscalls that are called by number (Python has no wrapper for them).  arm64, riscv64 and
# loongarch64 share the generic table (include/uapi/asm-generic/unistd.h); x86_64 has its own
# (arch/x86/entry/syscalls/syscall_64.tbl).  The newer calls got the same number everywhere.
_GENERIC = {"move_pages": 239, "pidfd_open": 434, "process_madvise": 440}
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"move_pages": 279, "pidfd_open": 434, "process_madvise": 440},
    "aarch64": _GENERIC,
    "arm64": _GENERIC,
    "riscv64": _GENERIC,
    "loongarch64": _GENERIC,
}


class UnknownArchitecture(EngineError):
    """This architecture's syscall numbers are not known here, so the call is not made."""


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of syscall ``name`` on ``machine`` (default: this one, ``platform.machine()``).

    Raises :class:`UnknownArchitecture` naming the architecture when it is not in
    :data:`SYSCALLS`.
    """
    arch = platform.machine() if machine is None else machine
    table = SYSCALLS.get(arch)
    if table is None:
        known = ", ".join(sorted(SYSCALLS))
        raise UnknownArchitecture(
            f"{name}: syscall numbers of architecture {arch!r} are not known (known: {known})"
        )
    return table[name]
