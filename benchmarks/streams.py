"""Build the synthetic idle_pages streams described in benchmarks/streams.md, byte-exact.

One anonymous VMA at 0x7f0000000000; three passes; page ``i`` of the VMA is a hole if
``i % 4096 >= 4088``, else accessed in pass ``p`` (0-based) if ``4p <= i % 64 < 4p + 13``,
else idle.  Equal neighbours merge into ``type << 4 | n`` bytes (n <= 15) and a SET_HVA starts
every 1 GiB (flushing the pending run).  The 2 MiB case applies the same rule to PMD pages.

    python benchmarks/streams.py [--dir /var/tmp/etmem-bench]   # build (cached) and verify
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np

VMA_START = 0x7F0000000000
GIB = 1 << 30
DEFAULT_DIR = Path("/var/tmp/etmem-bench")

# name -> (bytes of memory, page size, ((size, sha256 prefix) for passes 1..3))
STREAMS: dict[str, tuple[int, int, tuple[tuple[int, str], ...]]] = {
    "1G-4K": (1 * GIB, 4096, ((20489, "cc1638f35267a1a9"), (20553, "d128bc432a04f12c"),
                              (20553, "b398289da4bfffe4"))),
    "4G-4K": (4 * GIB, 4096, ((81956, "6de20271919bbae2"), (82212, "7b6b956a9626c7f2"),
                              (82212, "a351ea963dd5c6a0"))),
    "16G-4K": (16 * GIB, 4096, ((327824, "bb6f2907ffe368bd"), (328848, "7197e16c463082fc"),
                                (328848, "12462b710be52257"))),
    "64G-4K": (64 * GIB, 4096, ((1311296, "f5d539c958c98a6b"), (1315392, "4ebfd0446f5ecaf9"),
                                (1315392, "33c318887c3aab8d"))),
    "64G-2M": (64 * GIB, 2 << 20, ((3136, "6ddd5e23983b58f8"), (3200, "3482acba70aa7a41"),
                                   (3144, "0e81160e632d4a83"))),
}  # fmt: skip

# idle_pages types (accessed, idle, hole) for PTE and PMD pages
KINDS = {4096: (0, 5, 8), 2 << 20: (1, 6, 9)}


def page_types(first: int, n: int, p: int, page: int) -> np.ndarray:
    """idle_pages type of pages ``first .. first+n-1`` in pass ``p`` (0-based)."""
    accessed, idle, hole = KINDS[page]
    i = np.arange(first, first + n)
    g = i % 64
    t = np.where((g >= 4 * p) & (g < 4 * p + 13), accessed, idle).astype(np.uint8)
    t[i % 4096 >= 4088] = hole
    return t


def encode_run_lengths(t: np.ndarray) -> bytes:
    """Merge equal neighbours into ``type << 4 | n`` bytes, n <= 15 (as the kernel does)."""
    if len(t) == 0:
        return b""
    starts = np.r_[0, np.flatnonzero(t[1:] != t[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(t)])
    kind = t[starts].astype(np.uint8) << 4
    full, rem = lengths // 15, lengths % 15
    nbytes = full + (rem > 0)
    out = np.repeat(kind | 15, nbytes)
    last = np.cumsum(nbytes) - 1
    out[last[rem > 0]] = (kind | rem)[rem > 0]
    return out.astype(np.uint8).tobytes()


def build(size: int, page: int, p: int) -> bytes:
    """The stream of pass ``p`` (0-based) over ``size`` bytes of ``page``-sized pages."""
    per_gib = GIB // page
    parts = []
    cache: dict[bytes, bytes] = {}
    for k in range(size // GIB):
        t = page_types(k * per_gib, per_gib, p, page)
        key = hashlib.sha1(t.tobytes()).digest()
        if key not in cache:  # the 4 KiB passes repeat every GiB
            cache[key] = encode_run_lengths(t)
        parts.append(b"\xa0" + struct.pack(">Q", VMA_START + k * GIB) + cache[key])
    return b"".join(parts)


def paths(name: str, directory: Path = DEFAULT_DIR) -> list[Path]:
    """The three pass files of stream ``name``, built and verified on first use."""
    size, page, expect = STREAMS[name]
    out = []
    for p, (nbytes, prefix) in enumerate(expect):
        f = directory / name / f"p{p + 1}.bin"
        if not (f.exists() and f.stat().st_size == nbytes):
            data = build(size, page, p)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        data = f.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != nbytes or not digest.startswith(prefix):
            raise SystemExit(f"{f}: {len(data)} bytes sha256 {digest[:16]}, want {nbytes} {prefix}")
        out.append(f)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cache directory (outside git)")
    args = ap.parse_args()
    for name in STREAMS:
        files = paths(name, args.dir)
        print(f"{name}: " + " ".join(f"{f} ({f.stat().st_size} B)" for f in files))
    print("all streams match streams.md (sizes and SHA-256 prefixes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
