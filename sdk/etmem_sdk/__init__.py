"""etmem_sdk — what an etmem engine (policy) author imports.

    from etmem_sdk import hookimpl, ConfigError

    @hookimpl
    def fill_eng_params(engine, config): ...

Register the module holding the hookimpls under the ``etmem.engines`` entry-point group.
"""

from . import params  # typed key helpers: etmem_sdk.params.get_int ...
from .errors import ConfigError, EngineError, EtmemError, TargetGone
from .hookspecs import ENGINE_OPS, hookimpl, hookspec
from .model import (
    PAGE_SCAN,
    PSI_SCAN,
    REGION_SCAN,
    BufferReply,
    ConfigSection,
    Engine,
    Project,
    Reply,
    Task,
    TaskPid,
)

__all__ = [
    "ENGINE_OPS",
    "PAGE_SCAN",
    "PSI_SCAN",
    "REGION_SCAN",
    "BufferReply",
    "ConfigError",
    "ConfigSection",
    "Engine",
    "EngineError",
    "EtmemError",
    "Project",
    "Reply",
    "Task",
    "TaskPid",
    "TargetGone",
    "hookimpl",
    "hookspec",
    "params",
]
