"""The running kernel's build options, from ``/proc/config.gz`` (read only)."""

from __future__ import annotations

import gzip
from pathlib import Path

__all__ = ["kernel_config", "option_off"]


def kernel_config(proc_root: Path) -> dict[str, str] | None:
    """``/proc/config.gz`` as ``{"CONFIG_X": "y", ...}`` (unset options absent); ``None`` when
    the kernel does not expose its configuration."""
    try:
        with gzip.open(proc_root / "config.gz", "rt") as f:
            text = f.read()
    except (OSError, EOFError):
        return None
    cfg = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            k, _, v = line.partition("=")
            cfg[k] = v
    return cfg


def option_off(cfg: dict[str, str] | None, option: str) -> bool:
    """``option`` is known to be off (a kernel that hides its configuration says nothing)."""
    return cfg is not None and cfg.get(option) not in ("y", "m")
