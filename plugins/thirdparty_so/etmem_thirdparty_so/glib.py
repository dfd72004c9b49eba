"""Real ``GKeyFile`` objects from the system libglib-2.0, for the policies' fill ops.

libglib is opened process-wide (``RTLD_GLOBAL``) so a policy that calls ``g_key_file_get_string``
resolves it from etmemd exactly as it did from the original etmemd, without linking glib itself.
libglib-2.0 is a runtime dependency of this plugin only.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from etmem_sdk import ConfigError

from . import abi

GLIB_SONAME = "libglib-2.0.so.0"


@functools.cache
def libglib() -> ctypes.CDLL:
    """The system libglib-2.0, loaded once with ``RTLD_GLOBAL``; ``ConfigError`` if absent."""
    try:
        lib = ctypes.CDLL(GLIB_SONAME, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    except OSError as exc:
        raise ConfigError(
            f"thirdparty engines need the system {GLIB_SONAME} (package libglib2.0-0): {exc}"
        ) from None
    abi.bind(lib, abi.GLIB_API)
    return lib


@contextmanager
def keyfile(text: str) -> Iterator[int]:
    """A ``GKeyFile*`` loaded from ``text``, freed when the block ends."""
    glib = libglib()
    # The core reads object files with surrogateescape: give glib the file's own bytes back, as
    # the original's g_key_file_load_from_file saw them (a stray byte in a comment is harmless
    # there; a bad value is refused when the policy reads it).
    data = text.encode("utf-8", "surrogateescape")
    handle = glib.g_key_file_new()
    try:
        if not glib.g_key_file_load_from_data(handle, data, len(data), 0, None):
            raise ConfigError("libglib could not load the object file as a key file")
        yield handle
    finally:
        glib.g_key_file_free(handle)


def get_string(handle: int, group: str, key: str) -> str | None:
    """``g_key_file_get_string`` (for tests and diagnostics); ``None`` if the key is absent."""
    glib = libglib()
    ptr = glib.g_key_file_get_string(handle, group.encode(), key.encode(), None)
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr).decode()
    finally:
        glib.g_free(ptr)
