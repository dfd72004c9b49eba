"""A fake /proc tree for policy tests: processes with VMAs, pagemap, smaps and a recording
actuator that pages pages out *in the tree* (``etmem_fake_proc`` builds one)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etmem_scan.actuator_interface import Actuator
from etmem_scan.machine import PAGE_SIZE

# numpy and the scan facade are imported where they are used: the pytest plugin
# (etmem_sdk.testing) imports this module in every pytest run of an environment that has etmem.
if TYPE_CHECKING:
    import numpy as np


_PAGE_SHIFT = PAGE_SIZE.bit_length() - 1
_PM_PRESENT = 1 << 63
_PM_SWAP = 1 << 62
#: Never used as fake pids: the daemon's own pid and init are not targets.
_FIRST_FAKE_PID = 4000


@dataclass
class FakeVma:
    """One mapping of a fake process.

    ``present`` has one flag per page (resident or not); ``referenced`` says whether smaps shows
    the VMA as touched since the last ``clear_refs`` (what the ``refs`` tracker reads). A page
    paged out through :meth:`FakeProc.page_out` becomes not present and counts as swapped.
    """

    start: int
    end: int
    perms: str = "rw-p"
    path: str = ""
    inode: int = 0
    referenced: bool = False
    vmflags: str = "rd wr mr mw me ac"
    # None until __post_init__ sizes them from the VMA (all present, none swapped)
    present: np.ndarray = field(default=None)  # type: ignore[arg-type]
    swapped: np.ndarray = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        import numpy as np

        if self.start % PAGE_SIZE or self.end % PAGE_SIZE or self.end <= self.start:
            raise ValueError(f"VMA {self.start:#x}-{self.end:#x}: not page-aligned or empty")
        n = self.pages
        if self.present is None:
            self.present = np.ones(n, dtype=bool)
        if self.swapped is None:
            self.swapped = np.zeros(n, dtype=bool)

    @property
    def pages(self) -> int:
        """Number of base pages."""
        return (self.end - self.start) >> _PAGE_SHIFT

    @property
    def rss_kb(self) -> int:
        """Resident kB (what smaps ``Rss:`` shows)."""
        return int(self.present.sum()) * PAGE_SIZE // 1024

    @property
    def swap_kb(self) -> int:
        """Swapped-out kB (what smaps ``Swap:`` shows)."""
        return int(self.swapped.sum()) * PAGE_SIZE // 1024


@dataclass
class FakeProcess:
    """A process of a :class:`FakeProc` tree. Change it, then call :meth:`write` (the tree's
    helpers do that for you)."""

    tree: FakeProc
    pid: int
    comm: str
    ppid: int
    vmas: list[FakeVma]

    @property
    def dir(self) -> Path:
        """``<tree>/<pid>``."""
        return self.tree.root / str(self.pid)

    def vma_at(self, addr: int) -> FakeVma:
        """The VMA holding ``addr``."""
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        raise KeyError(f"pid {self.pid}: no VMA at {addr:#x}")

    def touch(self, *vmas: FakeVma, referenced: bool = True) -> None:
        """Mark ``vmas`` (default: all) as referenced (or not) from now on."""
        for v in vmas or self.vmas:
            v.referenced = referenced
        self.write()

    @property
    def rss_kb(self) -> int:
        """``VmRSS`` in kB: the resident pages of every VMA."""
        return sum(v.rss_kb for v in self.vmas)

    @property
    def swap_kb(self) -> int:
        """``VmSwap`` in kB."""
        return sum(v.swap_kb for v in self.vmas)

    def write(self) -> None:
        """(Re)write maps, smaps, status, stat, comm, pagemap and clear_refs."""
        import numpy as np

        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        maps, smaps = [], []
        for v in self.vmas:
            head = (
                f"{v.start:08x}-{v.end:08x} {v.perms} 00000000 "
                f"{'08:01' if v.inode else '00:00'} {v.inode}"
            )
            head = f"{head:<73}{v.path}".rstrip() if v.path else head
            maps.append(head + "\n")
            size_kb = (v.end - v.start) // 1024
            rss = v.rss_kb
            smaps.append(
                f"{head}\nSize: {size_kb:>8} kB\nRss: {rss:>8} kB\n"
                f"Referenced: {rss if v.referenced else 0:>8} kB\n"
                f"Anonymous: {0 if v.inode else rss:>8} kB\nSwap: {v.swap_kb:>8} kB\n"
                f"VmFlags: {v.vmflags}\n"
            )
        (d / "maps").write_text("".join(maps))
        (d / "smaps").write_text("".join(smaps))
        (d / "comm").write_text(self.comm + "\n")
        (d / "status").write_text(
            f"Name:\t{self.comm}\nState:\tS (sleeping)\nTgid:\t{self.pid}\nPid:\t{self.pid}\n"
            f"PPid:\t{self.ppid}\nVmRSS:\t{self.rss_kb:>8} kB\nVmSwap:\t{self.swap_kb:>8} kB\n"
        )
        # fields after comm: state ppid pgrp session tty_nr tpgid flags ...
        (d / "stat").write_text(
            f"{self.pid} ({self.comm}) S {self.ppid} {self.pid} {self.pid} 0 -1 4194304 "
            "0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n"
        )
        clear_refs = d / "clear_refs"
        if not clear_refs.exists():
            clear_refs.write_text("")
        with open(d / "pagemap", "wb") as f:  # sparse: 8 bytes per page at (addr / page) * 8
            for v in self.vmas:
                ent = np.zeros(v.pages, dtype=np.uint64)
                ent[v.present] = np.uint64(_PM_PRESENT)
                ent[v.swapped] = np.uint64(_PM_SWAP)
                f.seek((v.start >> _PAGE_SHIFT) * 8)
                f.write(ent.tobytes())


class FakeProc:
    """A fake ``/proc`` (and empty ``/sys``) tree for policy tests.

    ::

        tree = FakeProc(tmp_path / "proc")
        p = tree.add_process(comm="db", vmas=[(0x10000000, 8 << 20), (0x20000000, 32 << 20)])
        p.touch(p.vmas[0])            # the first mapping is hot, the second cold
        tree.page_out(p.pid, addrs)   # what RecordingActuator does

    Writes ``PID/{maps,smaps,status,stat,comm,pagemap,clear_refs}``, ``meminfo`` and
    ``self/clear_refs`` (so the probe finds the ``refs`` tracker). ``sys_root`` is an empty
    directory beside it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        mem_total_kb: int = 16 << 20,
        swap_total_kb: int = 4 << 20,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sys_root = self.root.parent / (self.root.name + "-sys")
        self.sys_root.mkdir(exist_ok=True)
        (self.root / "self").mkdir(exist_ok=True)
        (self.root / "self" / "clear_refs").write_text("")
        self.processes: dict[int, FakeProcess] = {}
        self.mem_total_kb = mem_total_kb
        self.swap_total_kb = swap_total_kb
        self._next_pid = _FIRST_FAKE_PID
        #: the ``fake`` actuator bound to this tree, once the ``etmem_fake_proc`` fixture made it
        self.actuator: RecordingActuator | None = None
        self.write_meminfo()

    @property
    def proc_root(self) -> str:
        """The tree's root as a string, for ``proc_root=`` parameters."""
        return str(self.root)

    def write_meminfo(self, **extra_kb: int) -> None:
        """Write ``meminfo`` from the processes' totals (fields in ``extra_kb`` override)."""
        rss = sum(p.rss_kb for p in self.processes.values())
        swapped = sum(p.swap_kb for p in self.processes.values())
        fields = {
            "MemTotal": self.mem_total_kb,
            "MemFree": max(0, self.mem_total_kb - rss - (1 << 20)),
            "MemAvailable": max(0, self.mem_total_kb - rss),
            "SwapCached": 0,
            "SwapTotal": self.swap_total_kb,
            "SwapFree": max(0, self.swap_total_kb - swapped),
        }
        fields.update(extra_kb)
        (self.root / "meminfo").write_text(
            "".join(f"{k + ':':<16}{v:>8} kB\n" for k, v in fields.items())
        )

    def add_process(
        self,
        *,
        vmas: Sequence[FakeVma | tuple[int, int]] = (),
        comm: str = "workload",
        pid: int | None = None,
        ppid: int = 1,
    ) -> FakeProcess:
        """Add a process; ``vmas`` are :class:`FakeVma` or ``(start, length)`` anonymous
        read-write mappings, all resident and not referenced."""
        if pid is None:
            while self._next_pid in self.processes:
                self._next_pid += 1
            pid = self._next_pid
        made = [v if isinstance(v, FakeVma) else FakeVma(v[0], v[0] + v[1]) for v in vmas]
        proc = FakeProcess(self, pid, comm[:15], ppid, sorted(made, key=lambda v: v.start))
        self.processes[pid] = proc
        proc.write()
        self.write_meminfo()
        return proc

    def remove_process(self, pid: int) -> None:
        """The process exits: its directory disappears."""
        proc = self.processes.pop(pid)
        for f in proc.dir.iterdir():
            f.unlink()
        proc.dir.rmdir()
        self.write_meminfo()

    def page_out(self, pid: int, addrs: np.ndarray) -> int:
        """Move the resident pages among ``addrs`` of ``pid`` to "swap"; returns pages moved."""
        import numpy as np

        proc = self.processes[pid]
        addrs = np.asarray(addrs, dtype=np.uint64)
        moved = 0
        for v in proc.vmas:
            inside = addrs[(addrs >= v.start) & (addrs < v.end)]
            idx = ((inside - np.uint64(v.start)) >> np.uint64(_PAGE_SHIFT)).astype(np.intp)
            idx = idx[v.present[idx]]
            v.present[idx] = False
            v.swapped[idx] = True
            moved += len(idx)
        proc.write()
        self.write_meminfo()
        return moved


@dataclass
class ActuatorCall:
    """One :meth:`RecordingActuator.apply` call."""

    pid: int
    addrs: np.ndarray
    bytes: int


class RecordingActuator(Actuator):
    """An actuator for tests: records every ``apply`` and, given a :class:`FakeProc`, pages the
    pages out in it (so VmRSS/VmSwap and pagemap change as on a real kernel). ``apply`` returns
    the bytes it was asked to move, like ``pageout``."""

    name = "fake"

    def __init__(self, tree: FakeProc | None = None) -> None:
        self.tree = tree
        self.calls: list[ActuatorCall] = []

    def apply(self, pid: int, addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE) -> int:
        import numpy as np

        addrs = np.array(addrs, dtype=np.uint64)
        total = int(np.sum(np.broadcast_to(np.asarray(sizes, dtype=np.uint64), addrs.shape)))
        self.calls.append(ActuatorCall(pid, addrs, total))
        if self.tree is not None and pid in self.tree.processes:
            self.tree.page_out(pid, addrs)
        return total

    @property
    def pages(self) -> int:
        """Pages asked for over all calls."""
        return sum(len(c.addrs) for c in self.calls)
