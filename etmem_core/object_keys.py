"""Validation of the keys the core itself reads: the project, the task's common keys, names.

The rules, defaults and order of checks are the original's (etmemd_project.c, etmemd_task.c);
every rejection is a :class:`~etmem_sdk.ConfigError` naming file, group, key, value and rule.
Integers outside the 32-bit range are refused instead of wrapped. Engine-specific keys (``T``,
``node_pair``, ...) are not read here: each engine validates its own in ``fill_eng_params`` /
``fill_task_params``.

Errors about the identifying keys (the ``project``/``engine``/``task`` names that locate an
object) are :class:`ObjectNameError`: the original answers those with OPT_INVAL, while a
``[task]`` whose other common keys are wrong is an OPT_INTER_ERR there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from etmem_sdk import PAGE_SCAN, PSI_SCAN, REGION_SCAN, ConfigError, ConfigSection, Project, Task
from etmem_sdk import params as P

log = logging.getLogger(__name__)

#: Longest project, engine or task name (C ``MAX_OBJ_NAME_LEN``).
MAX_OBJ_NAME_LEN = 64
#: Longest task ``value`` (C ``NAME_STR_MAX_LEN``; a process name is 15 characters).
NAME_STR_MAX_LEN = 15
SCAN_TYPES = (PAGE_SCAN, REGION_SCAN, PSI_SCAN)
TASK_TYPES = ("pid", "name")
THIRDPARTY = "thirdparty"

_VALUE_RE = re.compile(rf"[A-Za-z0-9./%_-]{{1,{NAME_STR_MAX_LEN}}}")
_VALUE_RULE = (
    f"must be 1 to {NAME_STR_MAX_LEN} characters, each a letter, a digit or one of . / % _ -"
)


class ObjectNameError(ConfigError):
    """An identifying key (project, engine or task name) is missing or too long."""


# --- identity -----------------------------------------------------------------------------------


def object_name(section: Mapping[str, str], key: str) -> str:
    """The value of the identifying key ``key``: it must be set, at most 64 characters, without
    whitespace or control characters, and not ``-``.

    An empty value passes, as in the original (the object's own checks refuse it later).
    """
    value = section.get(key)
    if value is None:
        raise ObjectNameError(str(P.missing(section, key)))
    if len(value) > MAX_OBJ_NAME_LEN:
        rule = f"must be at most {MAX_OBJ_NAME_LEN} characters (got {len(value)})"
        raise ObjectNameError(str(P.error(section, key, rule)))
    _check_reachable(section, key, value)
    return value


def is_plain_name(value: str | None) -> bool:
    """Whether ``value`` passes every check a name gets (:func:`object_name`, and a task's or
    project's own ``name`` rules): set, 1 to 64 printable characters, no space, not ``-``.

    Cheap, for the 10^5 task names one file may hold; a name it refuses is put through the
    checks themselves, which say why (or accept it).
    """
    return (
        value is not None
        and 0 < len(value) <= MAX_OBJ_NAME_LEN
        and " " not in value
        and value.isprintable()  # false for control characters and undecodable bytes
        and value != "-"
    )


def _check_reachable(section: Mapping[str, str], key: str, value: str) -> None:
    """Deliberate difference: refuse a name the wire protocol cannot carry (requests are split
    at spaces, ``-`` means "not given"): no request could reach that object, and a newline
    would forge lines in ``project show``. The original took such names silently."""
    # isprintable() is false for every whitespace character but the plain space
    if " " in value or not value.isprintable():
        rule = "must not contain spaces or control characters (etmem requests cannot carry them)"
        raise ObjectNameError(str(P.error(section, key, rule)))
    if value == "-":
        rule = "cannot be '-', which etmem requests use for 'not given'"
        raise ObjectNameError(str(P.error(section, key, rule)))


def project_identity(section: Mapping[str, str]) -> str:
    """The project a ``[project]`` section names (key ``name``)."""
    return object_name(section, "name")


def engine_name_key(name: str | None) -> str:
    """The key that names an ``[engine]`` in its project, given its ``name`` (the entry-point
    name): ``name`` itself, but ``eng_name`` for ``name=thirdparty``, so that a project can hold
    several thirdparty engines."""
    return "eng_name" if name == THIRDPARTY else "name"


def engine_identity(section: Mapping[str, str]) -> tuple[str, str]:
    """``(project, engine)`` of an ``[engine]`` section (see :func:`engine_name_key`)."""
    project = object_name(section, "project")
    name = object_name(section, "name")
    key = engine_name_key(name)
    return project, name if key == "name" else object_name(section, key)


def task_identity(section: Mapping[str, str]) -> tuple[str, str, str]:
    """``(project, engine, task)`` of a ``[task]`` section (keys ``project``, ``engine``,
    ``name``; ``engine`` is a thirdparty engine's ``eng_name``)."""
    return (
        object_name(section, "project"),
        object_name(section, "engine"),
        object_name(section, "name"),
    )


# --- project ------------------------------------------------------------------------------------


def _check_wmarks(section: Mapping[str, str], high: int, low: int) -> None:
    if high == -1 and low == -1:
        return
    if high == -1:
        raise P.error(section, "swapcache_low_wmark", "swapcache_high_wmark must be set too")
    if low == -1:
        raise P.error(section, "swapcache_high_wmark", "swapcache_low_wmark must be set too")
    if high <= low:
        rule = f"must be greater than swapcache_low_wmark ({low})"
        raise P.error(section, "swapcache_high_wmark", rule)


def parse_project(section: Mapping[str, str]) -> Project:
    """Build a :class:`~etmem_sdk.Project` from a ``[project]`` section.

    Keys, in the original's order: ``name`` (1..64 chars), ``scan_type`` (``page``, ``region``,
    ``psi``; default ``page``), ``sysmem_threshold`` (0..100, default -1 = off),
    ``swapcache_high_wmark`` / ``swapcache_low_wmark`` (1..100, both or neither, high > low);
    then for ``page``: ``loop`` 1..120, ``interval`` 1..1200, ``sleep`` 1..1200; for ``psi``:
    ``interval`` 1..1200; for ``region``: ``sample_interval``, ``aggr_interval``,
    ``update_interval`` (>= 0) and ``min_nr_regions`` < ``max_nr_regions`` (each >= 3).
    """
    name = P.get_str(section, "name", max_len=MAX_OBJ_NAME_LEN)
    _check_reachable(section, "name", name)
    scan_type = P.get_choice(section, "scan_type", SCAN_TYPES, required=False, default=PAGE_SCAN)
    sysmem = P.get_int(section, "sysmem_threshold", 0, 100, required=False, default=-1)
    high = P.get_int(section, "swapcache_high_wmark", 1, 100, required=False, default=-1)
    low = P.get_int(section, "swapcache_low_wmark", 1, 100, required=False, default=-1)
    _check_wmarks(section, high, low)
    proj = Project(
        name=name,
        scan_type=scan_type,
        sysmem_threshold=sysmem,
        swapcache_high_wmark=high,
        swapcache_low_wmark=low,
        config=section if isinstance(section, ConfigSection) else None,
    )
    if scan_type == PAGE_SCAN:
        proj.loop = P.get_int(section, "loop", 1, 120)
        proj.interval = P.get_int(section, "interval", 1, 1200)
        proj.sleep = P.get_int(section, "sleep", 1, 1200)
    elif scan_type == PSI_SCAN:
        proj.interval = P.get_int(section, "interval", 1, 1200)
    else:
        # C stores these in unsigned longs; negative values (which C wraps) are refused.
        region = {
            key: P.get_int(section, key, 0, bits=64)
            for key in ("sample_interval", "aggr_interval", "update_interval")
        }
        for key in ("min_nr_regions", "max_nr_regions"):
            region[key] = P.get_int(section, key, 3, bits=64)
        if region["min_nr_regions"] >= region["max_nr_regions"]:
            rule = f"must be less than max_nr_regions ({region['max_nr_regions']})"
            raise P.error(section, "min_nr_regions", rule)
        proj.region = region
    return proj


# --- task ---------------------------------------------------------------------------------------


def check_task_value(section: Mapping[str, str], key: str = "value") -> str:
    """A task ``value``: 1..15 characters of ``[A-Za-z0-9./%_-]`` (for both ``pid`` and ``name``
    tasks, as in the original; 15 is the kernel's process-name length)."""
    value = P.get_str(section, key)
    if not _VALUE_RE.fullmatch(value):
        raise P.error(section, key, _VALUE_RULE)
    return value


def parse_task(section: Mapping[str, str], *, nprocs: int | None = None) -> Task:
    """Build a :class:`~etmem_sdk.Task` from the common keys of a ``[task]`` section.

    ``name`` (1..64 chars), ``type`` (``pid``/``name``), ``value`` (see
    :func:`check_task_value`), ``swap_flag`` (``yes``/``no``, default no), ``max_threads``
    (default 1; values below 1 become 1 and values above ``2 * nprocs + 1`` are lowered to it,
    each with a warning, as in the original). ``nprocs`` defaults to the online CPU count.
    """
    name = P.get_str(section, "name", max_len=MAX_OBJ_NAME_LEN)
    task_type = P.get_choice(section, "type", TASK_TYPES)
    value = check_task_value(section)
    swap_flag = P.get_yes_no(section, "swap_flag", required=False, default=False)
    threads = P.get_int(section, "max_threads", required=False, default=1)
    if threads < 1:
        log.warning("%s: fewer than 1 thread makes no sense, using 1", _where(section))
        threads = 1
    limit = 2 * (nprocs if nprocs is not None else (os.cpu_count() or 1)) + 1
    if threads > limit:
        log.warning("%s: limited to 2 * CPUs + 1 = %d", _where(section), limit)
        threads = limit
    return Task(
        name=name,
        type=task_type,
        value=value,
        max_threads=threads,
        swap_flag=swap_flag,
        config=section if isinstance(section, ConfigSection) else None,
    )


def _where(section: Mapping[str, str]) -> str:
    where = getattr(section, "where", None)
    return where("max_threads") if where else f"max_threads={section.get('max_threads')}"
