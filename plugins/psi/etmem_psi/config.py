"""The psi engine's ``[task]`` keys: the original's names and defaults, with ranges.

The original only asks the doubles to be above 0; here each key has a range that makes sense
(a rate above 1 would reclaim more than the cgroup holds) and the rates must be ordered
``reclaim_rate_min <= reclaim_rate <= reclaim_rate_max``. Every refusal names file, group, key
and range (docs/config.md, "psi engine").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etmem_sdk import PSI_SCAN, ConfigSection, Project
from etmem_sdk import params as P

#: Longest ``cg_dir`` (the original's limit).
CG_DIR_MAX_LEN = 63
#: ``pressure``: percent of wall time some task of the cgroup stalled on memory (PSI ``some``).
PRESSURE_RANGE = (0.0, 100.0)
#: Every rate and ``limit_min_ratio`` is a share of the cgroup's memory: above 0, at most 1.
SHARE_RANGE = (0.0, 1.0)
#: memory.reclaim takes bytes; below a page nothing would ever be reclaimed.
RECLAIM_MAX_BYTES_MIN = 4096
BYTES_MAX = P.INT64_MAX

#: each key's default: shares and rates are floats, byte counts integers
DEFAULTS: dict[str, Any] = {
    "pressure": 0.1,
    "reclaim_rate": 0.05,
    "reclaim_rate_max": 0.5,
    "reclaim_rate_min": 0.01,
    "limit_min_ratio": 0.1,
    "limit_min_bytes": 0,
    "reclaim_max_bytes": 1 << 30,
}


@dataclass(frozen=True, slots=True)
class PsiTaskConfig:
    """Validated psi task keys (part of ``task.params``)."""

    cg_dir: str
    pressure: float = DEFAULTS["pressure"]
    reclaim_rate: float = DEFAULTS["reclaim_rate"]
    reclaim_rate_max: float = DEFAULTS["reclaim_rate_max"]
    reclaim_rate_min: float = DEFAULTS["reclaim_rate_min"]
    limit_min_ratio: float = DEFAULTS["limit_min_ratio"]
    limit_min_bytes: int = DEFAULTS["limit_min_bytes"]
    reclaim_max_bytes: int = DEFAULTS["reclaim_max_bytes"]


def check_project(section: ConfigSection, project: Project | None) -> None:
    """The psi engine needs a ``scan_type=psi`` project (its ``interval`` is the round)."""
    if project is not None and project.scan_type != PSI_SCAN:
        raise P.error(
            section,
            "name",
            f"the psi engine needs a project with scan_type=psi, project {project.name} has "
            f"scan_type={project.scan_type}",
        )


def _share(section: ConfigSection, key: str) -> float:
    lo, hi = SHARE_RANGE
    value = P.get_double(section, key, above=lo, hi=hi, required=False, default=DEFAULTS[key])
    assert value is not None
    return value


def parse_task_config(section: ConfigSection) -> PsiTaskConfig:
    """Validate the psi keys of a ``[task]`` section; ``ConfigError`` names file, group, key
    and range."""
    cg_dir = P.get_str(section, "cg_dir", max_len=CG_DIR_MAX_LEN)
    assert cg_dir is not None
    if ".." in cg_dir.strip("/").split("/"):
        raise P.error(section, "cg_dir", "must not contain a '..' component")
    lo, hi = PRESSURE_RANGE
    pressure = P.get_double(
        section, "pressure", above=lo, hi=hi, required=False, default=DEFAULTS["pressure"]
    )
    rate = _share(section, "reclaim_rate")
    rate_max = _share(section, "reclaim_rate_max")
    rate_min = _share(section, "reclaim_rate_min")
    if rate_min > rate_max:
        raise P.error(
            section, "reclaim_rate_min", f"must be at most reclaim_rate_max ({rate_max:g})"
        )
    if not rate_min <= rate <= rate_max:
        # name the key the user wrote: the start rate, or the bound that excludes its default
        key = "reclaim_rate"
        if key not in section:
            key = "reclaim_rate_min" if rate < rate_min else "reclaim_rate_max"
        raise P.error(
            section,
            key,
            f"reclaim_rate ({rate:g}) must be from reclaim_rate_min ({rate_min:g}) "
            f"to reclaim_rate_max ({rate_max:g})",
        )
    ratio = _share(section, "limit_min_ratio")
    min_bytes = P.get_int(
        section, "limit_min_bytes", 0, BYTES_MAX, required=False, default=0, bits=64
    )
    max_bytes = P.get_int(
        section,
        "reclaim_max_bytes",
        RECLAIM_MAX_BYTES_MIN,
        BYTES_MAX,
        required=False,
        default=DEFAULTS["reclaim_max_bytes"],
        bits=64,
    )
    assert pressure is not None and min_bytes is not None and max_bytes is not None
    return PsiTaskConfig(
        cg_dir=cg_dir,
        pressure=pressure,
        reclaim_rate=rate,
        reclaim_rate_max=rate_max,
        reclaim_rate_min=rate_min,
        limit_min_ratio=ratio,
        limit_min_bytes=min_bytes,
        reclaim_max_bytes=max_bytes,
    )
