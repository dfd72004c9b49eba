"""A test target for policies: one mapping it keeps touching (hot), one it filled once (cold).

Run as ``python -m etmem_sdk._workload --hot-mib 8 --cold-mib 32 [--period 0.05] [--file PATH]``
(``etmem_sdk.testing.spawn_workload`` does). It imports nothing heavy, so it starts in tens of
milliseconds.
Prints one JSON line once everything is mapped and filled::

    {"hot": [start, end], "cold": [start, end], "extra": {...}}

then writes one byte into every hot page each ``--period`` seconds until killed.

Each mapping is its own VMA: guard pages with no access sit before, between and after them,
so the kernel cannot merge them with each other or with the interpreter's own mappings.
Both are filled with non-zero bytes (the kernel does not write zero pages to swap).
With ``--interleave N`` there is instead ONE mapping of ``--size-mib`` MiB in which every Nth
page (page index divisible by N) is hot and the others were filled once -- the shape of a real
heap, which per-mapping trackers cannot split; ``hot`` and ``cold`` then both name that mapping
and ``interleave`` says N.
With ``--file`` it also maps, for the anonymous-rule tests: the file private read-only, the
file private writable, and one page of shared anonymous memory (addresses under ``extra``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import time

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]  # fmt: skip
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE = 0
MAP_FAILED = ctypes.c_void_p(-1).value


def _mmap(length: int, prot: int, flags: int, fd: int = -1) -> int:
    addr = libc.mmap(None, length, prot, flags, fd, 0)
    if addr in (None, MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap")
    return addr


def _view(addr: int, length: int) -> memoryview:
    return memoryview((ctypes.c_ubyte * length).from_address(addr)).cast("B")


def _fill(addr: int, length: int, byte: int) -> None:
    ctypes.memset(addr, byte, length)


def main(argv: list[str] | None = None) -> None:
    """Map, fill, report, then keep the hot mapping hot until killed."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hot-mib", type=int, default=8)
    ap.add_argument("--cold-mib", type=int, default=32)
    ap.add_argument("--period", type=float, default=0.05)
    ap.add_argument("--file", default=None)
    ap.add_argument("--interleave", type=int, default=0, help="one mapping, every Nth page hot")
    ap.add_argument("--size-mib", type=int, default=64, help="size of the interleaved mapping")
    args = ap.parse_args(argv)
    if args.interleave:
        return _interleaved(args.interleave, args.size_mib << 20, args.period)

    hot_len, cold_len = args.hot_mib << 20, args.cold_mib << 20
    total = PAGE + hot_len + PAGE + cold_len + PAGE
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    base = _mmap(total, rw, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    hot = base + PAGE
    cold = hot + hot_len + PAGE
    for guard in (base, hot + hot_len, cold + cold_len):
        if libc.mprotect(guard, PAGE, PROT_NONE):
            raise OSError(ctypes.get_errno(), "mprotect")
    _fill(cold, cold_len, 0x5A)
    _fill(hot, hot_len, 0xA5)

    extra = {}
    if args.file:
        import os

        fd = os.open(args.file, os.O_RDWR)
        size = os.fstat(fd).st_size
        ro = _mmap(size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd)
        wr = _mmap(size, rw, mmap.MAP_PRIVATE, fd)
        _view(ro, size)[0]  # noqa: B018 - fault the pages in
        _fill(wr, size, 1)
        sh = _mmap(PAGE, rw, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        _fill(sh, PAGE, 1)
        extra = {"file_ro": [ro, ro + size], "file_rw": [wr, wr + size], "shared": [sh, sh + PAGE]}

    print(json.dumps({"hot": [hot, hot + hot_len], "cold": [cold, cold + cold_len],
                      "extra": extra}), flush=True)  # fmt: skip
    hot_v = _view(hot, hot_len)
    npages = hot_len // PAGE
    n = 0
    while True:
        n = (n + 1) & 0xFF or 1
        hot_v[::PAGE] = bytes([n]) * npages  # one write into every hot page
        time.sleep(args.period)


def _interleaved(every: int, length: int, period: float) -> None:
    """One mapping (guard pages around it), every ``every``-th page kept hot."""
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    base = _mmap(length + 2 * PAGE, rw, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = base + PAGE
    for guard in (base, start + length):
        if libc.mprotect(guard, PAGE, PROT_NONE):
            raise OSError(ctypes.get_errno(), "mprotect")
    _fill(start, length, 0x5A)
    print(json.dumps({"hot": [start, start + length], "cold": [start, start + length],
                      "extra": {}, "interleave": every}), flush=True)  # fmt: skip
    view = _view(start, length)
    nhot = len(range(0, length, PAGE * every))
    n = 0
    while True:
        n = (n + 1) & 0xFF or 1
        view[:: PAGE * every] = bytes([n]) * nhot  # one write into every hot page
        time.sleep(period)


if __name__ == "__main__":
    main()  # runs until killed
