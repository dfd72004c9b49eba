"""The C scan library and headers as the SDK's users see them (see ``etmem_scan.clib``).

Engines and the CLI reach the mechanism through the SDK only; this is that seam for the files a
C policy is compiled against and the library etmemd loads for it.
"""

from __future__ import annotations

from etmem_scan.clib import LIB_NAME, include_dir, library_candidates, library_path, main

__all__ = ["LIB_NAME", "include_dir", "library_candidates", "library_path", "main"]
