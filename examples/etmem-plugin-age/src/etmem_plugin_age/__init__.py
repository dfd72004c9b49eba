"""etmem-plugin-age: an etmem policy that pages out memory idle for N consecutive cycles.

The engine lives in :mod:`etmem_plugin_age.engine` (entry point ``age`` in ``etmem.engines``).
"""

__version__ = "0.1.0"
