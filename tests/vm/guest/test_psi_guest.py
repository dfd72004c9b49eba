"""The psi engine on a real cgroup v2 (the test bed's 6.12 kernel): it shrinks a cgroup while
the cgroup's memory pressure stays below the threshold, and stops when the pressure rises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from etmemd_proc import EtmemdProc, wait_for

CGROUP = Path("/sys/fs/cgroup")
GROUP = CGROUP / "etmem-psi-test"
MiB = 1 << 20
THRESHOLD = 5.0  # percent of wall time stalled on memory (PSI some)


def psi_config(threshold: float) -> str:
    return (
        "[project]\nname=psi\nscan_type=psi\ninterval=1\n"
        "[engine]\nname=psi\nproject=psi\n"
        "[task]\nproject=psi\nengine=psi\nname=t\ntype=name\nvalue=cgroup_v2\n"
        f"cg_dir=etmem-psi-*\npressure={threshold}\nreclaim_rate=0.2\nreclaim_rate_max=0.5\n"
        "limit_min_ratio=0.1\n"
    )


@pytest.fixture
def group(zram_swap):
    """A memory cgroup below the root (memory controller switched on for the root's children)."""
    (CGROUP / "cgroup.subtree_control").write_text("+memory")
    GROUP.mkdir(exist_ok=True)
    try:
        yield GROUP
    finally:
        for pid in (GROUP / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not (GROUP / "cgroup.procs").read_text().strip(), 10)
        GROUP.rmdir()


@pytest.fixture
def workload(group):
    """16 MiB kept hot, 64 MiB filled once, allocated after joining the cgroup (v2 charges
    memory where it is allocated)."""
    cmd = (
        f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -m etmem_sdk._workload "
        "--hot-mib 16 --cold-mib 64 --period 0.05"
    )
    proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        json.loads(proc.stdout.readline())
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def usage(group: Path) -> int:
    return int((group / "memory.current").read_text())


def cgroup_stats(d: EtmemdProc) -> dict:
    doc = json.loads(d.etmem("project", "show", "-n", "psi", "--json").stdout)
    (task,) = doc[0]["engines"][0]["tasks"]
    return task["stats"]["cgroups"].get("etmem-psi-test", {})


def test_psi_shrinks_the_cgroup_then_stops_under_pressure(tmp_path, group, workload):
    start = usage(group)
    assert start >= 75 * MiB, start
    d = EtmemdProc(tmp_path)
    try:
        d.add("psi", psi_config(THRESHOLD))
        d.etmem("project", "start", "-n", "psi")
        # phase 1: pressure low -> the cgroup shrinks by >= 30 %
        assert wait_for(lambda: usage(group) <= start * 0.7, 120, step=1), (
            f"memory.current {usage(group)} > 70 % of {start}\n"
            f"{d.etmem('engine', 'showstats', '-n', 'psi', '-e', 'psi').stdout}\n{d.logtext()}"
        )
        stats = cgroup_stats(d)
        assert stats["bytes_reclaimed"] >= start * 0.3 * 0.9, stats
        assert stats["pressure"] < THRESHOLD, stats
        out = d.etmem("engine", "showstats", "-n", "psi", "-e", "psi").stdout
        assert "etmem-psi-test" in out and "cgroup v2 at /sys/fs/cgroup" in out, out

        # phase 2: squeeze the workload's hot set (memory.high below it) -> it stalls on memory
        (group / "memory.high").write_text(str(8 * MiB))
        # (each poll runs the etmem client: seconds of CPU under TCG, so not too often)
        assert wait_for(lambda: cgroup_stats(d).get("pressure", 0) >= THRESHOLD, 120, step=3), (
            f"{cgroup_stats(d)}\n{(group / 'memory.pressure').read_text()}"
        )
        assert wait_for(lambda: cgroup_stats(d)["paused_rounds"] >= 1, 30, step=2)
        # while the pressure stays high, the engine asks for nothing more
        before = cgroup_stats(d)
        time.sleep(4)
        after = cgroup_stats(d)
        # (the engine compares max(avg10, avg60): the 60 s average keeps it paused meanwhile)
        assert after["reclaim_rounds"] == before["reclaim_rounds"], (before, after)
        assert after["paused_rounds"] > before["paused_rounds"], (before, after)
        assert after["state"] == "pressure high", after
        assert "pressure high" in d.etmem("engine", "showstats", "-n", "psi", "-e", "psi").stdout
        d.etmem("project", "stop", "-n", "psi")
    finally:
        (group / "memory.high").write_text("max")
        d.stop()
