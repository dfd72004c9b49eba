"""cslide's engine and task keys (the original's accept/reject cases), on fake sysfs trees with
2, 4 and 6 NUMA nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
from etmem_cslide import config as cc
from etmem_sdk import ConfigError, ConfigSection, Project

ENGINE_OK = {
    "node_pair": "0,1",
    "hot_threshold": "1",
    "node_mig_quota": "1024",
    "node_hot_reserve": "1024",
}
TASK_OK = {"vm_flags": "ht", "anon_only": "no", "ign_host": "yes"}
PAIRS = {2: "0,1", 4: "0,2;1,3", 6: "0,3;1,4;2,5"}


def fake_sys(root: Path, nodes: int, hugepages: int | list[int] = 100) -> Path:
    """``root/devices/system/node/nodeN`` with 2 MiB hugepage counts and a meminfo."""
    counts = hugepages if isinstance(hugepages, list) else [hugepages] * nodes
    for n in range(nodes):
        d = root / f"devices/system/node/node{n}"
        hp = d / "hugepages/hugepages-2048kB"
        hp.mkdir(parents=True)
        (hp / "nr_hugepages").write_text(f"{counts[n]}\n")
        (hp / "free_hugepages").write_text(f"{counts[n] // 2}\n")
        (d / "meminfo").write_text(
            f"Node {n} MemTotal:        4194304 kB\nNode {n} MemFree:         1048576 kB\n"
        )
    (root / "devices/system/node/possible").write_text(f"0-{nodes - 1}\n")
    return root


def project(loop=3) -> Project:
    return Project(name="test", loop=loop, interval=1, sleep=1)


def engine_section(**changes) -> ConfigSection:
    items = dict(ENGINE_OK)
    for k, v in changes.items():
        if v is None:
            items.pop(k, None)
        else:
            items[k] = v
    return ConfigSection(
        "engine", {"project": "test", "name": "cslide", **items}, path="/etc/etmem/eng.config"
    )


def task_section(**changes) -> ConfigSection:
    items = dict(TASK_OK)
    for k, v in changes.items():
        if v is None:
            items.pop(k, None)
        else:
            items[k] = v
    return ConfigSection(
        "task", {"name": "t", "type": "pid", "value": "1", **items}, path="/etc/etmem/task.config"
    )


@pytest.fixture
def sys4(tmp_path):
    return fake_sys(tmp_path, 4)


# --- node_pair --------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [2, 4, 6])
def test_the_originals_node_pairs_for_2_4_6_nodes(tmp_path, nodes):
    sys_root = fake_sys(tmp_path, nodes)
    cfg = cc.parse_engine(engine_section(node_pair=PAIRS[nodes]), project(), sys_root)
    assert cfg.nodes == tuple(range(nodes))
    half = nodes // 2
    assert [(p.hot, p.cold) for p in cfg.pairs] == [(i, i + half) for i in range(half)]
    assert [p.index for p in cfg.pairs] == list(range(half))


def test_first_node_of_a_pair_is_hot(sys4):
    cfg = cc.parse_engine(engine_section(node_pair="2,0;3,1"), project(), sys4)
    assert [(p.hot, p.cold) for p in cfg.pairs] == [(2, 0), (3, 1)]


@pytest.mark.parametrize(
    "value, why",
    [
        ("0,2", "not in any pair"),  # lack of node
        ("0,2;1,3;4,5", "does not exist"),  # node out of range
        ("0x&,2", "not an integer"),  # hot node invalid
        ("0,x&2", "not an integer"),  # cold node invalid
        ("0,2;0,3", "paired twice"),  # node remap
        ("0,", "no cold node"),  # cold node null
        (",;", "no hot node"),  # hot node null
        ("0,2;1", "no cold node"),
        ("-1,2;1,3", "does not exist"),
    ],
)
def test_bad_node_pairs_are_refused(sys4, value, why):
    with pytest.raises(ConfigError) as e:
        cc.parse_engine(engine_section(node_pair=value), project(), sys4)
    msg = str(e.value)
    assert msg.startswith(f"eng.config: [engine] node_pair={value}: ")
    assert why in msg
    assert "this machine has 4 NUMA nodes (node0, node1, node2, node3)" in msg


def test_empty_node_pair_is_refused(sys4):
    with pytest.raises(ConfigError, match=r"node_pair=: must not be empty"):
        cc.parse_engine(engine_section(node_pair=""), project(), sys4)


def test_node_pair_separators_collapse_and_extra_tokens_are_ignored(sys4):
    cfg = cc.parse_engine(engine_section(node_pair="0,2,9;;1,,3 "), project(), sys4)
    assert [(p.hot, p.cold) for p in cfg.pairs] == [(0, 2), (1, 3)]
    cfg = cc.parse_engine(engine_section(node_pair="0,2 1,3"), project(), sys4)
    assert [(p.hot, p.cold) for p in cfg.pairs] == [(0, 2), (1, 3)]


# --- hot_threshold / node_mig_quota / node_hot_reserve ----------------------------------------


@pytest.mark.parametrize("key", ["hot_threshold", "node_mig_quota", "node_hot_reserve"])
@pytest.mark.parametrize("value", ["", "1abc", "-1", "2147483648", "0x10", " 1"])
def test_bad_integers_are_refused(sys4, key, value):
    with pytest.raises(ConfigError) as e:
        cc.parse_engine(engine_section(node_pair="0,2;1,3", **{key: value}), project(), sys4)
    assert str(e.value) == (
        f"eng.config: [engine] {key}={value}: must be an integer from 0 to 2147483647"
    )


@pytest.mark.parametrize(
    "key", ["node_pair", "hot_threshold", "node_mig_quota", "node_hot_reserve"]
)
def test_every_engine_key_is_required(sys4, key):
    with pytest.raises(ConfigError, match=rf"\[engine\] {key}: key not set"):
        cc.parse_engine(engine_section(**{"node_pair": "0,2;1,3", key: None}), project(), sys4)


@pytest.mark.parametrize("key", ["node_mig_quota", "node_hot_reserve"])
@pytest.mark.parametrize("value", [0, 2147483647])
def test_quota_and_reserve_take_0_and_int_max(sys4, key, value):
    cfg = cc.parse_engine(engine_section(node_pair="0,2;1,3", **{key: str(value)}), project(), sys4)
    attr = {"node_mig_quota": "mig_quota", "node_hot_reserve": "hot_reserve"}[key]
    assert getattr(cfg, attr) == value


@pytest.mark.parametrize(
    "value, loop, expected",
    [
        ("0", 3, 0),
        ("1", 3, 1),
        ("10", 3, 10),
        ("11", 3, 10),
        ("2147483647", 3, 10),
        ("2147483647", 1, 4),
        ("7", 120, 7),
    ],
)
def test_hot_threshold_is_clamped_to_loop_times_3_plus_1(sys4, value, loop, expected):
    cfg = cc.parse_engine(
        engine_section(node_pair="0,2;1,3", hot_threshold=value), project(loop), sys4
    )
    assert cfg.hot_threshold == expected
    assert cfg.max_count == 3 * loop


def test_loop_interval_sleep_come_from_the_project(sys4):
    proj = Project(name="test", loop=5, interval=7, sleep=2)
    cfg = cc.parse_engine(engine_section(node_pair="0,2;1,3"), proj, sys4)
    assert (cfg.loop, cfg.interval, cfg.sleep) == (5, 7, 2)


def test_a_project_without_page_scan_is_refused(sys4):
    with pytest.raises(ConfigError, match="scan_type=page"):
        cc.parse_engine(
            engine_section(node_pair="0,2;1,3"),
            Project(name="p", scan_type="psi", interval=1),
            sys4,
        )


# --- machine preconditions at engine add -------------------------------------------------------


@pytest.mark.parametrize(
    "nodes, listed", [(1, "1 NUMA node (node0)"), (3, "3 NUMA nodes (node0, node1, node2)")]
)
def test_odd_node_count_is_refused_saying_what_the_machine_has(tmp_path, nodes, listed):
    sys_root = fake_sys(tmp_path, nodes)
    with pytest.raises(ConfigError) as e:
        cc.parse_engine(engine_section(node_pair="0,1"), project(), sys_root)
    assert str(e.value) == (
        "eng.config: [engine] name=cslide: cslide pairs a hot and a cold NUMA node and needs "
        f"an even number of nodes; this machine has {listed}"
    )


def test_no_node_directory_at_all_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"this machine has 0 NUMA nodes \(no node dir"):
        cc.parse_engine(engine_section(), project(), tmp_path)


def test_a_node_without_hugepages_is_refused_naming_it(tmp_path):
    sys_root = fake_sys(tmp_path, 2, hugepages=[100, 0])
    with pytest.raises(ConfigError) as e:
        cc.parse_engine(engine_section(), project(), sys_root)
    msg = str(e.value)
    assert "node1: nr_hugepages=0" in msg
    assert "node0" not in msg.split("(")[1].split(")")[0]
    assert "memory=normal" in msg


def test_unreadable_hugepage_counts_are_refused(tmp_path):
    sys_root = fake_sys(tmp_path, 2)
    (sys_root / "devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages").unlink()
    with pytest.raises(ConfigError, match="node0: .*nr_hugepages unreadable"):
        cc.parse_engine(engine_section(), project(), sys_root)


def test_memory_normal_needs_no_hugepages(tmp_path):
    sys_root = fake_sys(tmp_path, 2, hugepages=0)
    cfg = cc.parse_engine(engine_section(memory="normal"), project(), sys_root)
    assert cfg.memory == cc.NORMAL
    mem = cc.read_node_mem(sys_root, cfg.nodes, cfg.memory)
    assert mem[0] == cc.NodeMem(total=4194304 * 1024, free=1048576 * 1024)


def test_memory_must_be_hugetlb_or_normal(sys4):
    with pytest.raises(ConfigError, match="memory=thp: must be hugetlb or normal"):
        cc.parse_engine(engine_section(node_pair="0,2;1,3", memory="thp"), project(), sys4)


def test_hugetlb_pools_are_read_in_bytes(tmp_path):
    sys_root = fake_sys(tmp_path, 2, hugepages=[10, 20])
    mem = cc.read_node_mem(sys_root, (0, 1), cc.HUGETLB)
    assert mem[0] == cc.NodeMem(total=10 * cc.HUGE_2M, free=5 * cc.HUGE_2M)
    assert mem[1] == cc.NodeMem(total=20 * cc.HUGE_2M, free=10 * cc.HUGE_2M)


# --- [task] -----------------------------------------------------------------------------------


@pytest.fixture
def eng_cfg(tmp_path):
    return cc.parse_engine(engine_section(), project(), fake_sys(tmp_path, 2))


@pytest.mark.parametrize("value", ["hts", "rd", "ht rd", "ht,rd", "rd ht", "h"])
def test_vm_flags_must_be_exactly_ht(eng_cfg, value):
    with pytest.raises(ConfigError) as e:
        cc.parse_task(task_section(vm_flags=value), eng_cfg)
    assert str(e.value).startswith(f"task.config: [task] vm_flags={value}: must be exactly ht")


def test_empty_vm_flags_is_refused(eng_cfg):
    with pytest.raises(ConfigError, match="vm_flags=: must not be empty"):
        cc.parse_task(task_section(vm_flags=""), eng_cfg)


@pytest.mark.parametrize("key", ["vm_flags", "anon_only", "ign_host"])
def test_every_task_key_is_required(eng_cfg, key):
    with pytest.raises(ConfigError, match=rf"\[task\] {key}: key not set"):
        cc.parse_task(task_section(**{key: None}), eng_cfg)


@pytest.mark.parametrize("key", ["anon_only", "ign_host"])
@pytest.mark.parametrize("value", ["wrong", "", "YES", "No", "yes "])
def test_yes_no_keys_take_only_yes_and_no(eng_cfg, key, value):
    with pytest.raises(ConfigError, match=rf"{key}=.*: must be yes or no"):
        cc.parse_task(task_section(**{key: value}), eng_cfg)


@pytest.mark.parametrize("ign_host, flags", [("yes", 0x03000000), ("no", 0x01000000)])
def test_scan_flags(eng_cfg, ign_host, flags):
    t = cc.parse_task(task_section(ign_host=ign_host, anon_only="yes"), eng_cfg)
    assert t.scan_flags == flags
    assert t.vm_flags == ("ht",)
    assert t.anon_only is True
    assert t.ign_host is (ign_host == "yes")


def test_vm_flags_split_like_the_original():
    assert cc.split_vmflags("ht") == ["ht"]
    assert cc.split_vmflags(" ht") == ["ht"]
    assert cc.split_vmflags("ht rd,wr") == ["ht", "rd", "wr"]
    assert cc.split_vmflags("ht,rd") == ["ht,rd"]  # the first field ends only at a space
    assert cc.split_vmflags("") == []


@pytest.fixture
def normal_cfg(tmp_path):
    return cc.parse_engine(engine_section(memory="normal"), project(), fake_sys(tmp_path, 2, 0))


def test_memory_normal_tasks_take_no_or_other_vm_flags(normal_cfg):
    t = cc.parse_task(task_section(vm_flags=None), normal_cfg)
    assert t.vm_flags == ()
    assert t.scan_flags == cc.SCAN_IGN_HOST  # no SCAN_AS_HUGE outside hugetlb
    t = cc.parse_task(task_section(vm_flags="rd wr"), normal_cfg)
    assert t.vm_flags == ("rd", "wr")


@pytest.mark.parametrize("value", ["ht", "rd ht", "hts", ""])
def test_memory_normal_refuses_ht_and_malformed_flags(normal_cfg, value):
    with pytest.raises(ConfigError, match="vm_flags="):
        cc.parse_task(task_section(vm_flags=value), normal_cfg)


def test_tracker_key_is_optional(eng_cfg):
    assert cc.parse_task(task_section(), eng_cfg).tracker is None
    assert cc.parse_task(task_section(tracker="damon"), eng_cfg).tracker == "damon"


def test_confirm_cycles_is_optional_and_1_to_16(eng_cfg):
    assert cc.parse_task(task_section(), eng_cfg).confirm_cycles is None
    assert cc.parse_task(task_section(confirm_cycles="1"), eng_cfg).confirm_cycles == 1
    assert cc.parse_task(task_section(confirm_cycles="16"), eng_cfg).confirm_cycles == 16


@pytest.mark.parametrize("value", ["0", "17", "-1", "2x", ""])
def test_confirm_cycles_out_of_range_is_refused_naming_the_key_and_range(eng_cfg, value):
    with pytest.raises(
        ConfigError,
        match=rf"task.config: \[task\] confirm_cycles={value}: must be an integer from 1 to 16",
    ):
        cc.parse_task(task_section(confirm_cycles=value), eng_cfg)
