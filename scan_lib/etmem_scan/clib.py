"""Where the C scan library and its public headers are, for etmemd and for vendors' compilers.

A wheel carries both inside this package (``etmem_scan/lib/libetmemd_scan.so``,
``etmem_scan/include/*.h``; ``scan_lib/build_clib.py`` puts them there). An editable install has
neither: the headers are ``scan_lib/include`` of the checkout and the library is what
``make -C scan_lib`` built into ``scan_lib/build``. The installed copy always comes first.

Run as ``python -m etmem_scan.clib --cflags --libs`` it prints compiler flags, like ``pkg-config``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LIB_NAME = "libetmemd_scan.so"
_PKG = Path(__file__).resolve().parent
# An editable install imports this file from <checkout>/scan_lib/etmem_scan/.
_CHECKOUT_SCAN_LIB = _PKG.parent


def include_dir() -> Path:
    """The folder holding ``etmemd_thirdparty_export.h`` and ``etmemd_scan_export.h``."""
    installed = _PKG / "include"
    return installed if installed.is_dir() else _CHECKOUT_SCAN_LIB / "include"


def library_candidates() -> list[Path]:
    """Where ``libetmemd_scan.so`` may be, most trusted first: the installed copy, then the
    checkout's build (only present in an editable install)."""
    return [_PKG / "lib" / LIB_NAME, _CHECKOUT_SCAN_LIB / "build" / LIB_NAME]


def library_path() -> Path | None:
    """The ``libetmemd_scan.so`` that etmemd loads, or None when it is not built."""
    return next((p for p in library_candidates() if p.is_file()), None)


def main(argv: list[str] | None = None) -> int:
    """``python -m etmem_scan.clib``: print include and library flags for building a C policy."""
    ap = argparse.ArgumentParser(
        prog="python -m etmem_scan.clib",
        description="Print the compiler and linker flags for a C policy that uses etmem's headers "
        "and libetmemd_scan.so.",
    )
    ap.add_argument("--cflags", action="store_true", help="print -I<include folder>")
    ap.add_argument("--libs", action="store_true", help="print -L<library folder> -letmemd_scan")
    ap.add_argument("--includedir", action="store_true", help="print the include folder alone")
    ap.add_argument("--libdir", action="store_true", help="print the library folder alone")
    args = ap.parse_args(argv)
    lib = library_path()
    if (args.libs or args.libdir) and lib is None:
        print(
            f"{LIB_NAME} is not built (looked in: "
            + ", ".join(str(p) for p in library_candidates())
            + "); install the etmem wheel, or run `make -C scan_lib` in an editable checkout",
            file=sys.stderr,
        )
        return 1
    lib_dir = str(lib.parent) if lib is not None else ""  # refused above when it is needed
    words = []
    if args.cflags:
        words.append(f"-I{include_dir()}")
    if args.libs:
        words += [f"-L{lib_dir}", "-letmemd_scan"]
    if args.includedir:
        words.append(str(include_dir()))
    if args.libdir:
        words.append(lib_dir)
    if not words:
        ap.print_usage(sys.stderr)
        return 2
    print(" ".join(words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
