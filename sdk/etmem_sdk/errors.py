"""The exceptions a policy raises and catches; defined in :mod:`etmem_scan.errors`."""

from __future__ import annotations

from etmem_scan.errors import ConfigError, EngineError, EtmemError, TargetGone

__all__ = ["ConfigError", "EngineError", "EtmemError", "TargetGone"]
