"""Stand-in for ``etmem_sdk.params`` while that module is being written (same names, same messages).

Only imported when ``etmem_sdk.params`` is missing; delete once the SDK ships it.
"""

from __future__ import annotations

import re

from etmem_sdk import ConfigError

_INT = re.compile(r"[+-]?[0-9]+")


def _missing(section, key):
    return ConfigError(f"{section.label}: [{section.group}] {key}: key {key} not set")


def get_str(section, key, required=True, default=None):
    value = section.get(key)
    if value is None:
        if required:
            raise _missing(section, key)
        return default
    if value == "":
        raise ConfigError(f"{section.where(key)}: must not be empty")
    return value


def get_int(section, key, lo, hi, required=True, default=None):
    value = section.get(key)
    if value is None:
        if required:
            raise _missing(section, key)
        return default
    if not _INT.fullmatch(value) or not lo <= int(value) <= hi:
        raise ConfigError(f"{section.where(key)}: must be an integer from {lo} to {hi}")
    return int(value)


def get_choice(section, key, choices, required=True, default=None):
    value = section.get(key)
    if value is None:
        if required:
            raise _missing(section, key)
        return default
    if value not in choices:
        raise ConfigError(f"{section.where(key)}: must be one of {', '.join(choices)}")
    return value


def get_yes_no(section, key, required=True, default=None):
    value = get_choice(section, key, ("yes", "no"), required=required, default=None)
    if value is None:
        return default
    return value == "yes"
