"""Memory cgroups and pressure (PSI) for policies: find cgroups, read their memory and pressure,
ask the kernel to reclaim from them.

::

    from etmem_sdk import cgroup

    layout = cgroup.detect_layout()            # CgroupUnavailable says why not, on this machine
    for rel in layout.find("workloads/*"):
        some = layout.pressure(rel)["some"]
        if max(some.avg10, some.avg60) < 0.1:
            layout.reclaim(rel, 64 << 20)

Everything is rooted at the scan defaults' ``sys_root`` / ``proc_root`` (see
:func:`etmem_sdk.scan.defaults`) unless given roots, so a policy runs unchanged on a fake tree.
"""

from __future__ import annotations

from etmem_scan import cgroup as _cgroup
from etmem_scan.cgroup import (
    CGROUP_V1,
    CGROUP_V2,
    PSI_WINDOWS,
    CgroupGone,
    CgroupLayout,
    CgroupUnavailable,
    MemoryState,
    Pressure,
    expand_braces,
    parse_psi,
    read_psi,
)

from . import scan

__all__ = [
    "CGROUP_V1",
    "CGROUP_V2",
    "PSI_WINDOWS",
    "CgroupGone",
    "CgroupLayout",
    "CgroupUnavailable",
    "MemoryState",
    "Pressure",
    "detect_layout",
    "expand_braces",
    "parse_psi",
    "pid_pressure_path",
    "read_psi",
    "system_pressure",
    "system_pressure_path",
]


def detect_layout(sys_root: str | None = None, proc_root: str | None = None) -> CgroupLayout:
    """The memory-cgroup layout that can be reclaimed here (v2, else openEuler's v1); raises
    :class:`CgroupUnavailable` with the reason when there is none, or no PSI."""
    d = scan.defaults()
    return _cgroup.detect_layout(sys_root or d.sys_root, proc_root or d.proc_root)


def system_pressure_path(proc_root: str | None = None) -> str:
    """``<proc>/pressure/memory``."""
    return _cgroup.system_pressure_path(proc_root or scan.defaults().proc_root)


def system_pressure(proc_root: str | None = None) -> dict[str, Pressure]:
    """The system-wide memory PSI (``{"some": ..., "full": ...}``)."""
    return read_psi(system_pressure_path(proc_root))


def pid_pressure_path(
    pid: int, sys_root: str | None = None, proc_root: str | None = None
) -> str | None:
    """The ``memory.pressure`` of the cgroup ``pid`` is in, or ``None`` (gone, root cgroup, or
    no per-cgroup PSI)."""
    d = scan.defaults()
    return _cgroup.pid_pressure_path(pid, sys_root or d.sys_root, proc_root or d.proc_root)
