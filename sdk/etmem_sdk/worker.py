"""``PeriodicWorker``: run a per-pid function on a task's target pids every ``interval`` seconds.

This is the Python counterpart of C's ``thread_timer`` + ``thread_pool`` pair used by slide
(``etmemd_pool_adapter.c``): a timer thread waits ``interval`` seconds, refreshes the task's pid
list, hands one work item per pid to at most ``max_threads`` workers, waits until they are all
done, then waits ``interval`` seconds again (so the period is ``interval`` plus the run time and
the first run comes ``interval`` seconds after start, as in C).

Stopping must be prompt (``stop_task`` has one second): every wait in here, and every pause the
per-pid function takes through the ``sleep`` it is given, is an ``Event.wait`` on the stop event,
so a worker in the middle of a ``sleep`` wakes up at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from .errors import TargetGone
from .model import Task, TaskPid

log = logging.getLogger(__name__)

__all__ = ["PeriodicWorker", "Sleep", "WorkerStopped"]


class WorkerStopped(Exception):
    """Raised by a worker's ``sleep`` when the worker is being stopped: unwinds the per-pid run."""


class Sleep:
    """The pause a per-pid function must use: ``sleep(seconds)``.

    Returns after ``seconds``, or raises :class:`WorkerStopped` as soon as the worker is stopped
    (also when it was already stopped before the call).
    """

    def __init__(self, stop_event: threading.Event) -> None:
        self._stop = stop_event

    def __call__(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)) or self._stop.is_set():
            raise WorkerStopped

    @property
    def stopping(self) -> bool:
        """True once the worker was asked to stop (for long loops between sleeps)."""
        return self._stop.is_set()

    def check(self) -> None:
        """Raise :class:`WorkerStopped` if the worker is being stopped."""
        if self._stop.is_set():
            raise WorkerStopped


#: The per-pid function: ``func(task_pid, sleep)``.
PidFunc = Callable[[TaskPid, Sleep], None]
#: Refreshes ``task.pids`` and returns the pids to work on this tick.
RefreshFunc = Callable[[Task], Iterable[TaskPid]]


def _default_refresh(task: Task) -> Iterable[TaskPid]:
    from . import scan  # imported late: only the running worker needs these
    from .targets import refresh_task_pids

    # the scan defaults' /proc, so a policy on a fake tree (etmem_sdk.testing) sees its pids
    result = refresh_task_pids(task, proc_root=scan.defaults().proc_root)
    return task.pids if result is None else result


class PeriodicWorker:
    """Runs ``func(task_pid, sleep)`` for every target pid of ``task`` every ``interval`` seconds.

    ``max_threads`` pids are worked on in parallel (C's thread pool size). ``refresh`` updates the
    task's pid list before each tick (default: :func:`etmem_sdk.targets.refresh_task_pids` under
    ``etmem_sdk.scan.defaults().proc_root``); if it
    raises :class:`TargetGone` the tick does nothing, as C keeps the old list and skips. ``active``
    is consulted before each tick (C runs a tick only while the project is started).

    ``func`` may raise :class:`TargetGone` (the pid exited: quietly ends that pid's run) or
    :class:`WorkerStopped` (from ``sleep``); anything else is logged and the tick carries on
    with the other pids. ``on_error(task_pid, exc)`` is called for those unexpected errors.
    """

    def __init__(
        self,
        task: Task,
        func: PidFunc,
        *,
        interval: float,
        max_threads: int = 1,
        refresh: RefreshFunc | None = None,
        active: Callable[[], bool] | None = None,
        on_error: Callable[[TaskPid, BaseException], None] | None = None,
        name: str | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.task = task
        self.func = func
        self.interval = float(interval)
        self.max_threads = max(1, int(max_threads))
        self.refresh = refresh or _default_refresh
        self.active = active or (lambda: True)
        self.on_error = on_error
        self.name = name or f"etmem-{task.name}"
        self.ticks = 0
        self._stop = threading.Event()
        self.sleep = Sleep(self._stop)
        self._timer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        # the pool's threads, noted by each as it starts, so stop() can wait for them
        self._pool_threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._timer is not None and self._timer.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Start the timer thread; the first tick comes ``interval`` seconds from now."""
        if self._timer is not None:
            raise RuntimeError("worker already started")
        pool = ThreadPoolExecutor(
            self.max_threads,
            thread_name_prefix=f"{self.name}-pid",
            initializer=lambda: self._pool_threads.append(threading.current_thread()),
        )
        timer = threading.Thread(target=self._run, name=self.name, daemon=True)
        try:
            timer.start()
        except BaseException:  # no thread to be had: leave the worker as it was (stop() works)
            pool.shutdown(wait=False)
            raise
        self._pool, self._timer = pool, timer

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the timer and the workers; wait at most ``timeout`` seconds for them.

        Returns True if every thread had finished by then. A worker stuck in a long system call
        is not waited for beyond ``timeout`` (it notices the stop at its next ``sleep``).
        """
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._pool is not None:
            # Queued pids are dropped at once (C's pool drops queued items on stop).
            self._pool.shutdown(wait=False, cancel_futures=True)
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(max(0.0, deadline - time.monotonic()))
        done = timer is None or not timer.is_alive()
        if self._pool is not None:
            for thread in list(self._pool_threads):
                thread.join(max(0.0, deadline - time.monotonic()))
                done = done and not thread.is_alive()
        return done

    def run_once(self) -> None:
        """Run one tick now in the calling thread's control (tests, ``etmem`` one-shot use)."""
        self._tick()

    # -- internals ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.active():
                    self._tick()
            except WorkerStopped:
                break
            except BaseException:  # the task must survive a broken tick, even SystemExit
                log.exception("%s: tick failed", self.name)

    def _tick(self) -> None:
        try:
            pids = list(self.refresh(self.task))
        except TargetGone as exc:
            log.debug("%s: no target this tick: %s", self.name, exc)
            return
        self.ticks += 1
        if not pids or self._stop.is_set():
            return
        pool = self._pool
        if pool is None:  # run_once() before start(): run inline
            for tp in pids:
                self._run_pid(tp)
            return
        # C pushes work items to the head of its list (LIFO): the last pid runs first.
        futures: set[Future[None]] = set()
        try:
            for tp in reversed(pids):
                futures.add(pool.submit(self._run_pid, tp))
        except RuntimeError:  # pool shut down by stop() meanwhile
            return
        pending = futures
        while pending and not self._stop.is_set():
            _, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)

    def _run_pid(self, tp: TaskPid) -> None:
        if self._stop.is_set():
            return
        try:
            self.func(tp, self.sleep)
        except WorkerStopped:
            pass
        except TargetGone as exc:
            log.debug("%s: pid %d gone mid-cycle: %s", self.name, tp.pid, exc)
        except BaseException as exc:  # a policy's SystemExit must not end in a silent Future
            log.exception("%s: pid %d: cycle failed", self.name, tp.pid)
            if self.on_error is not None:
                try:
                    self.on_error(tp, exc)
                except Exception:
                    log.exception("%s: error handler failed", self.name)
