"""Shared fixtures: paths to the golden data and the checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Recorded from the original etmem and kept in the repository (tests/golden/README.md), so a clone
# in any folder runs the suite.
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="session")
def golden() -> Path:
    """The folder of golden data recorded from the original etmem."""
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(autouse=True)
def _private_run_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Records etmemd keeps at run time (the damon monitor's) go to a folder of the test's own,
    inherited by the daemons it starts, never to the machine's /run/etmem."""
    monkeypatch.setenv("ETMEM_RUN_DIR", str(tmp_path_factory.mktemp("run") / "etmem"))


_TREE_SCRIPT = """
import subprocess, sys, threading, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.kill(); k.wait()
"""


@contextmanager
def ready_child(argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``argv`` with pipes to its stdin and stdout and wait for its first line, by which
    it says it is ready (and what it mapped); yields ``(process, line)``, kills it on exit."""
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield proc, proc.stdout.readline()
        finally:
            proc.kill()


@pytest.fixture
def process_tree() -> Iterator[tuple[int, list[int]]]:
    """A live parent with two child processes (and one extra thread, which is not a child):
    yields ``(parent_pid, sorted_child_pids)`` once both children exist; all killed at teardown."""
    kids: list[int] = []
    with ready_child([sys.executable, "-c", _TREE_SCRIPT]) as (parent, line):
        try:
            kids = sorted(int(p) for p in line.split())
            assert len(kids) == 2, "the process tree's parent did not start its children"
            yield parent.pid, kids
        finally:
            for kid in kids:
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run_as(user: int, group: int, work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child that dropped to ``user``:``group`` (no supplementary
    groups); the text it returns. The child never returns into pytest; its failure fails here."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(group)
            os.setuid(user)
            os.write(wfd, work().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        said = r.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    return said


def python_calls(work: Callable[[], object]) -> tuple[object, int]:
    """``work()``'s result and how many Python function calls it made: a count, not a time, so
    tests can tell a per-item Python step from one C-level pass on any machine."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        result = work()
    finally:
        sys.setprofile(None)
    return result, calls
