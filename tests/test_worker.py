"""PeriodicWorker: period, parallelism, prompt stop, error handling (etmem_sdk/worker.py)."""

from __future__ import annotations

import threading
import time

import pytest
from etmem_sdk import TargetGone, Task, TaskPid
from etmem_sdk.worker import PeriodicWorker, Sleep, WorkerStopped


def _task(*pids: int) -> Task:
    task = Task(name="t", type="pid", value=str(pids[0] if pids else 0))
    task.pids = [TaskPid(pid=p, task=task) for p in pids]
    return task


def _static(task: Task):
    return list(task.pids)


def test_first_tick_after_interval_then_periodic():
    task = _task(10)
    seen = threading.Event()
    calls: list[float] = []

    def func(tp, sleep):
        calls.append(time.monotonic())
        seen.set()

    w = PeriodicWorker(task, func, interval=0.2, refresh=_static)
    w.start()
    try:
        assert not calls  # nothing runs before the first interval
        assert seen.wait(5)
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) >= 3
    finally:
        assert w.stop()


def test_refresh_runs_every_tick_and_each_pid_once_per_tick():
    task = _task(1)
    refreshed = []
    ran: list[int] = []

    def refresh(t):
        refreshed.append(1)
        t.pids = [TaskPid(pid=p, task=t) for p in (100 + len(refreshed), 200)]
        return t.pids

    w = PeriodicWorker(task, lambda tp, s: ran.append(tp.pid), interval=1, refresh=refresh)
    w.run_once()
    w.run_once()
    assert len(refreshed) == 2
    assert sorted(ran) == [101, 102, 200, 200]


def test_max_threads_parallelism():
    task = _task(1, 2, 3, 4)
    lock = threading.Lock()
    active = [0, 0]  # current, max
    done = threading.Event()
    count = [0]

    def func(tp, sleep):
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
            count[0] += 1
            if count[0] == 4:
                done.set()

    w = PeriodicWorker(task, func, interval=0.05, max_threads=2, refresh=_static)
    w.start()
    try:
        assert done.wait(5)
    finally:
        w.stop()
    assert active[1] == 2


def test_stop_mid_sleep_within_a_second():
    task = _task(7)
    in_sleep = threading.Event()
    unwound = threading.Event()

    def func(tp, sleep):
        in_sleep.set()
        try:
            sleep(600)
        except WorkerStopped:
            unwound.set()
            raise

    w = PeriodicWorker(task, func, interval=0.05, refresh=_static)
    w.start()
    assert in_sleep.wait(5)
    assert w.stop(timeout=1.0)  # True: every thread had ended by then
    assert unwound.is_set()
    assert not w.running


def test_stop_while_waiting_for_interval():
    w = PeriodicWorker(_task(1), lambda tp, s: None, interval=600, refresh=_static)
    w.start()
    assert w.running
    assert w.stop(timeout=1.0)


def test_target_gone_and_errors_do_not_stop_the_tick():
    task = _task(1, 2, 3)
    ran: list[int] = []
    errors: list[tuple[int, str]] = []

    def func(tp, sleep):
        ran.append(tp.pid)
        if tp.pid == 1:
            raise TargetGone("gone")
        if tp.pid == 2:
            raise ValueError("boom")

    w = PeriodicWorker(
        task,
        func,
        interval=1,
        refresh=_static,
        on_error=lambda tp, e: errors.append((tp.pid, str(e))),
    )
    w.run_once()
    assert sorted(ran) == [1, 2, 3]
    assert errors == [(2, "boom")]


def test_refresh_target_gone_skips_tick():
    def refresh(t):
        raise TargetGone("no such process")

    ran = []
    w = PeriodicWorker(_task(1), lambda tp, s: ran.append(tp), interval=1, refresh=refresh)
    w.run_once()
    assert ran == [] and w.ticks == 0


def test_inactive_project_skips_ticks():
    ran = threading.Event()
    w = PeriodicWorker(
        _task(1), lambda tp, s: ran.set(), interval=0.05, refresh=_static, active=lambda: False
    )
    w.start()
    try:
        assert not ran.wait(0.3)
    finally:
        w.stop()


def test_sleep_raises_when_already_stopped():
    ev = threading.Event()
    s = Sleep(ev)
    s(0)  # not stopped: returns
    ev.set()
    assert s.stopping
    with pytest.raises(WorkerStopped):
        s(5)
    with pytest.raises(WorkerStopped):
        s.check()


def test_bad_interval():
    with pytest.raises(ValueError):
        PeriodicWorker(_task(1), lambda tp, s: None, interval=0)


def test_a_timer_thread_that_cannot_start_leaves_a_stoppable_worker(monkeypatch):
    w = PeriodicWorker(_task(1), lambda tp, s: None, interval=600, refresh=_static)
    real_start = threading.Thread.start

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start"):
        w.start()
    assert not w.running
    monkeypatch.setattr(threading.Thread, "start", real_start)
    w.start()  # threads available again: the worker can still be started
    assert w.running and w.stop(timeout=1.0)
    w3 = PeriodicWorker(_task(1), lambda tp, s: None, interval=600, refresh=_static)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError):
        w3.start()
    assert w3.stop(timeout=0.1)  # after a failed start: nothing to join, nothing raised
