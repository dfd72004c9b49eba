"""``etmem scan PID``: the per-VMA hot/cold summary of a live process."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from etmem_scan.pagerefs import PageRefs
from etmem_scan.procfs import Vma
from etmem_sdk.testing import spawn_workload, swap_on

from etmem_core.cli import scan_live


def run(pid: int, **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = scan_live.main(pid, out=out, err=err, **kw)
    return rc, out.getvalue(), err.getvalue()


def test_live_scan_finds_the_cold_mapping():
    with spawn_workload(hot_mib=2, cold_mib=4, period=0.02) as w:
        rc, out, err = run(
            w.pid, loop=2, sleep=0.15, tracker="refs", cold_threshold=2, as_json=True
        )
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["tracker"] == "refs" and doc["loop"] == 2
    rows = {(r["start"], r["end"]): r for r in doc["vmas"]}
    hot, cold = rows[w.hot], rows[w.cold]
    assert hot["size"] == hot["resident"] == hot["hot"] == 2 << 20 and hot["cold"] == 0
    assert cold["size"] == cold["resident"] == cold["cold"] == 4 << 20 and cold["hot"] == 0


def test_text_table_and_the_refs_note():
    with spawn_workload(hot_mib=1, cold_mib=1) as w:
        rc, out, err = run(w.pid, loop=1, sleep=0.05, tracker="refs")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"pid {w.pid}: tracker refs, 1 pass(es) 0.05 s apart")
    assert lines[1].split()[:2] == ["start-end", "perms"]
    assert lines[-2].startswith("total")
    assert lines[-1].startswith("note: refs sees one accessed bit per mapping: it cannot see")
    cold_line = next(line for line in lines if line.startswith(f"{w.cold[0]:>12x}-"))
    assert cold_line.split()[2:] == ["1.0M", "1.0M", "0", "1.0M"]


def test_errors_are_messages_and_exit_status():
    rc, out, err = run(2**22 + 4321, loop=1, sleep=0)
    assert rc == 1 and out == "" and "is gone" in err
    with spawn_workload(hot_mib=1, cold_mib=1) as w:
        rc, _, err = run(w.pid, tracker="page_idle", sleep=0)
        assert rc == 1 and "page_idle" in err
        rc, _, err = run(w.pid, tracker="nope", sleep=0)
        assert rc == 1 and "tracker nope: unknown" in err
        rc, _, err = run(w.pid, loop=0)
        assert rc == 1 and "--loop" in err


def test_summarize_counts_huge_pages_by_their_size():
    vmas = [Vma(0x200000, 0x800000, "rw-p", 0, "00", "00", 0)]
    refs = PageRefs(
        np.array([0x200000, 0x400000, 0x401000], np.uint64),
        np.array([1, 0, 0], np.uint8),
        np.array([3, 0, 1], np.int32),
    )
    (row,) = scan_live.summarize(vmas, refs, cold_threshold=1, page_size=4096)
    assert (row.size, row.resident, row.hot, row.cold) == (0x600000, 0x202000, 0x201000, 0x1000)


def test_etmem_scan_pid_dispatches_here(capfd):
    from etmem_core.cli import main

    with spawn_workload(hot_mib=1, cold_mib=2, period=0.02) as w:
        rc = main(["scan", str(w.pid), "--loop", "1", "--sleep", "1", "--tracker", "refs"])
    out = capfd.readouterr().out
    assert rc == 0
    assert out.startswith(f"pid {w.pid}: tracker refs, 1 pass(es) 1 s apart")
    cold_line = next(line for line in out.splitlines() if line.startswith(f"{w.cold[0]:>12x}-"))
    assert cold_line.split()[2:] == ["2.0M", "2.0M", "0", "2.0M"]


@pytest.mark.root
@pytest.mark.swap
def test_probe_tracker_splits_one_mapping_and_says_it_pages_out():
    if os.geteuid() != 0:
        pytest.skip("needs root (swap, process_madvise on another process)")
    with swap_on(128, priority=32767), spawn_workload(interleave=4, size_mib=8, period=0.02) as w:
        rc, out, err = run(w.pid, loop=1, sleep=0.3, tracker="probe", as_json=True)
        rc_text, text, _ = run(w.pid, loop=1, sleep=0.1, tracker="probe")
        w.kill()  # before the swapoff
    assert rc == 0 and rc_text == 0, err
    doc = json.loads(out)
    assert doc["tracker"] == "probe" and doc["granularity"] == "page"
    assert "pages out a sample" in doc["note"]
    (row,) = [r for r in doc["vmas"] if (r["start"], r["end"]) == w.cold]
    # the priming pass paged the whole 8 MiB out; the 3 cold pages in 4 stayed out
    assert row["cold"] >= (8 << 20) * 3 // 4 * 9 // 10
    assert "note: the probe tracker pages out a sample" in text


def test_etmem_scan_honours_the_daemon_default_tracker(tmp_path, monkeypatch, capsys):
    if os.geteuid() != 0:
        pytest.skip("etmemd.toml must be owned by root")
    from etmem_core import daemon_settings

    conf = tmp_path / "etmemd.toml"
    conf.write_text('[scan]\ntracker = "refs"\n')
    conf.chmod(0o600)
    monkeypatch.setattr(daemon_settings, "DEFAULT_PATH", str(conf))
    with spawn_workload(hot_mib=1, cold_mib=1) as w:
        assert scan_live.live_scan(w.pid, loop=1, sleep=0) == 0
    assert capsys.readouterr().out.startswith(f"pid {w.pid}: tracker refs,")
