"""The rules by which etmem trusts a file, as engines and the core see them (see
``etmem_scan.trusted_files``, where each rule is written once)."""

from __future__ import annotations

from etmem_scan.trusted_files import (
    GROUP_OTHER_WRITE,
    Flaw,
    Untrusted,
    owned_by_root_with_mode,
    untrusted_directory,
    writable_only_by,
)

__all__ = [
    "GROUP_OTHER_WRITE",
    "Flaw",
    "Untrusted",
    "owned_by_root_with_mode",
    "untrusted_directory",
    "writable_only_by",
]
