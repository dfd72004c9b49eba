"""cslide: keep each process's hot pages on the fast node of a NUMA pair and its cold pages on
the slow node (entry point ``cslide`` = :mod:`etmem_cslide.engine`).

Modules: ``config`` (keys and machine facts), ``policy`` (the pure placement decision),
``cycle`` (the engine thread), ``host`` (the machine through the SDK's scan facade),
``state`` (per-pid states and the engine's params), ``show`` (the private commands' text).
"""
