"""slide's pressure guard: swap-out pauses while memory pressure is high, resumes after."""

from __future__ import annotations

import logging

import pytest
from etmem_sdk import BufferReply, ConfigError
from etmem_slide import config, cycle, engine
from fake_cgroups import FakeCgroups
from test_slide import (  # noqa: F401 - fixtures
    B,
    _engine,
    _no_leftover_claims,
    _passrefs,
    _project,
    _run,
    _section,
    _task,
    _write_proc,
    fakes,
)


def _tree(tmp_path, version="v2"):
    return FakeCgroups(tmp_path / "sys", tmp_path, version)


def test_keys_and_ranges():
    cfg = config.parse_task_config(_section(T="1", pressure_limit="5"), _project())
    assert (cfg.pressure_limit, cfg.pressure_window, cfg.pressure_scope) == (5.0, "avg10", "cgroup")
    cfg = config.parse_task_config(
        _section(T="1", pressure_limit="0.5", pressure_window="avg60", pressure_scope="system"),
        _project(),
    )
    assert (cfg.pressure_window, cfg.pressure_scope) == ("avg60", "system")
    assert config.parse_task_config(_section(T="1"), _project()).pressure_limit is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"pressure_limit": "0"},
         "pressure_limit=0: must be a number greater than 0 and at most 100"),
        ({"pressure_limit": "101"}, "pressure_limit=101: must be a number greater than 0"),
        ({"pressure_limit": "1", "pressure_window": "total"},
         "pressure_window=total: must be one of avg10, avg60, avg300"),
        ({"pressure_limit": "1", "pressure_scope": "pod"},
         "pressure_scope=pod: must be cgroup or system"),
        ({"pressure_window": "avg60"}, "pressure_window=avg60: needs pressure_limit"),
    ],
)  # fmt: skip
def test_bad_keys_are_refused_naming_file_group_key_and_range(keys, message):
    with pytest.raises(ConfigError) as err:
        config.parse_task_config(_section(T="1", **keys), _project())
    assert str(err.value).startswith(f"slide.conf: [task] {message}")


def test_pressure_limit_refused_without_psi(tmp_path):
    eng = _engine(tmp_path, _project())
    with pytest.raises(ConfigError, match=r"pressure_limit=5: needs PSI, and .*pressure/memory"):
        _task(eng, "t", 700, pressure_limit="5")


def test_cycle_pauses_before_scanning(tmp_path):
    _write_proc(tmp_path, 4242)
    passes = [_passrefs([B], [0])]
    settings = cycle.CycleSettings(loop=1, sleep=1, T=1)
    result, log = _run(tmp_path, passes, settings, pressure_guard=lambda pid: (7.5, True))
    assert result.paused and not result.swapped and log == [] and result.pressure == 7.5
    result, log = _run(tmp_path, passes, settings, pressure_guard=lambda pid: (0.5, False))
    assert result.swapped and not result.paused and log[-1] == ("reclaim", [B])


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_engine_pauses_on_cgroup_pressure_and_resumes(tmp_path, fakes, caplog, version):  # noqa: F811
    tree = _tree(tmp_path, version)
    tree.add("svc", usage=1)
    _write_proc(tmp_path, 800)
    tree.put_pid(800, "svc")
    tree.set_system_pressure(avg10=50.0)  # the system's is ignored while the cgroup has its own
    eng = _engine(tmp_path, _project(loop=1, interval=1, sleep=1), sys_root=tmp_path / "sys")
    task = _task(eng, "t", 800, pressure_limit="5")
    engine.start_task(eng, task)
    try:
        tree.set_pressure("svc", avg10=6.0)
        with caplog.at_level(logging.INFO):
            task.params.worker.run_once()
            task.params.worker.run_once()
        assert fakes.reclaims == []
        assert task.stats["paused_cycles"] == 2 and task.stats["skipped"] == 2
        out = BufferReply()
        engine.eng_mgt_func(eng, task, "showstats", out)
        assert "pressure guard: pauses at some avg10 >= 5 % (cgroup); paused now: 800" in out.text
        assert "800: 6.00" in out.text
        tree.set_pressure("svc", avg10=4.0, avg60=30.0)  # only the configured window counts
        with caplog.at_level(logging.INFO):
            task.params.worker.run_once()
        assert fakes.reclaims == [(800, [B])]
        out = BufferReply()
        engine.eng_mgt_func(eng, task, "showstats", out)
        assert "paused now: none; 2 cycles paused" in out.text
    finally:
        engine.stop_task(eng, task)
    messages = [r.getMessage() for r in caplog.records if "swap-out" in r.getMessage()]
    assert len(messages) == 2  # once on pausing, once on resuming
    assert "pausing swap-out, memory pressure some avg10 6.00 >= 5" in messages[0]
    assert "resuming swap-out, memory pressure some avg10 4.00 < 5" in messages[1]


def test_system_scope_and_fallback(tmp_path, fakes):  # noqa: F811
    tree = _tree(tmp_path)
    _write_proc(tmp_path, 900)
    tree.put_pid(900, "")  # root cgroup: no memory.pressure of its own -> the system's
    tree.set_system_pressure(avg10=0.0, avg60=9.0)
    eng = _engine(tmp_path, _project(loop=1, interval=1, sleep=1), sys_root=tmp_path / "sys")
    task = _task(eng, "t", 900, pressure_limit="2", pressure_window="avg60")
    engine.start_task(eng, task)
    try:
        task.params.worker.run_once()
        assert fakes.reclaims == [] and task.stats["paused_cycles"] == 1
        tree.set_system_pressure(avg10=0.0, avg60=1.0)
        task.params.worker.run_once()
        assert fakes.reclaims == [(900, [B])]
    finally:
        engine.stop_task(eng, task)


def test_guard_falls_back_to_the_system_when_the_cgroup_goes(tmp_path, monkeypatch):
    from etmem_slide.guard import PressureGuard

    tree = _tree(tmp_path)
    tree.add("svc", usage=1)
    tree.put_pid(950, "svc")
    tree.set_pressure("svc", avg10=9.0)
    tree.set_system_pressure(avg10=1.0)
    guard = PressureGuard(5, sys_root=str(tmp_path / "sys"), proc_root=str(tmp_path))
    assert guard.check(950).paused
    gone = str(tree.pressure_dir("svc") / "memory.pressure")
    monkeypatch.setattr(guard, "_source", lambda pid: gone)
    (tree.pressure_dir("svc") / "memory.pressure").unlink()
    verdict = guard.check(950)
    assert not verdict.paused and verdict.source.endswith("pressure/memory")
