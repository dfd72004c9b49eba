"""The damon engine's keys: the original's ``[engine]`` access pattern and action, the
``[project]`` monitoring attributes it hands to the kdamond, and the optional DAMOS knobs the
original did not have (quotas, a PSI quota goal, watermarks, a migration node).

Every rule here reads only; what the running kernel lacks is refused naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etmem_sdk import REGION_SCAN, ConfigError, ConfigSection, Project, params, scan

U32_MAX = 2**32 - 1
#: The original converts its ``unsigned long`` keys from a 64-bit signed integer.
ULONG_MAX_KEY = params.INT64_MAX
#: DAMON's watermarks are per mille of free memory.
PERMILLE = 1000
#: Highest node id accepted in ``target_node`` (the kernel's MAX_NUMNODES is 1024 at most).
MAX_NODE = 1023
#: The quota reset interval used when a quota or goal is set without one (milliseconds).
DEFAULT_QUOTA_RESET_MS = 1000

#: The original's actions, then what DAMOS has added since (where vaddr carries it out).
ORIGINAL_ACTIONS = ("willneed", "cold", "pageout", "hugepage", "nohugepage", "stat")
ACTIONS = ORIGINAL_ACTIONS + ("migrate_hot", "migrate_cold")
MIGRATE_ACTIONS = ("migrate_hot", "migrate_cold")
WMARK_KEYS = ("wmarks_interval", "wmarks_high", "wmarks_mid", "wmarks_low")

#: :class:`etmem_sdk.scan.DamosScheme` field -> the config key that sets it.
FIELD_KEYS = {
    "action": "action",
    "quota_ms": "quota_ms",
    "quota_bytes": "quota_sz",
    "quota_reset_ms": "quota_reset_interval",
    "psi_goal_us": "quota_goal_psi_us",
    "wmarks": "wmarks_interval",
    "target_nid": "target_node",
}

#: [project] key -> the kdamond's monitoring attribute (both in microseconds / counts).
ATTR_KEYS = {
    "sample_interval": "sample_us",
    "aggr_interval": "aggr_us",
    "update_interval": "update_us",
    "min_nr_regions": "min_nr_regions",
    "max_nr_regions": "max_nr_regions",
}


@dataclass(frozen=True)
class DamonConfig:
    """An engine's validated settings: the kdamond's attributes and the DAMOS scheme."""

    attrs: dict[str, int]
    scheme: scan.DamosScheme


def _range(section: ConfigSection, key: str, hi: int) -> tuple[int, int]:
    lo_key, hi_key = f"min_{key}", f"max_{key}"
    lo = params.get_int(section, lo_key, 0, hi, bits=64)
    top = params.get_int(section, hi_key, 0, hi, bits=64)
    assert lo is not None and top is not None
    if lo > top:
        raise params.error(section, lo_key, f"must not exceed {hi_key} ({top})")
    return lo, top


def _opt(section: ConfigSection, key: str, lo: int, hi: int) -> int:
    value = params.get_int(section, key, lo, hi, required=False, default=0, bits=64)
    assert value is not None
    return value


def project_attrs(project: Project | None, label: str) -> dict[str, int]:
    """The kdamond's monitoring attributes from a ``scan_type=region`` project.

    DAMON refuses a sampling interval longer than the aggregation interval (and a zero one
    would make the kdamond spin), so those are refused here, naming the ``[project]`` key.
    """
    if project is None or project.scan_type != REGION_SCAN:
        kind = project.scan_type if project is not None else "none"
        name = project.name if project is not None else "?"
        raise ConfigError(
            f"{label}: [engine] name=damon: needs a project with scan_type=region, "
            f"project {name} has scan_type={kind}"
        )
    region = project.region
    where = project.config if project.config is not None else ConfigSection("project", {})
    if region["sample_interval"] < 1:
        raise params.error(where, "sample_interval", "must be at least 1 (microseconds)")
    if region["aggr_interval"] < region["sample_interval"]:
        rule = f"must be at least sample_interval ({region['sample_interval']})"
        raise params.error(where, "aggr_interval", rule)
    return {attr: int(region[key]) for key, attr in ATTR_KEYS.items()}


def parse_engine(section: ConfigSection, project: Project | None, sys_root: str,
                 proc_root: str) -> DamonConfig:  # fmt: skip
    """Validate the ``[engine]`` keys of a damon engine (see docs/config.md)."""
    attrs = project_attrs(project, section.label)
    sz = _range(section, "size", ULONG_MAX_KEY)
    acc = _range(section, "acc", U32_MAX)
    age = _range(section, "age", U32_MAX)
    action = params.get_choice(section, "action", ACTIONS)

    quota_bytes = _opt(section, "quota_sz", 0, ULONG_MAX_KEY)
    quota_ms = _opt(section, "quota_ms", 0, U32_MAX)
    goal = _opt(section, "quota_goal_psi_us", 0, U32_MAX)
    reset = _opt(section, "quota_reset_interval", 0, U32_MAX)
    if not reset and (quota_bytes or quota_ms or goal):
        reset = DEFAULT_QUOTA_RESET_MS

    given = [k for k in WMARK_KEYS if k in section]
    wmarks = None
    if given:
        if len(given) != len(WMARK_KEYS):
            lacking = [k for k in WMARK_KEYS if k not in section]
            raise params.error(section, given[0], f"needs {', '.join(lacking)} too")
        interval = _opt(section, "wmarks_interval", 1, U32_MAX)
        high, mid, low = (_opt(section, k, 0, PERMILLE) for k in WMARK_KEYS[1:])
        if not high >= mid >= low:
            rule = f"must satisfy wmarks_high ({high}) >= wmarks_mid ({mid}) >= wmarks_low ({low})"
            raise params.error(section, "wmarks_mid", rule)
        wmarks = (interval, high, mid, low)

    node = params.get_int(section, "target_node", 0, MAX_NODE, required=False, bits=64)
    if action in MIGRATE_ACTIONS:
        if node is None:
            raise params.missing(section, "target_node")
        if not (Path(sys_root) / f"devices/system/node/node{node}").is_dir():
            raise params.error(section, "target_node", "no such NUMA node on this machine")
    elif node is not None:
        raise params.error(section, "target_node", "only goes with action=migrate_hot/_cold")

    scheme = scan.DamosScheme(
        action=action,
        sz=sz,
        nr_accesses=acc,
        age=age,
        quota_ms=quota_ms,
        quota_bytes=quota_bytes,
        quota_reset_ms=reset,
        psi_goal_us=goal,
        wmarks=wmarks,
        target_nid=node,
    )
    for field, reason in scan.damos_unsupported(scheme, proc_root):
        raise params.error(section, FIELD_KEYS[field], f"not supported here: {reason}")
    return DamonConfig(attrs=attrs, scheme=scheme)
