"""A test target for policies: one mapping kept hot, one filled once and then left cold.

``python -m etmem_sdk._workload --hot-mib 8 --cold-mib 32 [--period 0.05]`` maps both, fills them
with non-zero bytes (the kernel does not write zero pages to swap), prints one JSON line
``{"hot": [start, end], "cold": [start, end]}`` and then writes one byte into every hot page each
``--period`` seconds until it is killed. Inaccessible guard pages sit around and between the two
mappings so the kernel keeps them as separate VMAs. Used by ``etmem_sdk.testing``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import time

import numpy as np

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _bytes_at(addr: int, length: int) -> np.ndarray:
    return np.ctypeslib.as_array(ctypes.cast(addr, ctypes.POINTER(ctypes.c_uint8)), (length,))


def main(argv: list[str] | None = None) -> None:
    """Map, fill, report, then keep the hot mapping hot until killed."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hot-mib", type=int, default=8)
    ap.add_argument("--cold-mib", type=int, default=32)
    ap.add_argument("--period", type=float, default=0.05)
    args = ap.parse_args(argv)

    hot_len, cold_len = args.hot_mib << 20, args.cold_mib << 20
    total = 3 * _PAGE + hot_len + cold_len
    base = _libc.mmap(
        None, total, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0
    )
    if base in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    hot = base + _PAGE
    cold = hot + hot_len + _PAGE
    for guard in (base, hot + hot_len, cold + cold_len):
        if _libc.mprotect(guard, _PAGE, 0):  # PROT_NONE splits the mapping into separate VMAs
            raise OSError(ctypes.get_errno(), "mprotect")
    _bytes_at(cold, cold_len)[:] = 0x5A
    hot_bytes = _bytes_at(hot, hot_len)
    hot_bytes[:] = 0xA5
    print(json.dumps({"hot": [hot, hot + hot_len], "cold": [cold, cold + cold_len]}), flush=True)
    one_per_page = hot_bytes[::_PAGE]
    n = 0
    while True:
        n = n % 255 + 1
        one_per_page[:] = n
        time.sleep(args.period)


if __name__ == "__main__":
    main()
