"""Run from a checkout without installing: put src/ on the path if the package is not installed.

The fixtures (``etmem_engine``, ``etmem_fake_proc``, ``etmem_workload`` ...) come from the
``etmem_sdk.testing`` pytest plugin that the etmem distribution registers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("etmem_plugin_age") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
