"""What cslide keeps between hooks: per-pid params with their state machine, and the engine's own.

Per-pid states (C ``enum pid_param_state``)::

    NONE --start_task--> WORKING --stop_task--> REMOVE --start_task--> WORKING
    NONE --free_pid_params--> freed at once
    WORKING/REMOVE --free_pid_params--> FREE --(engine thread, next loop top)--> freed

New WORKING pids wait on a to-add list that the engine thread merges at the top of each loop,
so hooks never touch the list the thread is walking.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any

from .config import EngineConfig, NodeMem, TaskConfig


class PidState(enum.Enum):
    NONE = "none"
    WORKING = "working"
    REMOVE = "remove"
    FREE = "free"


@dataclass(eq=False)
class CslidePidParams:
    """``task_pid.params`` of a cslide task (C ``struct cslide_pid_params``)."""

    pid: int
    task_name: str
    task: TaskConfig
    state: PidState = PidState.NONE
    #: node -> (hot KiB, cold KiB) at the last statistics
    pages: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: why the last cycle skipped this pid ("" when it was scanned)
    skipped: str = ""
    #: the ``Task`` whose ``stats`` the engine thread refreshes
    task_model: Any = None
    #: the open tracker (engine thread only; kept across cycles, closed when the pid stops)
    tracker: Any = None
    #: streaks of wanted moves, made with the tracker (engine thread only)
    confirmation: Any = None


class PidFactory:
    """The working list and its to-add list (C ``struct cslide_params_factory``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._to_add: list[CslidePidParams] = []
        self.working: list[CslidePidParams] = []  # only the engine thread changes it

    def add(self, p: CslidePidParams) -> None:
        """``start_task``: the pid becomes WORKING; a new one is queued for the engine thread."""
        was = p.state
        p.state = PidState.WORKING
        if was is PidState.NONE:
            with self._lock:
                self._to_add.append(p)

    @staticmethod
    def remove(p: CslidePidParams) -> None:
        """``stop_task``: the engine thread skips the pid from its next look on."""
        if p.state is PidState.WORKING:
            p.state = PidState.REMOVE

    @staticmethod
    def free(p: CslidePidParams) -> None:
        """``free_pid_params``: an unstarted pid just goes; a listed one is freed by the thread."""
        if p.state is not PidState.NONE:
            p.state = PidState.FREE

    def update(self) -> list[CslidePidParams]:
        """Engine thread, loop top: merge new pids (newest first, as C) and drop FREE ones;
        returns the dropped ones."""
        with self._lock:
            new, self._to_add = self._to_add, []
        listed = new[::-1] + self.working
        self.working = [p for p in listed if p.state is not PidState.FREE]
        return [p for p in listed if p.state is PidState.FREE]

    def working_pids(self) -> list[CslidePidParams]:
        return [p for p in self.working if p.state is PidState.WORKING]

    def has_working(self) -> bool:
        """True if any started pid exists, counting ones not merged yet (for the show commands)."""
        with self._lock:
            queued = any(p.state is PidState.WORKING for p in self._to_add)
        return queued or bool(self.working_pids())


@dataclass(eq=False)
class CslideEngineParams:
    """``engine.params`` of a cslide engine (C ``struct cslide_eng_params``)."""

    config: EngineConfig
    host: Any  # etmem_cslide.host.Host (or a test double)
    factory: PidFactory = field(default_factory=PidFactory)
    mem: dict[int, NodeMem] = field(default_factory=dict)
    #: node -> (hot KiB, cold KiB) summed over the working pids at the last statistics
    host_pages: dict[int, tuple[int, int]] = field(default_factory=dict)
    stat_time: float = 0.0
    stat_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    cycles: int = 0
    #: the ``Engine`` whose ``stats`` the engine thread refreshes
    model: Any = None
