"""etmem_sdk — what an etmem engine (policy) author imports.

    from etmem_sdk import hookimpl, ConfigError

    @hookimpl
    def fill_eng_params(engine, config): ...

Register the module holding the hookimpls under the ``etmem.engines`` entry-point group.

Submodules, imported on their own (``from etmem_sdk import scan``):

* :mod:`etmem_sdk.params` -- typed config keys with etmem's error messages;
* :mod:`etmem_sdk.scan` -- VMAs, page trackers, page arrays, actuators, the capability probe;
* :mod:`etmem_sdk.worker` -- ``PeriodicWorker``: a policy's cycle on the project's timing;
* :mod:`etmem_sdk.targets` -- a task's target pids (main pid + direct children) each cycle;
* :mod:`etmem_sdk.testing` -- pytest fixtures: run a policy on a fake /proc or a live child.
* :mod:`etmem_sdk.trusted_files` -- the rules for trusting a file etmemd reads or loads.

``docs/writing-a-policy.md`` walks through all of it.
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
