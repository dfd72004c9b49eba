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
import time
from collections.abc import Callable
from typing import Any


class DeadlineExceeded(Exception):
    """The call did not return within its deadline; it goes on running, abandoned."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not return within {seconds:g} s")
        self.seconds = seconds


class _Job:
    __slots__ = ("fn", "done", "result", "error", "abandoned", "late", "lock", "started")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.late: Callable[[Any, BaseException | None], None] | None = None
        self.lock = threading.Lock()
        #: when the call running now began (a batch restarts the clock per call)
        self.started = time.monotonic()


class BatchStopped(Exception):
    """Call ``index`` of a batch raised ``error``; the calls after it were not made."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"call {index} failed: {error!r}")
        self.index = index
        self.error = error


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
        job = _Job(fn)
        worker = self._submit(job)
        self._wait(job, deadline, lambda: late)
        with self._lock:
            self._idle.append(worker)
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.result

    def _submit(self, job: _Job) -> _Worker:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self.name)
        worker.jobs.put(job)
        return worker

    def _wait(self, job: _Job, deadline: float, late: Callable[[], Any]) -> None:
        """Wait until ``job`` is done, abandoning it once its current call overran."""
        while not job.done.wait(max(0.0, job.started + deadline - time.monotonic())):
            if time.monotonic() < job.started + deadline:
                continue  # a batch moved on to its next call: its clock restarted
            with job.lock:
                if not job.done.is_set():
                    job.abandoned = True
                    job.late = late()
            if job.abandoned:
                with self._lock:
                    self.abandoned += 1
                raise DeadlineExceeded(deadline)

    def call_many(
        self,
        calls: list[Callable[[], Any]],
        deadline: float | None,
        late: Callable[[int], Callable[[Any, BaseException | None], None] | None] | None = None,
    ) -> None:
        """Make ``calls`` one after another on one worker, each within ``deadline`` seconds
        (one thread hand-over for the lot: 40,000 tasks are 40,000 calls).

        Raises :class:`BatchStopped` at the first call that raised (the rest are not made) and
        :class:`DeadlineExceeded` with ``index`` set at the first one that overran (abandoned;
        ``late(index)`` gives its late callback).
        """
        progress = {"index": 0}

        def run_all() -> None:
            for i, fn in enumerate(calls):
                progress["index"] = i
                job.started = time.monotonic()
                try:
                    fn()
                except BaseException as exc:
                    raise BatchStopped(i, exc) from exc
                if job.abandoned:
                    return  # overran: the caller has given up on the rest

        job = _Job(run_all)
        if deadline is None or deadline <= 0:
            run_all()
            return
        worker = self._submit(job)
        try:
            self._wait(job, deadline, lambda: late(progress["index"]) if late else None)
        except DeadlineExceeded as exc:
            exc.index = progress["index"]  # type: ignore[attr-defined]
            raise
        with self._lock:
            self._idle.append(worker)
        if job.error is not None:
            error, job.error = job.error, None
            raise error

    def close(self) -> None:
        """End the idle workers (abandoned ones end when their call returns)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.jobs.put(None)
