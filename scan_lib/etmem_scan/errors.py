"""Exceptions shared by the scan library, the SDK, the engines and the core.

They live at the bottom of the stack so that the scan library raises them without importing
the SDK; :mod:`etmem_sdk.errors` re-exports them for policy authors.
"""

from __future__ import annotations


class EtmemError(Exception):
    """Base of every error etmem raises on purpose."""


class ConfigError(EtmemError):
    """A configuration value (or file) was rejected; the message names what and why."""


class EngineError(EtmemError):
    """An engine could not do what was asked (start failed, unknown command, ...)."""


class TargetGone(EngineError):
    """The target process exited or was replaced; the current cycle for it just ends."""
