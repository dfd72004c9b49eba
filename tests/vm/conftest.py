"""The QEMU test bed: host-side fixtures, and guest-only test modules.

Tests marked ``vm`` run on the host and boot a guest through ``tests/vm/run``. Modules in
``tests/vm/guest/`` are the blocks of assertions that run *inside* the guest (``ETMEM_IN_VM=1``);
the host never collects them directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parent
RUN = VM_DIR / "run"
CHECKOUT = VM_DIR.parent.parent

if os.environ.get("ETMEM_IN_VM") != "1":
    collect_ignore = ["guest"]


@dataclass
class GuestResult:
    returncode: int
    stdout: str
    stderr: str


def run_in_guest(
    *cmd: str,
    nodes: int = 2,
    slow_node: bool = False,
    mem: str = "4G",
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> GuestResult:
    """Boot a guest, run ``cmd`` in this checkout inside it, and return what it printed."""
    args = [str(RUN), "--nodes", str(nodes), "--mem", mem, "--timeout", str(timeout)]
    if slow_node:
        args.append("--slow-node")
    # pytest captures output: tell the terminal why the suite goes quiet for up to minutes
    what = " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd))[:100]
    print(
        f"\n[tests/vm] booting a QEMU guest ({nodes} node(s), {mem}, TCG; "
        f"up to {timeout} s): {what}",
        file=sys.__stderr__,
        flush=True,
    )
    proc = subprocess.run(
        [*args, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout + 120,  # the kernel download on a fresh machine comes on top
        env={**os.environ, **(env or {})},
    )
    return GuestResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def guest():
    """``guest(*cmd, nodes=2, ...)`` boots the test bed and runs ``cmd`` inside it."""
    if os.environ.get("ETMEM_IN_VM") == "1":
        pytest.fail("the guest fixture cannot be used inside the guest")
    return run_in_guest


@pytest.fixture
def guest_pytest(guest):
    """Run modules of ``tests/vm/guest`` inside one guest; fail with its output if they fail."""

    def run(*modules: str, nodes: int = 2, slow_node: bool = False, timeout: int = 600) -> str:
        res = guest(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--color=no",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=--strict-markers -ra",
            *(f"tests/vm/guest/{m}" for m in modules),
            nodes=nodes,
            slow_node=slow_node,
            timeout=timeout,
        )
        assert res.returncode == 0, (
            f"guest tests {' '.join(modules)} failed (exit {res.returncode}):\n"
            f"{res.stdout}\n{res.stderr}"
        )
        return res.stdout

    return run
