"""``etmem sysinfo``: the probe's verdicts as text and JSON."""

from __future__ import annotations

import json

from test_probe import fake_machine
from typer.testing import CliRunner

from etmem_core.cli import sysinfo as sysinfo_cli

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(sysinfo_cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_text_on_this_machine():
    out = run()
    lines = out.splitlines()
    assert lines[0] == "trackers (most precise first):"
    refs = next(line for line in lines if line.startswith("  refs "))
    assert refs.split()[1:3] == ["yes", "mapping"] and "per-VMA" in refs
    idle = next(line for line in lines if line.startswith("  idle_pages "))
    assert idle.split()[1] == "no" and "etmem_scan kernel module not loaded" in idle
    migrate = next(line for line in lines if line.startswith("  migrate "))
    assert "one NUMA node" in migrate
    assert any(line.split()[:1] == ["tracker"] for line in lines)


def test_json_on_this_machine():
    doc = json.loads(run("--json"))
    assert set(doc) == {"trackers", "actuators", "facts", "defaults", "notes"}
    assert doc["trackers"]["refs"]["usable"] is True
    assert doc["trackers"]["damon"]["usable"] is False
    assert "vaddr" in doc["trackers"]["damon"]["reason"]
    assert doc["facts"]["numa_nodes"] == [0]
    assert doc["defaults"]["tracker"] in ("probe", "refs")  # probe while any swap is on
    assert doc["trackers"]["probe"]["granularity"] == "page"


def test_where_refs_is_all_there_is_it_says_so(tmp_path):
    proc, sys_ = fake_machine(tmp_path)  # no swap: no probe
    out = run("--proc-root", str(proc), "--sys-root", str(sys_))
    assert "  tracker          refs" in out
    assert "note: the default tracker is refs: refs sees one accessed bit per mapping" in out
    assert "hot and cold pages in one heap cannot be told apart" in out
    doc = json.loads(run("--json", "--proc-root", str(proc), "--sys-root", str(sys_)))
    assert doc["notes"] and "cannot see inside a mapping" in doc["notes"][0]


def test_with_swap_the_default_is_the_probe(tmp_path):
    proc, sys_ = fake_machine(tmp_path, swap_kb=4096)
    out = run("--proc-root", str(proc), "--sys-root", str(sys_))
    assert "  tracker          probe" in out and "  migrate_tracker  refs" in out
    probe_line = next(line for line in out.splitlines() if line.startswith("  probe "))
    assert probe_line.split()[1:3] == ["yes", "page"]
    assert "note:" not in out


def test_fake_openeuler_machine(tmp_path):
    proc, sys_ = fake_machine(tmp_path, swap_kb=2048, openeuler=True, nodes="0-3")
    out = run("--proc-root", str(proc), "--sys-root", str(sys_))
    assert "  tracker          idle_pages" in out and "  swap             swap_pages" in out
    assert "  migrate          migrate" in out
    assert "swap_total_kb" in out and "2048 kB" in out
    doc = json.loads(run("--json", "--proc-root", str(proc), "--sys-root", str(sys_)))
    assert doc["defaults"] == {
        "tracker": "idle_pages",
        "migrate_tracker": "idle_pages",
        "hugetlb_tracker": "idle_pages",
        "swap": "swap_pages",
        "migrate": "migrate",
    }


def test_fake_machine_without_anything_usable_says_none(tmp_path):
    proc, sys_ = fake_machine(tmp_path, clear_refs=False)
    out = run("--proc-root", str(proc), "--sys-root", str(sys_))
    assert "  tracker          none usable" in out
    assert "  swap             none usable" in out


def test_etmem_sysinfo_is_registered(capfd):
    from etmem_core.cli import main

    assert main(["sysinfo", "--json"]) == 0
    doc = json.loads(capfd.readouterr().out)
    assert doc["trackers"]["refs"]["usable"] is True
