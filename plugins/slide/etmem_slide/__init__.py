"""slide: swap out the pages of a process that stayed cold for a whole cycle (entry point
``slide`` = :mod:`etmem_slide.engine`).

Modules: ``engine`` (the hooks and the per-engine, per-task, per-pid params), ``config`` (the
task's own keys), ``mechanism`` (which tracker and actuator, through the SDK), ``cycle`` (one
cycle for one pid), ``guard`` (no swap-out under memory pressure), ``claims`` (one scanner per
pid), ``stats`` (statistics and the ``showstats`` text).
"""
