"""Calling engine code with a deadline: a hook that does not return in time is abandoned.

Python cannot stop a thread, so the hook runs on a worker thread and the caller waits for it
with a timeout. Workers are reused (an ``obj add`` of 40,000 tasks makes 40,000 calls, and a
new thread per call would cost more than the calls); a worker whose hook overran is left to
finish on its own and then runs the ``late`` callback (e.g. to undo what the hook did after
the caller stopped waiting), and a fresh worker takes its place.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class DeadlineExceeded(Exception):
    """The call did not return within its deadline; it goes on running, abandoned."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not return within {seconds:g} s")
        self.seconds = seconds


class _Job:
    __slots__ = ("fn", "done", "result", "error", "abandoned", "late", "lock")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.late: Callable[[Any, BaseException | None], None] | None = None
        self.lock = threading.Lock()


class _Worker:
    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job.result = job.fn()
            except BaseException as exc:  # handed to the caller, who decides what it means
                job.error = exc
            with job.lock:
                job.done.set()
                late = job.late if job.abandoned else None
                abandoned = job.abandoned
            if abandoned:
                if late is not None:
                    try:
                        late(job.result, job.error)
                    except BaseException:  # noqa: S110 - nobody is left to tell
                        pass
                return  # the runner has replaced this worker


class Runner:
    """Run callables with a deadline on reusable worker threads (one call at a time per
    worker; concurrent callers get workers of their own)."""

    def __init__(self, name: str = "etmemd-hook") -> None:
        self.name = name
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        #: calls abandoned so far and still running
        self.abandoned = 0

    def call(
        self,
        fn: Callable[[], Any],
        deadline: float | None,
        late: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Any:
        """``fn()``'s result (or its exception), if it returns within ``deadline`` seconds.

        Otherwise raise :class:`DeadlineExceeded`; ``late(result, error)`` then runs on the
        abandoned thread once ``fn`` does return. ``deadline`` None or <= 0: call inline.
        """
        if deadline is None or deadline <= 0:
            return fn()
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self.name)
        job = _Job(fn)
        worker.jobs.put(job)
        if not job.done.wait(deadline):
            with job.lock:
                if not job.done.is_set():
                    job.abandoned = True
                    job.late = late
            if job.abandoned:
                with self._lock:
                    self.abandoned += 1
                raise DeadlineExceeded(deadline)
        with self._lock:
            self._idle.append(worker)
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.result

    def close(self) -> None:
        """End the idle workers (abandoned ones end when their call returns)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.jobs.put(None)
