"""The slide engine's own ``[task]`` keys: ``T``, ``swap_threshold``, ``dram_percent``, plus the
portable ``tracker`` / ``actuator`` overrides, the ``probe`` tracker's ``probe_rate`` /
``probe_cooldown`` and the pressure guard's ``pressure_limit`` / ``pressure_window`` /
``pressure_scope`` (the original ignores unknown keys, so a config holding them still loads
there)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from etmem_sdk import ConfigError, ConfigSection, Project, scan
from etmem_sdk import params as P

log = logging.getLogger(__name__)

#: Tracker / actuator names a task may force; the probe decides whether they work here.
TRACKERS = scan.TRACKERS
ACTUATORS = scan.ACTUATORS_FOR["swap"]

#: ``probe_rate``: MiB per second the probe tracker may page out for the task (all its pids).
PROBE_RATE_RANGE = (1, 1024)
#: ``probe_cooldown``: seconds a page found hot is not probed again (doubling, at most 64x).
PROBE_COOLDOWN_RANGE = (1, 86400)

#: ``pressure_limit``: percent of wall time (PSI ``some``) at which swap-out pauses.
PRESSURE_LIMIT_RANGE = (0.0, 100.0)
PRESSURE_WINDOWS = ("avg10", "avg60", "avg300")
PRESSURE_SCOPES = ("cgroup", "system")

_SWAP_THRESHOLD_MAX_LEN = 10  # C: total length 1..10, e.g. "999999999g"

#: Every key :func:`parse_task_config` reads: with the project's ``loop``, they decide its
#: result, so tasks that agree on them can share one (a file may hold 10^5 tasks).
TASK_KEYS = (
    "T",
    "swap_threshold",
    "dram_percent",
    "tracker",
    "actuator",
    "probe_rate",
    "probe_cooldown",
    "pressure_limit",
    "pressure_window",
    "pressure_scope",
)


@dataclass(frozen=True, slots=True)
class SlideTaskConfig:
    """Validated slide task keys (part of ``task.params``)."""

    T: int
    swap_threshold_kb: int = 0  # 0 = unset (C: "g" alone also parses as 0)
    dram_percent: int = 0  # 0 = disabled
    tracker: str | None = None  # None = pick from the probe
    actuator: str | None = None
    probe_rate_mib: int = scan.PROBE_RATE_MIB
    probe_cooldown: int = scan.PROBE_COOLDOWN
    pressure_limit: float | None = None  # None = no pressure guard
    pressure_window: str = "avg10"
    pressure_scope: str = "cgroup"


def parse_swap_threshold(text: str) -> int:
    """``swap_threshold`` value -> kB (``N`` gibibytes, written ``Ng`` or ``NG``).

    Same acceptance as the original: 1..10 characters, every character but the last a digit,
    the last ``g`` or ``G``. Raises ``ValueError`` otherwise.
    """
    if not 1 <= len(text) <= _SWAP_THRESHOLD_MAX_LEN:
        raise ValueError("must be 1 to 10 characters long")
    digits, unit = text[:-1], text[-1]
    if unit not in "gG":
        raise ValueError("must end with g or G (only gibibytes are supported)")
    if digits and not (digits.isascii() and digits.isdigit()):
        raise ValueError("must be digits followed by g or G")
    return int(digits or "0") << 20


def parse_task_config(section: ConfigSection, project: Project | None) -> SlideTaskConfig:
    """Validate the slide keys of a ``[task]`` section against its (page-scan) ``project``.

    Raises ``ConfigError`` whose message names the file, group, key and rule.
    """
    loop = project.loop if project is not None else None
    if loop is None:
        raise ConfigError(
            f"{section.label}: [task] slide needs a project with scan_type=page (loop is not set)"
        )
    t_value = P.get_int(section, "T", 0, loop * 3)
    assert t_value is not None

    swap_kb = 0
    if "swap_threshold" in section:
        try:
            swap_kb = parse_swap_threshold(section["swap_threshold"])
        except ValueError as exc:
            raise P.error(section, "swap_threshold", str(exc)) from None

    dram = 0
    if "dram_percent" in section:
        dram = P.get_int(section, "dram_percent") or 0
        if not 1 <= dram <= 100:
            # C accepts it with a warning and disables the feature.
            log.warning(
                "%s: not from 1 to 100, dram_percent disabled", section.where("dram_percent")
            )
            dram = 0

    tracker = P.get_choice(section, "tracker", TRACKERS, required=False)
    actuator = P.get_choice(section, "actuator", ACTUATORS, required=False)
    rate = P.get_int(section, "probe_rate", *PROBE_RATE_RANGE, required=False)
    cooldown = P.get_int(section, "probe_cooldown", *PROBE_COOLDOWN_RANGE, required=False)
    lo, hi = PRESSURE_LIMIT_RANGE
    limit = P.get_double(section, "pressure_limit", above=lo, hi=hi, required=False)
    window = P.get_choice(section, "pressure_window", PRESSURE_WINDOWS, required=False)
    scope = P.get_choice(section, "pressure_scope", PRESSURE_SCOPES, required=False)
    if limit is None:
        for key in ("pressure_window", "pressure_scope"):
            if key in section:
                raise P.error(section, key, "needs pressure_limit (the guard is off without it)")
    return SlideTaskConfig(
        T=t_value,
        swap_threshold_kb=swap_kb,
        dram_percent=dram,
        tracker=tracker,
        actuator=actuator,
        probe_rate_mib=scan.PROBE_RATE_MIB if rate is None else rate,
        probe_cooldown=scan.PROBE_COOLDOWN if cooldown is None else cooldown,
        pressure_limit=limit,
        pressure_window=window or "avg10",
        pressure_scope=scope or "cgroup",
    )


def check_tracker_here(
    section: ConfigSection, cfg: SlideTaskConfig, caps: scan.Capabilities
) -> None:
    """Refuse (at ``obj add``) a ``tracker=`` this machine cannot run, with the capability
    probe's reason -- the words ``etmem sysinfo`` uses (``probe`` without swap names it)."""
    if cfg.tracker is None:
        return
    verdict = caps.trackers.get(cfg.tracker)
    if verdict is not None and not verdict.usable:
        raise P.error(
            section, "tracker", f"tracker {cfg.tracker} cannot work here: {verdict.reason}"
        )
