"""Build helpers for the thirdparty tests: compile our C test policies with gcc."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from etmem_sdk import clib

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = clib.include_dir()
SOURCES = Path(__file__).resolve().parent / "thirdparty_c"
SCAN_BUILD = ROOT / "scan_lib" / "build"


def build_scan_lib() -> Path:
    """(Re)build libetmemd_scan.so the way scripts/setup does; its path."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "scan_lib")], check=True)
    return SCAN_BUILD / "libetmemd_scan.so"


def compile_policy(src: str, out: Path, *extra: str, mode: int = 0o700) -> Path:
    """Compile tests/thirdparty_c/<src> into the shared object ``out`` (root-owned, ``mode``)."""
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", f"-I{INCLUDE}"]
    cmd += ["-o", str(out), str(SOURCES / src), *extra]
    subprocess.run(cmd, check=True)
    os.chmod(out, mode)
    return out
