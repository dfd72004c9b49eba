"""Capability probe: which trackers and actuators work on this machine, and why not.

The probe only reads (``/proc``, ``/sys``, ``/proc/config.gz``) and makes two harmless
syscalls on its own process (an empty ``process_madvise`` and a ``move_pages`` query), so it
is safe to run anywhere, at any time.  It never writes to DAMON sysfs: "busy" is told from
``nr_kdamonds`` and each kdamond's ``state``.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import damon
from .errors import EngineError
from .kconfig import kernel_config, option_off
from .machine import PAGE_SIZE, UnknownArchitecture
from .names import ACTUATORS_FOR, TRACKERS
from .procfs import read_meminfo

__all__ = [
    "Capabilities",
    "NothingUsable",
    "Verdict",
    "best_actuator",
    "best_tracker",
    "parse_node_list",
    "probe",
    "tracker_unfit",
]

#: The order for ``purpose="swap"``: there the page-exact ``probe`` (usable only with swap)
#: beats ``damon``, whose regions cannot split data whose hot and cold pages alternate (the
#: test bed measured a 1-in-4 page interleave as 59 % out of the cold pages and 59 % of the
#: hot ones; docs/trackers.md "Default for swap"). Engines that must not swap keep DAMON.
SWAP_TRACKER_ORDER = ("idle_pages", "page_idle", "probe", "damon", "refs")
#: What one access bit of each tracker covers.
GRANULARITY = {
    "idle_pages": "page",
    "page_idle": "page",
    "damon": "region",
    "probe": "page",
    "refs": "mapping",
}
#: Trackers that see accesses to hugetlb pages (cslide's default ``memory=hugetlb``).
SEES_HUGETLB = ("idle_pages", "damon")
#: What an engine does with the pages it judges: ``swap`` them out (slide, etmem scan),
#: ``migrate`` them between nodes (cslide), or only mark them ``cold`` (MADV_COLD).
PURPOSES = ("swap", "migrate", "cold")
#: Said wherever ``refs`` is the tracker: what it cannot do.
MAPPING_ONLY = (
    "refs sees one accessed bit per mapping: it cannot see inside a mapping, so hot and cold "
    "pages in one heap cannot be told apart"
)


class NothingUsable(EngineError):
    """No tracker or actuator fit for the purpose works here; the message lists why."""


@dataclass(frozen=True)
class Verdict:
    """Whether one tracker or actuator works here: ``usable``, and ``reason`` when it does not
    (``note`` says something worth knowing when it does)."""

    usable: bool
    reason: str = ""
    note: str = ""


@dataclass
class Capabilities:
    """The probe's answer: verdicts per tracker and actuator, plus machine facts."""

    trackers: dict[str, Verdict] = field(default_factory=dict)
    actuators: dict[str, Verdict] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    def usable(self, capability: str) -> bool:
        """``capability`` is ``"tracker.NAME"`` or ``"actuator.NAME"``."""
        kind, _, name = capability.partition(".")
        table = self.trackers if kind == "tracker" else self.actuators
        v = table.get(name)
        return bool(v and v.usable)

    def to_json(self) -> dict:
        """A JSON-ready dict: ``{"trackers": {name: {usable, reason, note}}, "actuators": ...,
        "facts": ..., "defaults": ...}``."""
        out = {
            "trackers": {
                k: {**asdict(v), "granularity": GRANULARITY.get(k, "unknown")}
                for k, v in self.trackers.items()
            },
            "actuators": {k: asdict(v) for k, v in self.actuators.items()},
            "facts": dict(self.facts),
        }
        defaults: dict[str, str | None] = {}
        for key, fn in (
            ("tracker", lambda: best_tracker(self)),
            ("migrate_tracker", lambda: best_tracker(self, "migrate")),
            ("hugetlb_tracker", lambda: best_tracker(self, "migrate", hugetlb=True)),
            ("swap", lambda: best_actuator(self, "swap")),
            ("migrate", lambda: best_actuator(self, "migrate")),
        ):
            try:
                defaults[key] = fn()
            except NothingUsable:
                defaults[key] = None
        out["defaults"] = defaults
        return out


# ---------------------------------------------------------------- small readers


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_node_list(text: str) -> list[int]:
    """Parse a kernel CPU/node list like ``0-2,4`` into ``[0, 1, 2, 4]``."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _soft_dirty_works() -> bool:
    """Whether pagemap's soft-dirty bit (55) tracks writes, tried on a page of our own.

    Clearing our own soft-dirty bits is harmless, and it is the only way to tell on a kernel
    that hides its configuration.
    """
    import mmap

    page = mmap.mmap(-1, PAGE_SIZE)
    try:
        page[0] = 1
        view = ctypes.c_char.from_buffer(page)
        addr = ctypes.addressof(view)
        del view  # release the export so the mapping can be closed
        with open("/proc/self/clear_refs", "w") as f:
            f.write("4")

        def soft_dirty() -> bool:
            with open("/proc/self/pagemap", "rb") as f:
                f.seek(addr // PAGE_SIZE * 8)
                return bool(int.from_bytes(f.read(8), "little") >> 55 & 1)

        clean = not soft_dirty()
        page[0] = 2
        return clean and soft_dirty()
    except OSError:
        return False
    finally:
        page.close()


def _syscall_works(name: str) -> tuple[bool, str]:
    """Try the syscall harmlessly on ourselves: (works, reason)."""
    from . import actuators

    try:
        if name == "process_madvise":
            fd = os.pidfd_open(os.getpid())
            try:
                actuators._call("process_madvise", fd, 0, 0, actuators.MADV_COLD, 0)
            finally:
                os.close(fd)
        else:
            page = np.zeros(1, dtype=np.uint64)
            actuators._call("move_pages", 0, 0, page.ctypes.data, 0, page.ctypes.data, 0)
    except UnknownArchitecture as e:
        return False, str(e)
    except OSError as e:
        if e.errno == errno.ENOSYS:
            return False, f"kernel has no {name}(2)"
        if e.errno == errno.EPERM:
            return False, f"{name}(2) not permitted (needs CAP_SYS_NICE / root)"
        return False, f"{name}(2) failed: {e.strerror}"
    return True, ""


# ---------------------------------------------------------------- verdicts


def _damon_verdict(sys_root: Path, cfg: dict[str, str] | None) -> tuple[Verdict, dict]:
    admin = sys_root / "kernel/mm/damon/admin/kdamonds"
    facts: dict[str, object] = {}
    if not admin.is_dir():
        why = "no DAMON sysfs (kernel option CONFIG_DAMON_SYSFS is off)"
        if option_off(cfg, "CONFIG_DAMON"):
            why = "no DAMON (kernel option CONFIG_DAMON is off)"
        return Verdict(False, why), facts
    reasons = []
    nr_text = _read(admin / "nr_kdamonds")
    nr = int(nr_text) if nr_text and nr_text.strip().isdigit() else 0
    ops: set[str] = set()
    running = []
    for i in range(nr):
        kd = admin / str(i)
        if (_read(kd / "state") or "").strip() == "on":
            running.append(str(i))
        ops.update((_read(kd / "contexts/0/avail_operations") or "").split())
    facts["damon_kdamonds"] = nr
    facts["damon_running"] = running
    if ops:
        facts["damon_operations"] = sorted(ops)
    if ops and "vaddr" not in ops:
        reasons.append(f"no vaddr operations (kernel has: {' '.join(sorted(ops))})")
    elif not ops and option_off(cfg, "CONFIG_DAMON_VADDR"):
        reasons.append("no vaddr operations (kernel option CONFIG_DAMON_VADDR is off)")
    shared = "per-region sight; one kdamond watches every monitored process"
    if nr and damon.ours(sys_root):
        facts["damon_ours"] = True  # this process's own kdamond: more targets join it
    elif running:
        reasons.append(f"busy: kdamond {', '.join(running)} is running (not ours)")
    elif nr:
        reasons.append(f"busy: {nr} kdamond(s) configured by someone else")
    if reasons:
        return Verdict(False, "; ".join(reasons)), facts
    return Verdict(True, note=f"{shared} (needs DAMON to have no other kdamond)"), facts


def probe(
    proc_root: str | os.PathLike[str] = "/proc", sys_root: str | os.PathLike[str] = "/sys"
) -> Capabilities:
    """Probe this machine (or the fake tree under the roots). Reads only; see module docs."""
    proc, sys_ = Path(proc_root), Path(sys_root)
    cfg = kernel_config(proc)
    caps = Capabilities()
    is_root = os.geteuid() == 0
    try:
        meminfo = read_meminfo(proc)
    except OSError:
        meminfo = {}
    swap_kb = meminfo.get("SwapTotal", 0)

    # facts
    f = caps.facts
    f["kernel"] = (_read(proc / "sys/kernel/osrelease") or os.uname().release).strip()
    f["page_size"] = PAGE_SIZE
    online = _read(sys_ / "devices/system/node/online")
    nodes = parse_node_list(online) if online else [0]
    f["numa_nodes"] = nodes
    f["swap_total_kb"] = swap_kb
    f["swap_free_kb"] = meminfo.get("SwapFree", 0)
    thp = _read(sys_ / "kernel/mm/transparent_hugepage/enabled")
    f["thp"] = thp.split("[", 1)[1].split("]", 1)[0] if thp and "[" in thp else None
    f["psi"] = _read(proc / "pressure/memory") is not None
    reclaim = any(
        "memory" in (_read(sys_ / d / "cgroup.controllers") or "").split()
        for d in ("fs/cgroup", "fs/cgroup/unified")
    )
    f["cgroup2_memory_reclaim"] = reclaim
    f["cgroup1_memory"] = (sys_ / "fs/cgroup/memory/memory.limit_in_bytes").exists()
    if cfg is not None and option_off(cfg, "CONFIG_MEM_SOFT_DIRTY"):
        f["soft_dirty"] = False
    else:
        # Only our own process can be tried, so a fake tree says "unknown".
        f["soft_dirty"] = _soft_dirty_works() if proc == Path("/proc") else None
    zswap = _read(sys_ / "module/zswap/parameters/enabled")
    f["zswap"] = None if zswap is None else zswap.strip() in ("Y", "1")
    f["zram"] = (sys_ / "block/zram0").exists()
    f["root"] = is_root

    # trackers
    t = caps.trackers
    if (proc / "self/idle_pages").exists():
        t["idle_pages"] = Verdict(True, note="openEuler etmem_scan module")
    else:
        t["idle_pages"] = Verdict(
            False, "etmem_scan kernel module not loaded (no /proc/PID/idle_pages)"
        )
    if (sys_ / "kernel/mm/page_idle/bitmap").exists():
        t["page_idle"] = (
            Verdict(True)
            if is_root
            else Verdict(False, "needs root (PFNs in pagemap, the page_idle bitmap)")
        )
    else:
        t["page_idle"] = Verdict(
            False, "no /sys/kernel/mm/page_idle (kernel option CONFIG_IDLE_PAGE_TRACKING is off)"
        )
    if (proc / "self/clear_refs").exists():
        t["refs"] = Verdict(True, note="per-VMA granularity (clear_refs + smaps Referenced)")
    else:
        t["refs"] = Verdict(
            False, "no /proc/PID/clear_refs (kernel option CONFIG_PROC_PAGE_MONITOR is off)"
        )
    t["damon"], damon_facts = _damon_verdict(sys_, cfg)
    f.update(damon_facts)
    no_swap = "no swap configured (SwapTotal is 0)"
    madvise_ok, madvise_why = _syscall_works("process_madvise")
    if not madvise_ok:
        t["probe"] = Verdict(False, madvise_why)
    elif not swap_kb:
        t["probe"] = Verdict(False, no_swap + ": the probe pages a sample out to swap")
    else:
        t["probe"] = Verdict(
            True, note="pages a sample out (process_madvise) and watches which come back"
        )
    # the order of the table is the order of preference
    caps.trackers = {k: t[k] for k in TRACKERS if k in t}

    # actuators
    a = caps.actuators
    if (proc / "self/swap_pages").exists():
        a["swap_pages"] = Verdict(True) if swap_kb else Verdict(False, no_swap)
    else:
        a["swap_pages"] = Verdict(
            False, "etmem_swap kernel module not loaded (no /proc/PID/swap_pages)"
        )
    if not madvise_ok:
        a["pageout"] = a["cold"] = Verdict(False, madvise_why)
    else:
        a["pageout"] = (
            Verdict(True, note="process_madvise(MADV_PAGEOUT)")
            if swap_kb
            else Verdict(False, no_swap + ": pageout would keep every anonymous page")
        )
        a["cold"] = Verdict(True, note="process_madvise(MADV_COLD): deactivates, moves nothing")
    ok, why = _syscall_works("move_pages")
    if not ok:
        a["migrate"] = Verdict(False, why)
    elif len(nodes) < 2:
        a["migrate"] = Verdict(
            False, f"one NUMA node ({nodes[0] if nodes else 0}): nowhere to migrate to"
        )
    else:
        a["migrate"] = Verdict(True, note="move_pages(2)")
    return caps


def tracker_unfit(name: str, purpose: str = "swap", *, hugetlb: bool = False) -> str:
    """Why tracker ``name`` cannot serve ``purpose`` (``""`` when it can), whatever the machine.

    ``probe`` swaps pages out to watch them come back, so it cannot serve ``migrate`` (cslide
    would lose the memory it means to place); hugetlb memory is seen only by ``idle_pages``
    and ``damon`` (the other trackers read base-page bits hugetlb pages do not have).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; choose one of {', '.join(PURPOSES)}")
    if name == "probe" and purpose != "swap":
        doing = (
            "migrates between nodes (cslide)" if purpose == "migrate" else "only marks pages cold"
        )
        return (
            "probe pages memory out to swap to see which pages come back; an engine that "
            f"{doing} must not swap, so it cannot use it"
        )
    if hugetlb and name not in SEES_HUGETLB:
        return f"{name} does not see hugetlb accesses (only {' or '.join(SEES_HUGETLB)} do)"
    return ""


def best_tracker(caps: Capabilities, purpose: str = "swap", *, hugetlb: bool = False) -> str:
    """The default tracker: the first of :data:`TRACKERS` (``idle_pages``,
    ``page_idle``, ``damon``, ``probe``, ``refs``) that works here and fits ``purpose``
    (``"swap"``, ``"migrate"`` or ``"cold"``; only ``swap`` may use ``probe``) and, with
    ``hugetlb``, sees hugetlb accesses. For ``swap`` the order is
    :data:`SWAP_TRACKER_ORDER`: ``probe`` before ``damon``.

    Raises :class:`NothingUsable` naming why each one was passed over.
    """
    why = []
    order = SWAP_TRACKER_ORDER if purpose == "swap" else TRACKERS
    for name in order:
        unfit = tracker_unfit(name, purpose, hugetlb=hugetlb)
        verdict = caps.trackers.get(name)
        if unfit:
            why.append(f"{name}: {unfit}")
        elif verdict is not None and verdict.usable:
            return name
        elif verdict is not None:
            why.append(f"{name}: {verdict.reason}")
    raise NothingUsable(f"no usable page tracker ({'; '.join(why)})")


def best_actuator(caps: Capabilities, purpose: str = "swap") -> str:
    """The default actuator for ``purpose``: ``"swap"`` → ``swap_pages`` else ``pageout``;
    ``"migrate"`` → ``migrate``; ``"cold"`` → ``cold``."""
    choices = ACTUATORS_FOR
    if purpose not in choices:
        raise ValueError(f"unknown purpose {purpose!r}; choose one of {', '.join(choices)}")
    for name in choices[purpose]:
        if caps.usable(f"actuator.{name}"):
            return name
    why = "; ".join(f"{n}: {caps.actuators[n].reason}" for n in choices[purpose])
    raise NothingUsable(f"no usable actuator to {purpose} ({why})")
