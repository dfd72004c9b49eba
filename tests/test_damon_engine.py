"""The damon engine on the fake DAMON sysfs of tests/test_damon.py (Linux 6.12's behaviour).

The engine is driven through the core (``ObjectStore`` with the installed ``etmem.engines`` entry
points), so the original's config format and the project lifecycle are the real ones.  The
machine's own /sys/kernel/mm/damon is never touched: every root points at the fake tree.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
from etmem_scan import damon
from etmem_scan.damon import DamonTracker
from etmem_sdk import BufferReply, scan
from test_damon import FakeDamon, page, snapshot

from etmem_core.errors import OptError
from etmem_core.lifecycle import ObjectStore

U32 = 2**32 - 1
PROJECT = """[project]
name=reg
scan_type=region
sample_interval=5000
aggr_interval=100000
update_interval=1000000
min_nr_regions=10
max_nr_regions=1000
"""
ENGINE = """[engine]
name=damon
project=reg
min_size=4096
max_size=1073741824
min_acc=0
max_acc=0
min_age=10
max_age=4294967295
action=pageout
"""
ATTRS = {"sample_us": 5000, "aggr_us": 100000, "update_us": 1000000,
         "min_nr_regions": 10, "max_nr_regions": 1000}  # fmt: skip


def task(name: str, pid: int) -> str:
    return f"[task]\nproject=reg\nengine=damon\nname={name}\ntype=pid\nvalue={pid}\n"


def add_process(proc: Path, pid: int) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(f"{pid} (work) S 1 " + " ".join(["0"] * 48) + "\n")
    (d / "comm").write_text("work\n")


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/osrelease").write_text("6.12.48+deb13-amd64\n")
    k = FakeDamon(tmp_path / "sys", proc)
    monkeypatch.setattr(damon, "_write_once", k.write)
    (tmp_path / "sys/devices/system/node/node0").mkdir(parents=True)
    for pid in (101, 102, 103):
        add_process(proc, pid)
    with scan.using_defaults(proc_root=str(proc), sys_root=str(tmp_path / "sys")):
        yield k


@pytest.fixture
def store():
    d = ObjectStore()
    yield d
    d.shutdown()


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str, text: str) -> str:
        path = self.root / name
        path.write_text(text)
        os.chmod(path, 0o600)
        return str(path)


@pytest.fixture
def files(tmp_path):
    return Files(tmp_path)


def nr_kdamonds(k: FakeDamon) -> str:
    return (k.kds / "nr_kdamonds").read_text().strip()


def read(p: Path) -> str:
    return p.read_text().strip()


def three_tasks(files: Files, engine: str = ENGINE) -> str:
    body = PROJECT + engine + "".join(task(f"t{p}", p) for p in (101, 102, 103))
    # one file holds one task (GKeyFile merges groups): the tasks go in files of their own
    f = files("reg.conf", PROJECT + engine)
    return f, [files(f"t{p}.conf", task(f"t{p}", p)) for p in (101, 102, 103)], body


def refused(store: ObjectStore, path: str) -> str:
    with pytest.raises(OptError) as e:
        store.obj_add(path)
    return str(e.value)


def showstats(store: ObjectStore) -> str:
    reply = BufferReply()
    store.engine_cmd("reg", "damon", None, "showstats", reply)
    return reply.text


# -- one kdamond, one target per pid of every task ---------------------------------------------


def test_three_tasks_are_three_targets_of_one_kdamond_with_the_scheme(kernel, store, files):
    main, tasks, _ = three_tasks(files)
    store.obj_add(main)
    for t in tasks:
        store.obj_add(t)
    assert nr_kdamonds(kernel) == "0"  # nothing before project start
    store.project_start("reg")
    ctx = kernel.ctx()
    assert nr_kdamonds(kernel) == "1" and kernel.state() == "on" and kernel.starts == 1
    assert sorted(kernel._pids()) == [101, 102, 103]
    attrs = ctx / "monitoring_attrs"
    assert read(attrs / "intervals/sample_us") == "5000"
    assert read(attrs / "intervals/aggr_us") == "100000"
    assert read(attrs / "intervals/update_us") == "1000000"
    assert read(attrs / "nr_regions/min") == "10" and read(attrs / "nr_regions/max") == "1000"
    assert read(ctx / "schemes/nr_schemes") == "6"
    for slot in range(3):
        stat, act = ctx / f"schemes/{2 * slot}", ctx / f"schemes/{2 * slot + 1}"
        assert read(stat / "action") == "stat"
        assert read(act / "action") == "pageout"
        ap = act / "access_pattern"
        assert [read(ap / k / f) for k in ("sz", "nr_accesses", "age") for f in ("min", "max")] == [
            "4096", "1073741824", "0", "0", "10", str(U32)]  # fmt: skip
        for sc in (stat, act):
            assert read(sc / "filters/0/type") == "target"
            assert read(sc / "filters/0/damon_target_idx") == str(slot)
            assert read(sc / "filters/0/matching") == "N"
        assert read(act / "quotas/ms") == "0" and read(act / "quotas/bytes") == "0"
        assert read(act / "watermarks/metric") == "none"
    store.project_stop("reg")
    assert nr_kdamonds(kernel) == "0"


def test_showstats_gives_each_targets_regions_and_scheme_bytes(kernel, store, files):
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    slot_of = {pid: i for i, pid in enumerate(kernel._pids())}
    kernel.regions[101] = [(page(0), page(256), 0, 50), (page(256), page(512), 7, 2)]
    kernel.kstats[2 * slot_of[101] + 1] = {"nr_tried": 4, "sz_tried": 1 << 20,
                                           "nr_applied": 3, "sz_applied": 3 << 18}  # fmt: skip
    out = showstats(store)
    assert "damon scheme: action pageout" in out
    assert f"kdamond: thread {kernel.thread}, 3 target(s) in all" in out
    assert "set by project reg" in out
    block = out.split("task t101 pid 101")[1].split("task ")[0]
    assert "tried 4 regions 1024 KiB, applied 3 regions 768 KiB" in block
    assert f"{page(0):#x}" in block and "1024 KiB" in block
    rows = [line.split() for line in block.splitlines() if line.strip().startswith("0x")]
    assert [(r[-2], r[-1]) for r in rows] == [("0", "50"), ("7", "2")]
    store.project_stop("reg")


def test_the_refresh_keeps_each_pids_scheme_statistics_for_json(kernel, store, files):
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    first = kernel._pids()[0]
    kernel.kstats[1] = {"nr_applied": 2, "sz_applied": 8192}
    t = task_of(store, f"t{first}")
    t.params.worker.run_once()
    assert t.pids[0].stats["sz_applied"] == 8192 and t.pids[0].stats["nr_applied"] == 2
    store.project_stop("reg")


def test_an_update_that_lists_no_region_for_a_target_is_asked_again(kernel, store, files):
    store.obj_add(files("reg.conf", PROJECT + ENGINE))
    store.obj_add(files("t.conf", task("t101", 101)))
    store.project_start("reg")
    kernel.regions[101] = [[], [], [(page(0), page(4), 0, 30)]]
    kernel.updates = 0
    out = showstats(store)
    assert f"{page(0):#x}" in out and kernel.updates == 3
    store.project_stop("reg")


def test_obj_del_of_a_started_project_removes_the_kdamond(kernel, store, files):
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    assert nr_kdamonds(kernel) == "1"
    for f in reversed(tasks):
        store.obj_del(f)
    store.obj_del(main)
    assert nr_kdamonds(kernel) == "0"


def task_of(store: ObjectStore, name: str):
    proj = store.find_project("reg")
    return next(t for e in proj.engines for t in e.tasks if t.name == name)


def test_a_target_that_exits_is_parked_and_its_scheme_stops_acting(kernel, store, files):
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    first = kernel._pids()[0]  # slot 0 of three: parked, not dropped
    shutil.rmtree(kernel.proc / str(first))
    task_of(store, f"t{first}").params.worker.run_once()  # the refresh frees its target
    assert kernel._pids()[0] == os.getpid() and len(kernel._pids()) == 3
    # the slot now watches etmemd itself: its scheme must never page anything out
    act = kernel.ctx() / "schemes/1"
    assert read(act / "action") == "stat"
    assert read(act / "access_pattern/nr_accesses/min") == str(U32)
    assert read(kernel.ctx() / "schemes/3/action") == "pageout"
    assert kernel.state() == "on" and kernel.starts == 1
    store.project_stop("reg")
    assert nr_kdamonds(kernel) == "0"


# -- sharing the kdamond with the damon tracker --------------------------------------------------


def test_the_engine_joins_the_trackers_kdamond_and_leaves_it_running(kernel, store, files):
    add_process(kernel.proc, 50)
    tr = DamonTracker(50, proc_root=kernel.proc, sys_root=kernel.kds.parents[4],
                      sample_us=5000, aggr_us=100000, update_us=1000000,
                      min_nr_regions=10, max_nr_regions=1000)  # fmt: skip
    thread = read(kernel.kd() / "pid")
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    assert kernel._pids()[0] == 50 and sorted(kernel._pids()[1:]) == [101, 102, 103]
    assert kernel.starts == 1 and read(kernel.kd() / "pid") == thread  # commits, no restart
    assert read(kernel.ctx() / "schemes/1/action") == "stat"  # the tracker's slot never acts
    assert read(kernel.ctx() / "schemes/3/action") == "pageout"
    store.project_stop("reg")
    assert kernel._pids() == [50] and kernel.state() == "on"
    tr.close()
    assert nr_kdamonds(kernel) == "0"


def test_other_monitoring_attributes_than_the_trackers_are_refused_naming_it(kernel, store, files):
    add_process(kernel.proc, 50)
    tr = DamonTracker(50, proc_root=kernel.proc, sys_root=kernel.kds.parents[4])
    before = snapshot(kernel.kds)
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    with pytest.raises(OptError, match="monitoring attributes of the damon tracker"):
        store.project_start("reg")
    assert snapshot(kernel.kds) == before
    tr.close()
    store.project_start("reg")  # alone now: the project's attributes
    with pytest.raises(scan.TrackerUnavailable, match="of project reg"):
        DamonTracker(50, proc_root=kernel.proc, sys_root=kernel.kds.parents[4])
    store.project_stop("reg")


def test_a_kdamond_of_someone_else_is_never_written(kernel, store, files):
    kernel.write(kernel.kds / "nr_kdamonds", 1)
    kernel.write(kernel.kd() / "contexts/nr_contexts", 1)
    kernel._state("on")
    before = snapshot(kernel.kds)
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    with pytest.raises(OptError, match="not ours"):
        store.project_start("reg")
    assert snapshot(kernel.kds) == before


# -- refusals where the machine lacks DAMON -----------------------------------------------------


def test_a_kernel_without_vaddr_is_refused_at_obj_add_without_a_write(kernel, store, files,
                                                                     monkeypatch):  # fmt: skip
    with gzip.open(kernel.proc / "config.gz", "wt") as f:
        f.write("CONFIG_DAMON=y\nCONFIG_DAMON_SYSFS=y\n# CONFIG_DAMON_VADDR is not set\n")
    writes = []
    monkeypatch.setattr(damon, "_write_once", lambda path, value: writes.append(path))
    msg = refused(store, files("reg.conf", PROJECT + ENGINE))
    assert "CONFIG_DAMON_VADDR is off" in msg and "name=damon" in msg
    assert writes == []


def test_no_damon_sysfs_is_refused_at_obj_add(kernel, store, files):
    shutil.rmtree(kernel.kds.parents[1])
    assert "no DAMON sysfs" in refused(store, files("reg.conf", PROJECT + ENGINE))


def test_this_machine_is_refused_and_its_damon_never_written(store, files, monkeypatch):
    def no_write(path, value):
        raise AssertionError(f"tried to write {value!r} to {path}")

    monkeypatch.setattr(damon, "_write_once", no_write)
    reason = scan.damon_refusal("/proc", "/sys")
    if reason is None:
        pytest.skip("this kernel has DAMON vaddr (not the development VM)")
    assert reason in refused(store, files("reg.conf", PROJECT + ENGINE))


# -- config refusals -------------------------------------------------------------------------


def engine_with(**changes: str | None) -> str:
    lines = [ln for ln in ENGINE.splitlines() if ln.split("=")[0] not in changes]
    lines += [f"{k}={v}" for k, v in changes.items() if v is not None]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_acc": "5", "max_acc": "2"}, "min_acc=5: must not exceed max_acc (2)"),
        ({"max_age": "4294967296"}, "max_age=4294967296: must be an integer from 0 to 4294967295"),
        ({"min_size": "-1"}, "min_size=-1: must be an integer from 0"),
        ({"action": "lru_prio"}, "action=lru_prio: must be one of"),
        ({"action": None}, "action: key not set"),
        ({"max_size": None}, "max_size: key not set"),
        ({"wmarks_high": "500"}, "wmarks_high=500: needs wmarks_interval, wmarks_mid, wmarks_low"),
        ({"wmarks_interval": "1000", "wmarks_high": "100", "wmarks_mid": "200",
          "wmarks_low": "50"}, "wmarks_mid=200: must satisfy wmarks_high (100) >= wmarks_mid"),
        ({"wmarks_interval": "1000", "wmarks_high": "1001", "wmarks_mid": "200",
          "wmarks_low": "50"}, "wmarks_high=1001: must be an integer from 0 to 1000"),
        ({"target_node": "0"}, "target_node=0: only goes with action=migrate_hot"),
        ({"action": "migrate_cold"}, "target_node: key not set"),
        ({"action": "migrate_cold", "target_node": "3"}, "target_node=3: no such NUMA node"),
        ({"action": "migrate_hot", "target_node": "0"},
         "action=migrate_hot: not supported here: action migrate_hot on vaddr needs Linux 6.17"),
        ({"quota_ms": "-5"}, "quota_ms=-5: must be an integer from 0 to 4294967295"),
    ],
)  # fmt: skip
def test_bad_engine_keys_are_refused_naming_file_group_key_and_range(
    kernel, store, files, changes, message
):
    msg = refused(store, files("reg.conf", PROJECT + engine_with(**changes)))
    assert "reg.conf: [engine] " + message in msg, msg
    assert nr_kdamonds(kernel) == "0"


def test_a_quota_goal_on_a_kernel_before_6_9_is_refused_naming_the_key(kernel, store, files):
    (kernel.proc / "sys/kernel/osrelease").write_text("6.8.0\n")
    msg = refused(store, files("reg.conf", PROJECT + engine_with(quota_goal_psi_us="1000")))
    assert "[engine] quota_goal_psi_us=1000: not supported here" in msg and "6.9" in msg


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sample_interval", "0", "[project] sample_interval=0: must be at least 1"),
        ("aggr_interval", "1000", "[project] aggr_interval=1000: must be at least sample_interval"),
    ],
)
def test_monitoring_attributes_damon_rejects_are_refused_at_obj_add(
    kernel, store, files, key, value, message
):
    proj = "\n".join(f"{key}={value}" if ln.startswith(key + "=") else ln
                     for ln in PROJECT.splitlines()) + "\n"  # fmt: skip
    assert message in refused(store, files("reg.conf", proj + ENGINE))


def test_a_page_project_is_refused(kernel, store, files):
    proj = "[project]\nname=reg\nloop=1\ninterval=1\nsleep=1\n"
    msg = refused(store, files("r.conf", proj + ENGINE))
    assert "needs a project with scan_type=region" in msg


# -- DAMOS knobs beyond the original --------------------------------------------------------------


def test_quotas_goal_and_watermarks_are_written(kernel, store, files):
    eng = engine_with(quota_sz="67108864", quota_ms="20", quota_reset_interval="500",
                      quota_goal_psi_us="2000", wmarks_interval="100000", wmarks_high="900",
                      wmarks_mid="500", wmarks_low="50")  # fmt: skip
    store.obj_add(files("reg.conf", PROJECT + eng))
    store.obj_add(files("t.conf", task("t101", 101)))
    store.project_start("reg")
    act = kernel.ctx() / "schemes/1"
    assert read(act / "quotas/bytes") == "67108864" and read(act / "quotas/ms") == "20"
    assert read(act / "quotas/reset_interval_ms") == "500"
    assert read(act / "quotas/goals/nr_goals") == "1"
    assert read(act / "quotas/goals/0/target_metric") == "some_mem_psi_us"
    assert read(act / "quotas/goals/0/target_value") == "2000"
    wm = act / "watermarks"
    assert [read(wm / f) for f in ("metric", "interval_us", "high", "mid", "low")] == [
        "free_mem_rate", "100000", "900", "500", "50"]  # fmt: skip
    store.project_stop("reg")


def test_a_quota_alone_gets_a_reset_interval(kernel, store, files):
    store.obj_add(files("reg.conf", PROJECT + engine_with(quota_sz="1048576")))
    store.obj_add(files("t.conf", task("t101", 101)))
    store.project_start("reg")
    assert read(kernel.ctx() / "schemes/1/quotas/reset_interval_ms") == "1000"
    store.project_stop("reg")


def test_a_knob_missing_from_sysfs_fails_the_start_naming_the_key_and_leaves_nothing(
    kernel, store, files
):
    (kernel.proc / "sys/kernel/osrelease").unlink()  # release unknown: sysfs decides
    kernel.goals = False
    store.obj_add(files("reg.conf", PROJECT + engine_with(quota_goal_psi_us="1000")))
    store.obj_add(files("t.conf", task("t101", 101)))
    with pytest.raises(OptError, match=r"quota_goal_psi_us.*quotas/goals/nr_goals"):
        store.project_start("reg")
    assert nr_kdamonds(kernel) == "0"


def test_a_reused_slot_counts_its_scheme_statistics_from_zero(kernel, store, files):
    store.obj_add(files("reg.conf", PROJECT + ENGINE))
    conf = {p: files(f"t{p}.conf", task(f"t{p}", p)) for p in (101, 102, 104)}
    add_process(kernel.proc, 104)
    store.obj_add(conf[101])
    store.obj_add(conf[102])
    store.project_start("reg")
    first = kernel._pids()[0]
    kernel.kstats[1] = {"nr_applied": 9, "sz_applied": 9 << 20}
    assert task_of(store, f"t{first}").pids[0].params.target.stats()["sz_applied"] == 9 << 20
    store.obj_del(conf[first])  # slot 0 parked: its kernel scheme keeps counting
    assert kernel._pids()[0] == os.getpid()
    store.obj_add(conf[104])  # a task added to a started project starts at once
    target = task_of(store, "t104").pids[0].params.target
    assert target.slot == 0
    assert target.stats()["sz_applied"] == 0
    kernel.kstats[1]["sz_applied"] += 4096
    assert target.stats()["sz_applied"] == 4096
    store.project_stop("reg")
    assert nr_kdamonds(kernel) == "0"


def test_a_restarted_kdamond_counts_every_scheme_from_zero_again(kernel, store, files):
    store.obj_add(files("reg.conf", PROJECT + ENGINE))
    conf = {p: files(f"t{p}.conf", task(f"t{p}", p)) for p in (101, 102, 104)}
    add_process(kernel.proc, 104)
    for p in (101, 102):
        store.obj_add(conf[p])
    store.project_start("reg")
    first = kernel._pids()[0]
    kernel.kstats[1] = {"sz_applied": 8192}
    store.obj_del(conf[first])
    store.obj_add(conf[104])  # reuses slot 0: baseline 8192
    target = task_of(store, "t104").pids[0].params.target
    kernel._stop()  # the kdamond ended (e.g. a failed commit); the next read starts it again
    target.regions()
    assert kernel.starts == 2
    assert target.stats()["sz_applied"] == 0  # not 0 - 8192
    store.project_stop("reg")


def test_showstats_answers_from_the_refresh_without_waiting_for_damon(kernel, store, files):
    # Reading regions waits for an aggregation window; under TCG three targets took longer
    # than the 5 s a hook may take, so showstats must not read DAMON once the refresh has.
    main, tasks, _ = three_tasks(files)
    for f in (main, *tasks):
        store.obj_add(f)
    store.project_start("reg")
    kernel.regions[101] = [(page(0), page(4), 3, 0)]
    for p in (101, 102, 103):
        task_of(store, f"t{p}").params.worker.run_once()
    updates = kernel.updates
    out = showstats(store)
    assert kernel.updates == updates
    assert f"{page(0):#x}" in out.split("task t101 pid 101")[1].split("task ")[0]
    store.project_stop("reg")
