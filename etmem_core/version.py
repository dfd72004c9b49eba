"""The installed distribution's version, for ``etmem --version`` and ``etmemd --version``."""

from __future__ import annotations

from importlib import metadata

DIST = "etmem"


def version() -> str:
    """The version pip installed (``unknown`` when run from a tree that was never installed)."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown"
