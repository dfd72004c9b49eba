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

The pieces live in :mod:`.fake_proc`, :mod:`.harness` and :mod:`.live`; this module holds the
fixtures and re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fake_proc import FakeProc, FakeProcess, FakeVma, RecordingActuator
from .harness import EngineHarness, load_entry_point
from .live import Workload, spawn_workload, swap_on

# numpy and the scan facade are imported where they are used: this module is a pytest plugin
# (entry point pytest11), loaded into every pytest run of an environment that has etmem.

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
    from .. import scan

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
