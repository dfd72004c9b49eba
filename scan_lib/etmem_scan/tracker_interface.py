"""The one interface every page tracker implements (idle_pages, page_idle, damon, probe, refs).

A tracker is bound to one pid (and a /proc, /sys root) when it is made; each call to
:meth:`Tracker.scan_pass` is one sample over the given VMAs and returns a :class:`PassRefs`
(numpy arrays, one row per page seen).  Passes are turned into counts by
:func:`etmem_scan.pagerefs.accumulate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from .errors import EngineError
from .pagerefs import PassRefs

__all__ = ["PassRefs", "ScanError", "Tracker", "TrackerUnavailable", "VmaRange"]


class ScanError(Exception):
    """A scan pass failed as a whole (bad stream, unreadable file); its result must be discarded."""


class TrackerUnavailable(EngineError):
    """This machine cannot run the tracker (feature missing, permission, in use); the message
    says why."""


@runtime_checkable
class VmaRange(Protocol):
    """What a tracker needs from a VMA: ``procfs.Vma`` satisfies it (read-only: it is frozen).

    Runtime-checkable so that the pagemap readers tell a VMA from a ``(start, end)`` pair.
    """

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class Tracker:
    """Base class of the trackers.

    Subclasses set ``name`` (the ``--tracker`` / config value) and ``capability`` (the name the
    probe reports, e.g. ``"tracker.idle_pages"``), take ``pid`` plus their roots in ``__init__``
    and implement :meth:`scan_pass`.  A tracker may hold an open file between passes; callers
    use it as a context manager or call :meth:`close`.
    """

    name: ClassVar[str] = ""
    capability: ClassVar[str] = ""
    #: True for a tracker whose passes move memory themselves (``probe`` pages a sample out):
    #: callers that must not swap (cslide, a closed gate) refuse it or cap it to 0.
    moves_memory: ClassVar[bool] = False

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        """Sample the pages of ``vmas`` once.

        Returns one row per page seen: ``addr`` (page start, uint64), ``type`` (uint8:
        0 = base page, 1 = PMD-size, 2 = PUD-size) and ``weight`` (uint8: 1 = accessed since the
        last pass, 0 = idle, 3 = dirty).  Rows need not be sorted; an address may appear twice.
        Raises :class:`ScanError` when the pass as a whole failed.
        """
        raise NotImplementedError

    def limit_moves(self, max_bytes: int | None) -> None:
        """Move at most ``max_bytes`` of memory in each following pass (``None``: no cap of
        the caller's). Only trackers with ``moves_memory`` move anything; others ignore it."""

    def counters(self) -> dict[str, int]:
        """Running totals of what the tracker did since it was opened (``probe_*`` for the
        probe); empty for trackers that only read."""
        return {}

    def close(self) -> None:
        """Release what the tracker holds open (files, kdamonds it created). Idempotent."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
