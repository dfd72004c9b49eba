"""The age policy on a fake /proc tree (etmem_sdk.testing's etmem_fake_proc + etmem_engine)."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_plugin_age import engine as age
from etmem_sdk import ConfigError, EngineError, scan

MIB = 1 << 20
PAGES_PER_MIB = MIB // scan.PAGE_SIZE
HOT, COLD = 0x10000000, 0x20000000


@pytest.fixture
def target(etmem_fake_proc):
    """A fake process: 8 MiB it keeps touching, 32 MiB it never touches."""
    p = etmem_fake_proc.add_process(comm="db", vmas=[(HOT, 8 * MIB), (COLD, 32 * MIB)])
    p.touch(p.vma_at(HOT))
    return p


def start(etmem_engine, pid, **keys):
    h = etmem_engine(age, name="age")
    h.add(tasks=[{"value": pid, **keys}])
    h.start()
    return h


def test_cold_pages_go_after_idle_cycles_and_hot_ones_stay(etmem_engine, etmem_fake_proc, target):
    h = start(etmem_engine, target.pid, idle_cycles=2, max_mib=1024)
    h.tick()
    assert etmem_fake_proc.actuator.calls == []  # one idle cycle is not enough
    h.tick()
    calls = etmem_fake_proc.actuator.calls
    assert len(calls) == 1 and calls[0].pid == target.pid
    addrs = calls[0].addrs
    assert len(addrs) == 32 * PAGES_PER_MIB
    assert addrs.min() == COLD and addrs.max() == COLD + 32 * MIB - scan.PAGE_SIZE
    # the fake kernel moved them: VmRSS down, VmSwap up, the hot mapping untouched
    status = scan.read_status(target.pid)
    assert status["VmSwap"] == 32 * 1024 and status["VmRSS"] == 8 * 1024
    stats = h.task().stats
    assert stats["paged_out_pages"] == 32 * PAGES_PER_MIB
    assert stats["paged_out_bytes"] == 32 * MIB
    assert stats["cycles"] == 2 and stats["tracker"] == "refs" and stats["actuator"] == "fake"
    h.tick(3)  # nothing left to move: the cold pages are out, the hot ones keep being touched
    assert len(etmem_fake_proc.actuator.calls) == 1


def test_at_most_max_mib_per_cycle_oldest_first(etmem_engine, etmem_fake_proc, target):
    h = start(etmem_engine, target.pid, idle_cycles=1, max_mib=8)
    h.tick()
    h.tick()
    h.tick()
    sizes = [len(c.addrs) for c in etmem_fake_proc.actuator.calls]
    assert sizes == [8 * PAGES_PER_MIB] * 3
    moved = np.concatenate([c.addrs for c in etmem_fake_proc.actuator.calls])
    assert len(np.unique(moved)) == len(moved)  # never the same page twice
    assert scan.read_status(target.pid)["VmSwap"] == 24 * 1024


def test_a_mapping_that_cools_down_follows(etmem_engine, etmem_fake_proc, target):
    h = start(etmem_engine, target.pid, idle_cycles=2, max_mib=1024)
    h.tick(2)  # the cold mapping goes
    target.touch(target.vma_at(HOT), referenced=False)
    h.tick()
    assert len(etmem_fake_proc.actuator.calls) == 1  # one idle cycle for the hot one so far
    h.tick()
    last = etmem_fake_proc.actuator.calls[-1].addrs
    assert last.min() == HOT and len(last) == 8 * PAGES_PER_MIB


def test_showstats(etmem_engine, etmem_fake_proc, target):
    h = start(etmem_engine, target.pid, idle_cycles=1)
    h.tick()
    text = h.command("showstats")
    assert "task task1: tracker refs, actuator fake, idle_cycles 1, max_mib 64" in text
    assert f"{target.pid:<10}" in text
    assert f"paged_out_pages {32 * PAGES_PER_MIB}" in text
    assert h.command("showstats", task="task1") == text
    with pytest.raises(EngineError, match="unknown command 'frobnicate'"):
        h.command("frobnicate")


def test_target_exit_is_not_an_error(etmem_engine, etmem_fake_proc, target):
    h = start(etmem_engine, target.pid, idle_cycles=1)
    h.tick()
    etmem_fake_proc.remove_process(target.pid)
    h.tick()
    assert h.task().pids == [] and h.task().stats["errors"] == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("idle_cycles", "0", "test.conf: [task] idle_cycles=0: must be an integer from 1 to 1000"),
        ("max_mib", "lots", "test.conf: [task] max_mib=lots: must be an integer from 1 to 1048576"),
        ("tracker", "psychic", "test.conf: [task] tracker=psychic: must be one of idle_pages, "),
        ("actuator", "migrate", "test.conf: [task] actuator=migrate: must be one of swap_pages, "),
    ],
)
def test_keys_are_validated(etmem_engine, etmem_fake_proc, target, key, value, message):
    h = etmem_engine(age, name="age")
    with pytest.raises(ConfigError) as err:
        h.add(tasks=[{"value": target.pid, key: value}])
    assert str(err.value).startswith(message)


def test_a_forced_tracker_missing_here_fails_the_start(etmem_engine, etmem_fake_proc, target):
    h = etmem_engine(age, name="age")
    h.add(tasks=[{"value": target.pid, "tracker": "idle_pages"}])
    with pytest.raises(EngineError, match="tracker idle_pages .* not usable here: etmem_scan"):
        h.start()


def test_age_arithmetic():
    refs = scan.PageRefs(
        np.array([0x1000, 0x2000, 0x3000], np.uint64),
        np.zeros(3, np.uint8),
        np.array([0, 1, 0], np.int32),
    )
    addr, ages = age.age_pages(
        np.array([0x1000, 0x2000], np.uint64), np.array([4, 9], np.uint16), refs
    )
    assert addr.tolist() == [0x1000, 0x2000, 0x3000] and ages.tolist() == [5, 0, 1]
    chosen = age.choose_pages(np.array([5, 0, 1, 7], np.uint16), np.zeros(4, np.uint8), 1, 2 * 4096)
    assert chosen.tolist() == [0, 3]  # the two oldest fit the budget
