"""The names of the trackers and actuators, the one table every layer chooses from.

Kept apart from the implementations so that a config checker can list the choices without
importing numpy or ctypes.
"""

from __future__ import annotations

#: Every tracker, most precise first (the default is the first one that works here).
TRACKERS = ("idle_pages", "page_idle", "damon", "probe", "refs")

#: Every actuator, in order of preference.
ACTUATORS = ("swap_pages", "pageout", "cold", "migrate")

#: The actuators that serve each purpose, in order of preference: ``swap`` (slide,
#: ``etmem scan``), ``migrate`` (cslide), ``cold`` (only mark pages cold, MADV_COLD).
ACTUATORS_FOR = {"swap": ("swap_pages", "pageout"), "migrate": ("migrate",), "cold": ("cold",)}
