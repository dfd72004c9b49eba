"""pytest plugin for policy authors: run an engine without a daemon, on a fake /proc or a live
child.

Installed with etmem (entry point ``pytest11``), so every test suite in an environment holding
etmem can use these fixtures without importing anything:

``etmem_engine``
    factory: ``etmem_engine(plugin, name="age")`` -> :class:`EngineHarness`, an in-process driver
    (``plugin`` is the module or object holding the hookimpls, or the name of an installed engine)
    that validates ``plugin`` against the hookspecs and calls its hooks in the daemon's order
    (``fill_eng_params``, ``fill_task_params``, ``start_task`` ... ``stop_task``,
    ``clear_task_params``, ``clear_eng_params``). ``harness.tick()`` runs one cycle of every
    task's :class:`~etmem_sdk.worker.PeriodicWorker` now. Everything is stopped and cleared at
    teardown.
``etmem_fake_proc``
    a :class:`FakeProc` builder under ``tmp_path``; while the test runs, :mod:`etmem_sdk.scan`'s
    defaults point at it, with the ``refs`` tracker and the ``fake`` actuator
    (:class:`RecordingActuator`: records every call and pages the pages out *in the fake tree*).
``etmem_workload``
    a live child (:class:`Workload`) with an 8 MiB mapping it keeps touching and a 32 MiB one it
    filled once; killed at teardown. ``spawn_workload(hot_mib, cold_mib)`` for other sizes.
``etmem_swap`` / ``etmem_swapped_workload``
    a swap file switched on for the test (root, on a disk filesystem: ``$ETMEM_TEST_SWAP_DIR``,
    default ``/var/tmp``); with the workload, the workload is killed *before* the swapoff.

The harness and the fake tree never need root; the live fixtures need a real kernel (and root
for swap and for acting on another process).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from etmem_scan.actuator import Actuator
from etmem_scan.machine import PAGE_SIZE

from . import params
from .hooks import EngineHooks
from .model import PAGE_SCAN, BufferReply, ConfigSection, Engine, Project, Task
from .worker import PeriodicWorker

# numpy and the scan facade are imported where they are used: this module is a pytest plugin
# (entry point pytest11), loaded into every pytest run of an environment that has etmem.
if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EngineHarness",
    "FakeProc",
    "FakeProcess",
    "FakeVma",
    "RecordingActuator",
    "Workload",
    "load_entry_point",
    "spawn_workload",
    "swap_on",
]

_PAGE_SHIFT = PAGE_SIZE.bit_length() - 1
_PM_PRESENT = 1 << 63
_PM_SWAP = 1 << 62
#: Never used as fake pids: the daemon's own pid and init are not targets.
_FIRST_FAKE_PID = 4000


# --- fake /proc ---------------------------------------------------------------------------------


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
    present: np.ndarray = field(default=None)  # type: ignore[assignment]
    swapped: np.ndarray = field(default=None)  # type: ignore[assignment]

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


# --- in-process engine driver -------------------------------------------------------------------


def _section(group: str, items: Mapping[str, Any] | None, label: str) -> ConfigSection:
    return ConfigSection(group, {k: str(v) for k, v in (items or {}).items()}, label=label)


def load_entry_point(name: str, group: str = "etmem.engines") -> Any:
    """Import the engine installed as entry point ``name`` (what etmemd would load for
    ``[engine] name=NAME``); ``LookupError`` if none is installed under that name."""
    found = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    if not found:
        raise LookupError(f"no {group!r} entry point named {name!r} is installed")
    return found[0].load()


def _find_worker(params: Any) -> PeriodicWorker | None:
    """The PeriodicWorker an engine keeps in ``task.params`` (attribute or key ``worker``, or any
    attribute holding one)."""
    if params is None:
        return None
    if isinstance(params, PeriodicWorker):
        return params
    if isinstance(params, Mapping):
        candidates = list(params.values())
    else:
        candidates = list(getattr(params, "__dict__", {}).values())
        candidates += [getattr(params, s, None) for s in getattr(type(params), "__slots__", ())]
    return next((c for c in candidates if isinstance(c, PeriodicWorker)), None)


class EngineHarness:
    """Drive one engine plugin the way etmemd does, in this process, without etmem_core.

    The plugin is validated with pluggy against the hookspecs (a misspelt hook or argument fails
    here as it would in the daemon). Core keys get light checks only (integers are integers);
    the daemon's full rules apply once the policy runs under etmemd (see
    docs/writing-a-policy.md for driving a real etmemd from a test).
    """

    def __init__(self, plugin: Any, name: str | None = None) -> None:
        if isinstance(plugin, str):  # an installed engine, by its entry-point name
            name = name or plugin
            plugin = load_entry_point(plugin)
        self.name = name or "engine"
        #: the plugin's hooks, validated as the daemon's registry validates them
        self.hooks = EngineHooks(plugin)
        self.pm = self.hooks.pm
        self.implements = self.hooks.implemented
        self.project: Project | None = None
        self.engine: Engine | None = None

    @property
    def hook(self) -> Any:
        """The pluggy hook relay of the plugin."""
        return self.pm.hook

    def _call(self, hook: Callable[..., None], /, **kwargs: Any) -> None:
        """``hook`` (an :class:`EngineHooks` method) if the plugin implements it."""
        if hook.__name__ in self.implements:
            hook(self.hooks, **kwargs)

    def add(
        self,
        project: Mapping[str, Any] | None = None,
        engine: Mapping[str, Any] | None = None,
        tasks: Sequence[Mapping[str, Any]] = (),
        *,
        label: str = "test.conf",
    ) -> Engine:
        """``obj add`` of one project with this engine and ``tasks``; returns the engine.

        Project keys default to ``loop=1``, ``sleep=0`` and ``interval=3600`` -- so the worker's
        own timer stays quiet and :meth:`tick` decides when cycles happen; give ``interval=1``
        to let it run by itself. Task keys default to ``name=task<N>``, ``type=pid``.
        """
        if self.engine is not None:
            raise RuntimeError("this harness already holds an engine; make another harness")
        pkeys = {"name": "test", "scan_type": PAGE_SCAN, "loop": 1, "interval": 3600, "sleep": 0}
        pkeys.update(project or {})
        psec = _section("project", pkeys, label)
        proj = Project(
            name=psec["name"],
            scan_type=psec["scan_type"],
            loop=params.get_int(psec, "loop", 1),
            interval=params.get_int(psec, "interval", 1),
            sleep=params.get_int(psec, "sleep", 0),
            sysmem_threshold=params.get_int(psec, "sysmem_threshold", -1, 100, required=False)
            if "sysmem_threshold" in psec
            else -1,
            config=psec,
        )
        esec = _section(
            "engine", {"name": self.name, "project": proj.name, **(engine or {})}, label
        )
        eng = Engine(
            name=self.name,
            kind=self.name,
            project=proj,
            config=esec,
            hooks=self.hooks,
            implements=self.implements,
        )
        proj.engines.insert(0, eng)
        self._call(EngineHooks.fill_eng_params, engine=eng, config=esec)
        self.project, self.engine = proj, eng
        for n, keys in enumerate(tasks, 1):
            self.add_task(keys, label=label, default_name=f"task{n}")
        return eng

    def add_task(
        self, keys: Mapping[str, Any], *, label: str = "test.conf", default_name: str = "task"
    ) -> Task:
        """Add one task (``fill_task_params``; ``start_task`` too if started)."""
        eng, proj = self._need()
        tkeys = {"name": default_name, "type": "pid", "project": proj.name, "engine": self.name}
        tkeys.update(keys)
        tsec = _section("task", tkeys, label)
        task = Task(
            name=tsec["name"],
            type=params.get_choice(tsec, "type", ("pid", "name")),
            value=params.get_str(tsec, "value"),
            max_threads=params.get_int(tsec, "max_threads", 1, required=False, default=1),
            swap_flag=params.get_yes_no(tsec, "swap_flag", required=False, default=False),
            engine=eng,
            config=tsec,
        )
        self._call(EngineHooks.fill_task_params, task=task, config=tsec)
        eng.tasks.insert(0, task)
        if proj.start:
            self._call(EngineHooks.start_task, engine=eng, task=task)
        return task

    def _need(self) -> tuple[Engine, Project]:
        if self.engine is None or self.project is None:
            raise RuntimeError("add() a project first")
        return self.engine, self.project

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (default: the only one)."""
        eng, _ = self._need()
        if name is None:
            if len(eng.tasks) != 1:
                raise ValueError(f"{len(eng.tasks)} tasks: name one")
            return eng.tasks[0]
        found = eng.find_task(name)
        if found is None:
            raise KeyError(name)
        return found

    def start(self) -> None:
        """``project start``: ``start_task`` for every task."""
        eng, proj = self._need()
        if "start_task" not in self.implements:
            raise RuntimeError(f"engine {self.name} has no start_task: etmemd could not start it")
        for task in reversed(eng.tasks):  # oldest first
            self._call(EngineHooks.start_task, engine=eng, task=task)
        proj.start = True

    def tick(self, times: int = 1) -> None:
        """Run ``times`` cycles of every task's worker now, in order, waiting for each.

        Works for engines that keep their :class:`~etmem_sdk.worker.PeriodicWorker` in
        ``task.params`` (as an attribute, or under a ``worker`` key).
        """
        eng, proj = self._need()
        if not proj.start:
            raise RuntimeError("start() the project first")
        workers = []
        for task in reversed(eng.tasks):
            w = _find_worker(task.params)
            if w is None:
                raise RuntimeError(f"task {task.name}: no PeriodicWorker in task.params to tick")
            workers.append(w)
        for _ in range(times):
            for w in workers:
                w.run_once()

    def command(self, cmd: str, task: str | None = None) -> str:
        """``etmem engine CMD [-t TASK]``: the private command's output as text."""
        eng, _ = self._need()
        reply = BufferReply()
        tk = self.task(task) if task is not None else None
        self.hooks.eng_mgt_func(engine=eng, task=tk, cmd=cmd, reply=reply)
        return reply.text

    def stop(self) -> None:
        """``project stop``: ``stop_task`` for every task."""
        eng, proj = self._need()
        if not proj.start:
            return
        for task in eng.tasks:
            self._call(EngineHooks.stop_task, engine=eng, task=task)
        proj.start = False

    def remove(self) -> None:
        """``obj del`` of everything: stop, then ``clear_task_params`` and ``clear_eng_params``."""
        if self.engine is None:
            return
        eng = self.engine
        try:
            self.stop()
        finally:
            for task in list(eng.tasks):
                self._call(EngineHooks.clear_task_params, task=task)
                eng.tasks.remove(task)
            self._call(EngineHooks.clear_eng_params, engine=eng)
            self.engine = self.project = None


# --- live processes and swap --------------------------------------------------------------------


@dataclass
class Workload:
    """A running ``etmem_sdk._workload`` child: ``hot`` and ``cold`` are ``(start, end)``."""

    proc: subprocess.Popen
    hot: tuple[int, int]
    cold: tuple[int, int]
    #: with ``file=``: the ``file_ro``, ``file_rw`` and ``shared`` mappings, as ``(start, end)``
    extra: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: with ``interleave=N``: one mapping (``hot`` == ``cold``) where every Nth page is hot
    interleave: int = 0

    def pages(self, which: str = "cold") -> np.ndarray:
        """Addresses (uint64) of the ``"hot"`` or ``"cold"`` pages -- with ``interleave``, the
        hot ones are every Nth page of the one mapping and the cold ones the rest."""
        import numpy as np

        start, end = getattr(self, which)
        addrs = np.arange(start, end, PAGE_SIZE, dtype=np.uint64)
        if not self.interleave:
            return addrs
        hot = (np.arange(addrs.size) % self.interleave) == 0
        return addrs[hot] if which == "hot" else addrs[~hot]

    def resident_of(self, which: str = "cold") -> int:
        """How many of :meth:`pages` are resident (present bits, per page)."""
        import numpy as np

        from . import scan

        present = scan.present_pages(self.pid, [getattr(self, which)], proc_root="/proc")
        return int(np.isin(self.pages(which), present).sum())

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def status(self) -> dict[str, int]:
        """Its ``/proc/PID/status`` numbers (``VmRSS``, ``VmSwap`` in kB)."""
        from . import scan

        return scan.read_status(self.pid, proc_root="/proc")

    def resident(self, which: str = "cold") -> int:
        """Resident pages of the ``"hot"`` or ``"cold"`` mapping."""
        from . import scan

        return len(scan.present_pages(self.pid, [getattr(self, which)], proc_root="/proc"))

    def kill(self) -> None:
        """SIGKILL it and reap it (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def spawn_workload(
    hot_mib: int = 8,
    cold_mib: int = 32,
    period: float = 0.05,
    file: str | None = None,
    *,
    interleave: int = 0,
    size_mib: int = 64,
) -> Iterator[Workload]:
    """Start a workload child (see :mod:`etmem_sdk._workload`); it is killed on exit.

    With ``file``, the child also maps that file privately (read-only and writable) and one
    page of shared anonymous memory, for tests of the "anonymous" rule. With ``interleave=N``
    it holds one ``size_mib`` mapping where every Nth page is hot instead (``hot_mib`` and
    ``cold_mib`` are then unused).
    """
    cmd = [sys.executable, "-m", "etmem_sdk._workload", "--hot-mib", str(hot_mib),
           "--cold-mib", str(cold_mib), "--period", str(period)]  # fmt: skip
    if file:
        cmd += ["--file", file]
    if interleave:
        cmd += ["--interleave", str(interleave), "--size-mib", str(size_mib)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    w: Workload | None = None
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"workload exited early (status {proc.wait()})")
        info = json.loads(line)
        extra = {k: tuple(v) for k, v in info.get("extra", {}).items()}
        w = Workload(
            proc, tuple(info["hot"]), tuple(info["cold"]), extra, info.get("interleave", 0)
        )
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _fs_type(path: Path) -> str:
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype


@contextlib.contextmanager
def swap_on(
    size_mib: int = 256,
    directory: str | os.PathLike[str] | None = None,
    *,
    priority: int | None = None,
) -> Iterator[Path]:
    """A swap file switched on for the block; switched off and deleted after, even on failure.

    ``priority`` (``swapon -p``, up to 32767): pages go to the highest-priority area first, so a
    test that must not lose its pages to another test's swapoff gives its own file the highest.

    Needs root (skips otherwise) and a disk filesystem (swap files on tmpfs are refused):
    ``directory`` defaults to ``$ETMEM_TEST_SWAP_DIR`` or ``/var/tmp``. With
    ``$ETMEM_TEST_SWAP_DEVICE`` set, that device (already on) is used instead. Kill processes whose
    memory went to this swap *before* leaving the block, or swapoff reads it all back.
    """
    device = os.environ.get("ETMEM_TEST_SWAP_DEVICE")
    if device:
        # A machine without a disk (the QEMU test bed) provides a swap device that is on already.
        yield Path(device)
        return
    if os.geteuid() != 0:
        pytest.skip("a swap file needs root")
    where = Path(directory or os.environ.get("ETMEM_TEST_SWAP_DIR", "/var/tmp"))
    if _fs_type(where) in ("tmpfs", "ramfs", ""):
        pytest.fail(f"{where} is not on a disk filesystem; set ETMEM_TEST_SWAP_DIR")
    path = where / f"etmem-sdk-swap-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    on = False
    try:
        subprocess.run(["fallocate", "-l", f"{size_mib}M", str(path)], check=True)
        path.chmod(0o600)
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
        prio = [] if priority is None else ["-p", str(priority)]
        subprocess.run(["swapon", *prio, str(path)], check=True)
        on = True
        yield path
    finally:
        if on:
            subprocess.run(["swapoff", str(path)], check=False)
        path.unlink(missing_ok=True)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def etmem_engine() -> Iterator[Any]:
    """Factory ``etmem_engine(plugin, name="engine") -> EngineHarness``; all removed at teardown."""
    made: list[EngineHarness] = []

    def make(plugin: Any, name: str | None = None) -> EngineHarness:
        harness = EngineHarness(plugin, name)
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        harness.remove()


@pytest.fixture
def etmem_fake_proc(tmp_path: Path) -> Iterator[FakeProc]:
    """A :class:`FakeProc` under ``tmp_path``, made the scan defaults for the test: policies
    see its processes, the ``refs`` tracker and the ``fake`` :class:`RecordingActuator`
    (``tree.actuator``)."""
    from . import scan

    tree = FakeProc(tmp_path / "proc")
    recorder = RecordingActuator(tree)
    tree.actuator = recorder
    scan.register_actuator("fake", lambda **_kw: recorder)
    try:
        with scan.using_defaults(
            proc_root=tree.proc_root, sys_root=str(tree.sys_root), tracker="refs", actuator="fake"
        ):
            yield tree
    finally:
        scan.unregister("fake")


@pytest.fixture
def etmem_workload() -> Iterator[Workload]:
    """A live child with an 8 MiB hot mapping and a 32 MiB cold one; killed at teardown."""
    with spawn_workload() as w:
        yield w


@pytest.fixture
def etmem_swap() -> Iterator[Path]:
    """A 256 MiB swap file, on for the test (root only)."""
    with swap_on() as path:
        yield path


@pytest.fixture
def etmem_swapped_workload() -> Iterator[Workload]:
    """``etmem_workload`` while ``etmem_swap`` is on; the workload dies before the swapoff."""
    with swap_on(), spawn_workload() as w:
        yield w
