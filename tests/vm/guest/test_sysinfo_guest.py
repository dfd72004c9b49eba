"""What the test bed offers, as etmem's own capability probe sees it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_sysinfo_reports_what_the_guest_kernel_has():
    out = subprocess.run(
        [str(BIN / "etmem"), "sysinfo", "--json"], capture_output=True, text=True, check=True
    ).stdout
    info = json.loads(out)
    facts = info["facts"]
    nodes = sorted(int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    assert len(nodes) >= 2 and facts["numa_nodes"] == nodes
    assert info["trackers"]["damon"]["usable"], info["trackers"]["damon"]
    assert info["actuators"]["migrate"]["usable"], info["actuators"]["migrate"]
    assert facts["cgroup2_memory_reclaim"] is True
    assert facts["psi"] is True
    assert facts["soft_dirty"] is True
