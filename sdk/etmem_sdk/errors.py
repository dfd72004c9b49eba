"""Exceptions shared by the core, the engines and the scan library."""

from __future__ import annotations


class EtmemError(Exception):
    """Base of every error etmem raises on purpose."""


class ConfigError(EtmemError):
    """A configuration value (or file) was rejected; the message names what and why."""


class EngineError(EtmemError):
    """An engine could not do what was asked (start failed, unknown command, ...)."""


class TargetGone(EngineError):
    """The target process exited or was replaced; the current cycle for it just ends."""
