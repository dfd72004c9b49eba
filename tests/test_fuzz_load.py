"""Short, bounded fuzz and load runs against a real etmemd (the long runs and their figures:
benchmarks/robustness.py, docs/robustness.md).

Fuzzed requests and object files must each get one well-formed reply, never a traceback in
the log; root clients in parallel must all be answered beside silent clients and an
unprivileged connect flooder.
"""

from __future__ import annotations

import os
import time

import pytest
from etmemd_proc import EtmemdProc
from fuzzing import (
    fuzz_object_files,
    fuzz_requests,
    parallel_root_clients,
    silent_clients,
    start_flooder,
)


@pytest.fixture
def etmemd(tmp_path):
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    d = EtmemdProc(tmp_path, env=env)
    try:
        yield d
    finally:
        d.stop()


def _no_traceback(d: EtmemdProc) -> None:
    log = (d.workdir / f"etmemd-{d.sock}.log").read_bytes()
    assert b"Traceback" not in log, d.logtext()


def test_fuzzed_requests_each_get_one_well_formed_reply(etmemd):
    tally = fuzz_requests(etmemd.sock, 600, seed=13)
    assert tally.malformed == [] and tally.answered == tally.tried == 600
    assert etmemd.proc.poll() is None
    _no_traceback(etmemd)


def test_fuzzed_object_files_are_refused_or_taken_with_one_reply_each(etmemd, tmp_path):
    work = tmp_path / "fz"
    work.mkdir()
    tally = fuzz_object_files(etmemd.sock, work, 150, seed=7)
    assert tally.malformed == [] and tally.answered == tally.tried
    assert etmemd.proc.poll() is None
    _no_traceback(etmemd)


@pytest.mark.root
def test_parallel_root_clients_beside_silent_ones_and_a_flooder_are_all_answered(etmemd):
    silent = silent_clients(etmemd.sock, 10)
    flooder = start_flooder(etmemd.sock, 6.0)
    try:
        time.sleep(0.3)  # the flood is on
        tally = parallel_root_clients(etmemd.sock, 200)
    finally:
        for s in silent:
            s.close()
        _, status = os.waitpid(flooder, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tally.answered == tally.tried == 200
    assert etmemd.proc.poll() is None
    log = etmemd.logtext()
    assert log.count("permission denied") <= 3, "a log line per refused connect"
