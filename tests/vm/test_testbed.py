"""The test bed itself: boots, returns exit statuses, reports boot failures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def test_one_boot_has_its_nodes_runs_in_this_checkout_and_returns_the_exit_status(guest):
    # one boot for all three: each costs tens of seconds under TCG
    script = (
        "cat /sys/devices/system/node/online; pwd; "
        ".venv/bin/python -c 'import etmem_sdk; print(\"sdk ok\")'; "
        "echo err >&2; exit 7"
    )
    res = guest("sh", "-c", script, nodes=4)
    assert res.returncode == 7, res.stdout + res.stderr
    # the guest console carries stdout and stderr both
    assert res.stdout.splitlines() == [
        "0-3",
        str(Path(__file__).resolve().parents[2]),
        "sdk ok",
        "err",
    ]


def test_slow_node_is_a_lower_memory_tier(guest):
    res = guest(
        "sh",
        "-c",
        "ls -d /sys/devices/virtual/memory_tiering/memory_tier*",
        nodes=2,
        slow_node=True,
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) == 2  # DRAM tier + the slow node's own tier


def test_a_guest_that_cannot_boot_fails_with_a_message(guest, tmp_path):
    broken = tmp_path / "broken-initrd"
    broken.write_bytes(b"not an initramfs")
    res = guest("true", timeout=60, env={"ETMEM_VM_INITRD": str(broken)})
    assert res.returncode in (124, 125)
    assert "guest" in res.stderr and ("boot" in res.stderr or "timed out" in res.stderr)
