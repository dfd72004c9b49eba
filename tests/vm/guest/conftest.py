"""Guest-side fixtures: only ever collected inside the QEMU test bed (ETMEM_IN_VM=1)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/vm/conftest.py keeps the host from collecting this folder (ETMEM_IN_VM is unset there).


@pytest.fixture
def zram_swap() -> Iterator[Path]:
    """zram0 as the guest's swap device (the guest has no disk); switched off afterwards."""
    dev = Path("/dev/zram0")
    sysfs = Path("/sys/block/zram0")
    assert sysfs.is_dir(), "zram module not loaded by the test bed's init"
    (sysfs / "reset").write_text("1")
    algos = (sysfs / "comp_algorithm").read_text()
    if "zstd" in algos:
        (sysfs / "comp_algorithm").write_text("zstd")
    (sysfs / "disksize").write_text(str(512 << 20))
    subprocess.run(["mkswap", str(dev)], check=True, capture_output=True)
    subprocess.run(["swapon", str(dev)], check=True)
    os.environ["ETMEM_TEST_SWAP_DEVICE"] = str(dev)
    try:
        yield dev
    finally:
        os.environ.pop("ETMEM_TEST_SWAP_DEVICE", None)
        subprocess.run(["swapoff", str(dev)], check=False)
        (sysfs / "reset").write_text("1")
