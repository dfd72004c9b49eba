"""The test bed itself: boots, returns exit statuses, reports boot failures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def test_guest_has_the_numa_nodes_it_was_given(guest):
    res = guest("cat", "/sys/devices/system/node/online", nodes=4)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0-3"


def test_exit_status_of_the_command_comes_back(guest):
    assert guest("false", nodes=2).returncode == 1
    res = guest("sh", "-c", "echo out; echo err >&2; exit 7", nodes=2)
    assert res.returncode == 7
    assert res.stdout.splitlines() == ["out", "err"]  # the guest console carries both


def test_guest_runs_in_this_checkout_with_its_venv(guest):
    res = guest("sh", "-c", "pwd; .venv/bin/python -c 'import etmem_sdk; print(\"sdk ok\")'")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert out[0] == str(Path(__file__).resolve().parents[2])
    assert "sdk ok" in out


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
