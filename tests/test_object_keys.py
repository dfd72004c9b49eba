"""etmem_core.object_keys: every project and task common-key value the original's tests accept or
reject (the original's etmem_project_ops_llt and etmem_task_ops_llt tests,
etmemd_project.c, etmemd_task.c), and that each rejection names the key."""

from __future__ import annotations

import logging
import re

import pytest
from etmem_sdk import ConfigError, ConfigSection, Project, Task

from etmem_core.object_keys import (
    ObjectNameError,
    engine_identity,
    is_plain_name,
    object_name,
    parse_project,
    parse_task,
    project_identity,
    task_identity,
)
from etmem_core.objfile import parse_object_data

BASE_PROJECT = {"name": "test", "scan_type": "page", "loop": "1", "interval": "1", "sleep": "1"}
BASE_TASK = {"project": "test", "engine": "slide", "name": "t", "type": "pid", "value": "1"}


def project(**changes: str | None) -> ConfigSection:
    items = {**BASE_PROJECT, **changes}
    return ConfigSection(
        "project", {k: v for k, v in items.items() if v is not None}, label="p.conf"
    )


def task(**changes: str | None) -> ConfigSection:
    items = {**BASE_TASK, **changes}
    return ConfigSection("task", {k: v for k, v in items.items() if v is not None}, label="t.conf")


def rejects(build, section: ConfigSection, key: str, **kw) -> str:
    """Assert ``build(section)`` raises a ConfigError naming ``[group] key``; return the text."""
    with pytest.raises(ConfigError) as ei:
        build(section, **kw)
    message = str(ei.value)
    assert re.search(
        rf"^{re.escape(section.label)}: \[{section.group}\] {re.escape(key)}[=:]", message
    ), message
    return message


# --- project ------------------------------------------------------------------------------------


def test_project_from_the_original_test_config() -> None:
    proj = parse_project(project())
    assert isinstance(proj, Project)
    assert (proj.name, proj.scan_type, proj.loop, proj.interval, proj.sleep) == (
        "test",
        "page",
        1,
        1,
        1,
    )
    assert (proj.sysmem_threshold, proj.swapcache_high_wmark, proj.swapcache_low_wmark) == (
        -1,
        -1,
        -1,
    )
    assert proj.config is not None and proj.config["name"] == "test"


def test_example_message_from_the_issue(golden) -> None:
    import json

    cases = json.loads((golden / "config/cases.json").read_text())["cases"]
    (case,) = [c for c in cases if c["name"] == "sample_conf_slide_conf"]
    text = bytes.fromhex(case["text_hex"]).decode().replace("loop=1\n", "loop=0\n")
    obj = parse_object_data(text, "/etc/etmem/slide_conf.yaml")
    with pytest.raises(ConfigError) as ei:
        parse_project(obj.projects[0])
    assert str(ei.value) == "slide_conf.yaml: [project] loop=0: must be an integer from 1 to 120"


@pytest.mark.parametrize("name", ["a", "x" * 64, "测试"])
def test_project_name_accepted(name: str) -> None:
    assert parse_project(project(name=name)).name == name


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_project_name_rejected(name: str) -> None:
    rejects(parse_project, project(name=name), "name")


def test_project_name_missing() -> None:
    msg = rejects(parse_project, project(name=None), "name")
    assert msg == "p.conf: [project] name: key not set"


@pytest.mark.parametrize("value", ["1", "2", "60", "119", "120", "+7", "007"])
def test_loop_accepted(value: str) -> None:
    assert parse_project(project(loop=value)).loop == int(value)


@pytest.mark.parametrize(
    "value", ["0", "121", "abc", "-1", "", "1.5", "0x10", "4294967297", "2147483648", "1 0"]
)
def test_loop_rejected(value: str) -> None:
    msg = rejects(parse_project, project(loop=value), "loop")
    assert msg.endswith("must be an integer from 1 to 120")


def test_loop_missing() -> None:
    assert rejects(parse_project, project(loop=None), "loop").endswith("loop: key not set")


@pytest.mark.parametrize("key", ["interval", "sleep"])
@pytest.mark.parametrize("value", ["1", "600", "1200"])
def test_interval_sleep_accepted(key: str, value: str) -> None:
    assert getattr(parse_project(project(**{key: value})), key) == int(value)


@pytest.mark.parametrize("key", ["interval", "sleep"])
@pytest.mark.parametrize("value", ["0", "1201", "-1", "abc", "", "4294968496"])
def test_interval_sleep_rejected(key: str, value: str) -> None:
    msg = rejects(parse_project, project(**{key: value}), key)
    assert msg.endswith("must be an integer from 1 to 1200")


@pytest.mark.parametrize("key", ["interval", "sleep"])
def test_interval_sleep_required_for_page(key: str) -> None:
    rejects(parse_project, project(**{key: None}), key)


@pytest.mark.parametrize("value", ["0", "1", "50", "100"])
def test_sysmem_threshold_accepted(value: str) -> None:
    assert parse_project(project(sysmem_threshold=value)).sysmem_threshold == int(value)


@pytest.mark.parametrize("value", ["101", "-1", "abc", "a10b", "10a", "", "4294967346"])
def test_sysmem_threshold_rejected(value: str) -> None:
    msg = rejects(parse_project, project(sysmem_threshold=value), "sysmem_threshold")
    assert msg.endswith("must be an integer from 0 to 100")


@pytest.mark.parametrize("high, low", [("10", "6"), ("100", "1"), ("2", "1"), ("100", "99")])
def test_swapcache_wmarks_accepted(high: str, low: str) -> None:
    proj = parse_project(project(swapcache_high_wmark=high, swapcache_low_wmark=low))
    assert (proj.swapcache_high_wmark, proj.swapcache_low_wmark) == (int(high), int(low))


@pytest.mark.parametrize(
    "high, low, key",
    [
        ("10", None, "swapcache_high_wmark"),  # only one set
        (None, "6", "swapcache_low_wmark"),
        ("5", "5", "swapcache_high_wmark"),  # high must be greater
        ("5", "10", "swapcache_high_wmark"),
        ("0", "1", "swapcache_high_wmark"),  # each 1..100
        ("101", "1", "swapcache_high_wmark"),
        ("10", "0", "swapcache_low_wmark"),
        ("10", "-1", "swapcache_low_wmark"),
        ("abc", "1", "swapcache_high_wmark"),
        ("10", "", "swapcache_low_wmark"),
    ],
)
def test_swapcache_wmarks_rejected(high: str | None, low: str | None, key: str) -> None:
    rejects(parse_project, project(swapcache_high_wmark=high, swapcache_low_wmark=low), key)


def test_misspelt_vmark_keys_are_ignored() -> None:
    # The user guide's swapcache_high_vmark typo: unknown keys are ignored, as in C.
    proj = parse_project(project(swapcache_high_vmark="10", swapcache_low_vmark="6"))
    assert proj.swapcache_high_wmark == -1


@pytest.mark.parametrize("value", ["page", "region", "psi"])
def test_scan_type_accepted(value: str) -> None:
    extra = {
        "region": dict(
            sample_interval="5000",
            aggr_interval="100000",
            update_interval="1000000",
            min_nr_regions="10",
            max_nr_regions="1000",
        )
    }.get(value, {})
    assert parse_project(project(scan_type=value, **extra)).scan_type == value


def test_scan_type_default_is_page() -> None:
    assert parse_project(project(scan_type=None)).scan_type == "page"


@pytest.mark.parametrize("value", ["Page", "PAGE", "", "damon", "page "])
def test_scan_type_rejected(value: str) -> None:
    msg = rejects(parse_project, project(scan_type=value), "scan_type")
    assert msg.endswith("must be one of page, region, psi")


def test_psi_project_needs_only_interval() -> None:
    proj = parse_project(
        ConfigSection("project", {"name": "p", "scan_type": "psi", "interval": "6"}, label="x")
    )
    assert (proj.interval, proj.loop, proj.sleep) == (6, None, None)
    for bad in ("0", "1201"):
        rejects(
            parse_project,
            ConfigSection("project", {"name": "p", "scan_type": "psi", "interval": bad}, label="x"),
            "interval",
        )
    rejects(parse_project, ConfigSection("project", {"name": "p", "scan_type": "psi"}), "interval")


REGION = {
    "name": "r",
    "scan_type": "region",
    "sample_interval": "5000",
    "aggr_interval": "100000",
    "update_interval": "1000000",
    "min_nr_regions": "10",
    "max_nr_regions": "1000",
}


def region(**changes: str | None) -> ConfigSection:
    items = {**REGION, **changes}
    return ConfigSection("project", {k: v for k, v in items.items() if v is not None}, label="d")


def test_region_project() -> None:
    proj = parse_project(region(sample_interval="0", max_nr_regions="4294967295"))
    assert proj.region == {
        "sample_interval": 0,
        "aggr_interval": 100000,
        "update_interval": 1000000,
        "min_nr_regions": 10,
        "max_nr_regions": 4294967295,
    }
    assert proj.loop is None


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"min_nr_regions": "2"}, "min_nr_regions"),
        ({"max_nr_regions": "2"}, "max_nr_regions"),
        ({"min_nr_regions": "1000"}, "min_nr_regions"),  # min must be < max
        ({"min_nr_regions": "2000"}, "min_nr_regions"),
        ({"sample_interval": "-1"}, "sample_interval"),
        ({"aggr_interval": "x"}, "aggr_interval"),
        ({"update_interval": None}, "update_interval"),
        ({"max_nr_regions": None}, "max_nr_regions"),
    ],
)
def test_region_rejected(changes: dict[str, str | None], key: str) -> None:
    rejects(parse_project, region(**changes), key)


def test_trailing_whitespace_is_forgiven_through_objfile() -> None:
    # Deliberate difference from GKeyFile: "loop=1 " is 1, not an error.
    obj = parse_object_data("[project]\nname=p \nloop=1 \ninterval=2\t\nsleep=3\n", "/x/p.conf")
    proj = parse_project(obj.projects[0])
    assert (proj.name, proj.loop, proj.interval, proj.sleep) == ("p", 1, 2, 3)


# --- task ---------------------------------------------------------------------------------------


def test_task_from_the_original_test_config() -> None:
    t = parse_task(task(type="name", value="sshd", max_threads="10"), nprocs=8)
    assert isinstance(t, Task)
    assert (t.name, t.type, t.value, t.max_threads, t.swap_flag) == ("t", "name", "sshd", 10, False)
    assert t.config is not None and t.config["value"] == "sshd"


@pytest.mark.parametrize(
    "value",
    ["30", "mysqld", "swap_test", "swap-test", "swap.test", "swap%test", "swap/var/run", "x" * 15],
)
def test_task_value_accepted(value: str) -> None:
    assert parse_task(task(value=value)).value == value


@pytest.mark.parametrize(
    "value", [":1", "a:", "#a:1", "a.b:1", "2*4", "2&^4", "a" * 21, "", "x" * 16, "a b", "名字"]
)
def test_task_value_rejected(value: str) -> None:
    rejects(parse_task, task(value=value), "value")


@pytest.mark.parametrize("value", ["pid", "name"])
def test_task_type_accepted(value: str) -> None:
    assert parse_task(task(type=value)).type == value


@pytest.mark.parametrize("value", ["PID", "Name", "", "proc", "pid "])
def test_task_type_rejected(value: str) -> None:
    assert rejects(parse_task, task(type=value), "type").endswith("must be pid or name")


@pytest.mark.parametrize("value, flag", [("yes", True), ("no", False), (None, False)])
def test_swap_flag_accepted(value: str | None, flag: bool) -> None:
    assert parse_task(task(swap_flag=value)).swap_flag is flag


@pytest.mark.parametrize("value", ["YES", "NO", "", "wrong", "true", "1"])
def test_swap_flag_rejected(value: str) -> None:
    assert rejects(parse_task, task(swap_flag=value), "swap_flag").endswith("must be yes or no")


@pytest.mark.parametrize(
    "value, nprocs, expected, warned",
    [
        (None, 2, 1, False),
        ("1", 2, 1, False),
        ("5", 2, 5, False),  # 2 * 2 + 1
        ("6", 2, 5, True),
        ("10000", 2, 5, True),
        ("10000", 64, 129, True),
        ("0", 2, 1, True),
        ("-1", 2, 1, True),
        ("-2147483648", 2, 1, True),
    ],
)
def test_max_threads_clamped_with_warning(
    caplog: pytest.LogCaptureFixture, value: str | None, nprocs: int, expected: int, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="etmem_core.object_keys"):
        assert parse_task(task(max_threads=value), nprocs=nprocs).max_threads == expected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is warned
    if warned:
        assert "[task] max_threads=" in warnings[0].getMessage()


def test_max_threads_default_nprocs_is_this_machine() -> None:
    import os

    limit = 2 * (os.cpu_count() or 1) + 1
    assert parse_task(task(max_threads="10000")).max_threads == limit


@pytest.mark.parametrize("value", ["abc", "", "1.0", "4294967297", "2147483648"])
def test_max_threads_rejected(value: str) -> None:
    rejects(parse_task, task(max_threads=value), "max_threads")


@pytest.mark.parametrize("key", ["name", "type", "value"])
def test_task_required_keys(key: str) -> None:
    msg = rejects(parse_task, task(**{key: None}), key)
    assert msg == f"t.conf: [task] {key}: key not set"


@pytest.mark.parametrize("name, ok", [("x" * 64, True), ("x" * 65, False), ("", False)])
def test_task_name_length(name: str, ok: bool) -> None:
    if ok:
        assert parse_task(task(name=name)).name == name
    else:
        rejects(parse_task, task(name=name), "name")


def test_task_checks_run_in_the_original_order() -> None:
    # name, type, value, swap_flag, max_threads: the first failing key is the one reported.
    bad = task(type="x", value=":", swap_flag="x", max_threads="x")
    rejects(parse_task, bad, "type")
    rejects(parse_task, task(value=":", swap_flag="x"), "value")


# --- identity -----------------------------------------------------------------------------------


def engine(**items: str) -> ConfigSection:
    return ConfigSection("engine", items, label="e.conf")


def test_engine_identity() -> None:
    assert engine_identity(engine(name="slide", project="test")) == ("test", "slide")
    assert engine_identity(
        engine(name="thirdparty", project="test", eng_name="my_engine", libname="x")
    ) == ("test", "my_engine")


@pytest.mark.parametrize(
    "items, key",
    [
        ({"name": "slide"}, "project"),
        ({"project": "test"}, "name"),
        ({"project": "test", "name": "thirdparty"}, "eng_name"),
        ({"project": "p" * 65, "name": "slide"}, "project"),
        ({"project": "test", "name": "s" * 65}, "name"),
        ({"project": "test", "name": "thirdparty", "eng_name": "e" * 65}, "eng_name"),
    ],
)
def test_engine_identity_rejected(items: dict[str, str], key: str) -> None:
    with pytest.raises(ObjectNameError) as ei:
        engine_identity(engine(**items))
    assert re.match(rf"e\.conf: \[engine\] {key}[=:]", str(ei.value)), str(ei.value)


def test_empty_names_pass_the_identity_check() -> None:
    # As in C: only "missing" and "> 64" are identity errors; the object's checks refuse "".
    assert engine_identity(engine(name="", project="")) == ("", "")
    assert project_identity(ConfigSection("project", {"name": ""})) == ""


def test_task_identity() -> None:
    assert task_identity(task()) == ("test", "slide", "t")
    for key in ("project", "engine", "name"):
        with pytest.raises(ObjectNameError, match=rf"\[task\] {key}: key not set"):
            task_identity(task(**{key: None}))
    with pytest.raises(ObjectNameError, match=r"\[task\] engine=e+: must be at most 64"):
        task_identity(task(engine="e" * 65))


@pytest.mark.parametrize(
    "name",
    [None, "", "t", "t1", "-", "--", "a b", " a", "a\tb", "a\nb", "a\x00", "\x7f", "é", "名前",
     "a\udc80", "\u00a0", "\u2028", "n" * 64, "n" * 65, "é" * 64, "é" * 65, "a=b", "[t]"],
)  # fmt: skip
def test_is_plain_name_accepts_only_names_every_check_accepts(name: str | None) -> None:
    # obj add skips the full checks of a task name that is_plain_name accepts
    items = {**BASE_TASK, "name": name} if name is not None else dict(BASE_TASK, name=None)
    section = ConfigSection("task", {k: v for k, v in items.items() if v is not None})
    try:
        task_identity(section)
        parse_task(section, nprocs=1)
        parse_project(ConfigSection("project", {**BASE_PROJECT, "name": name or ""}))
        accepted = name is not None
    except ConfigError:
        accepted = False
    assert is_plain_name(name) == accepted


def test_object_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        object_name(ConfigSection("project", {}), "name")
    assert object_name(ConfigSection("project", {"name": "n" * 64}), "name") == "n" * 64
