"""The machine as cslide sees it: node pools, VMAs, trackers, move_pages — all through the
SDK's scan facade (``etmem_sdk.scan``).

One object so the engine loop can be run against fake /proc and /sys trees with an injected
tracker and move_pages (tests), and against the real kernel otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from etmem_sdk import EngineError, scan

from .config import HUGETLB, NodeMem, TaskConfig, read_node_mem

PAGE_SIZE = scan.PAGE_SIZE


def _default_proc_root() -> str:
    return scan.defaults().proc_root


def _default_sys_root() -> str:
    return scan.defaults().sys_root


@dataclass
class Host:
    """Real-kernel access rooted at ``proc_root``/``sys_root``: the SDK's scan defaults when the
    host is made (at ``fill_eng_params``), so etmemd.toml and the SDK's fake-tree fixtures
    choose cslide's /proc and /sys as they choose every engine's."""

    proc_root: str | Path = field(default_factory=_default_proc_root)
    sys_root: str | Path = field(default_factory=_default_sys_root)

    def node_mem(self, nodes: tuple[int, ...], memory: str) -> dict[int, NodeMem]:
        return read_node_mem(self.sys_root, nodes, memory)

    def read_vmas(self, pid: int, task: TaskConfig) -> list:
        flags = list(task.vm_flags) or None
        return scan.read_vmas(
            pid, vmflags=flags, anon_only=task.anon_only, proc_root=self.proc_root
        )

    def capabilities(self) -> scan.Capabilities:
        """The capability probe's verdicts for this host's roots."""
        return scan.capabilities(self.proc_root, self.sys_root)

    def tracker_name(self, task: TaskConfig, memory: str) -> str:
        """The tracker the task will use, chosen by the SDK for a migrating engine: the task's
        ``tracker=`` key, else etmemd.toml's default, else the most precise one that works here
        -- never ``probe`` (it swaps), and for hugetlb memory only one that sees hugetlb
        accesses (``idle_pages``, ``damon``). Raises ``EngineError`` saying why none fits."""
        try:
            return scan.choose_tracker(
                task.tracker, purpose="migrate", memory=memory, caps=self.capabilities()
            )
        except scan.NothingUsable as e:
            hint = ""
            if memory == HUGETLB:
                hint = " (hugetlb accesses need idle_pages, or DAMON with vaddr on a stock kernel)"
            raise EngineError(
                f"cslide: no tracker for memory={memory} works here: {e}{hint}"
            ) from e

    def check_tracker(self, task: TaskConfig, memory: str) -> str:
        """The tracker the task will use; raises ``EngineError`` saying why it cannot work here."""
        return self.tracker_name(task, memory)

    def open_tracker(self, pid: int, task: TaskConfig, memory: str):
        """A tracker bound to ``pid`` with the task's idle_pages scan flags (closed by the
        caller)."""
        return scan.open_tracker(
            self.tracker_name(task, memory),
            pid,
            proc_root=self.proc_root,
            sys_root=self.sys_root,
            flags=task.scan_flags,
            **self.tracker_options(pid),
        )

    def tracker_options(self, pid: int) -> dict:
        """Extra tracker keywords (tests hand the idle_pages tracker a fake file here)."""
        return {}

    def move_pages(self, pid: int, addrs: np.ndarray, node: int | None) -> np.ndarray:
        """Query (``node=None``) or move pages with MPOL_MF_MOVE_ALL, in batches; the per-page
        status (node, or negative errno)."""
        if node is None:
            return scan.query_nodes(pid, addrs)
        return scan.move_pages(pid, addrs, node, scan.MPOL_MF_MOVE_ALL)

    def affinity(self) -> set[int]:
        """The calling thread's CPU set."""
        return os.sched_getaffinity(0)

    def set_affinity(self, cpus: set[int]) -> None:
        """Best effort: set the calling thread's CPU set (0 = this thread on Linux)."""
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass

    def run_on_node(self, node: int) -> None:
        """Run the calling thread on ``node``'s CPUs (the original's ``numa_run_on_node``).
        A node without CPUs, or an unreadable cpulist, changes nothing."""
        try:
            text = (Path(self.sys_root) / f"devices/system/node/node{node}/cpulist").read_text()
        except OSError:
            return
        cpus = set(scan.parse_node_list(text.strip())) if text.strip() else set()
        if cpus:
            self.set_affinity(cpus)
