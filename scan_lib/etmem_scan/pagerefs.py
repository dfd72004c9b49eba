"""Page references as numpy arrays: per-pass samples, accumulated counts, cold lists.

The C original keeps one malloc'd list node per page (32 bytes with the allocator's overhead)
and walks the list for every page it merges.  Here a pass is three parallel arrays and every
step -- merging passes, classifying, formatting the ``swap_pages`` text -- is a vector operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Page types, as the C ``enum page_type``.
PTE, PMD, PUD = 0, 1, 2

ADDR_DTYPE = np.uint64
TYPE_DTYPE = np.uint8
COUNT_DTYPE = np.int32


@dataclass(frozen=True, slots=True)
class PassRefs:
    """One scan pass: ``addr`` uint64, ``type`` uint8 (0 PTE / 1 PMD / 2 PUD), ``weight`` uint8."""

    addr: np.ndarray
    type: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.addr)

    @classmethod
    def empty(cls) -> PassRefs:
        """A pass that saw no page."""
        return cls(np.empty(0, ADDR_DTYPE), np.empty(0, TYPE_DTYPE), np.empty(0, np.uint8))


@dataclass(frozen=True, slots=True)
class PageRefs:
    """Accumulated references, sorted by ``addr`` (unique): ``addr`` uint64, ``type`` uint8,
    ``count`` int32 (sum of the pass weights)."""

    addr: np.ndarray
    type: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.addr)

    @classmethod
    def empty(cls) -> PageRefs:
        """No page at all."""
        return cls(np.empty(0, ADDR_DTYPE), np.empty(0, TYPE_DTYPE), np.empty(0, COUNT_DTYPE))


def _is_strictly_increasing(a: np.ndarray) -> bool:
    return len(a) < 2 or bool(np.all(a[1:] > a[:-1]))


def _reduce_pass(p: PassRefs) -> PageRefs:
    """Sort one pass by address and fold duplicates (weights add, first sighting's type stays)."""
    addr = np.asarray(p.addr, dtype=ADDR_DTYPE)
    ptype = np.asarray(p.type, dtype=TYPE_DTYPE)
    weight = np.asarray(p.weight)
    if _is_strictly_increasing(addr):
        return PageRefs(addr, ptype, weight.astype(COUNT_DTYPE))
    order = np.argsort(addr, kind="stable")  # stable: equal addresses keep stream order
    addr = addr[order]
    first = np.flatnonzero(np.r_[True, addr[1:] != addr[:-1]])
    count = np.add.reduceat(weight[order].astype(COUNT_DTYPE), first) if len(first) else None
    if count is None:
        return PageRefs.empty()
    return PageRefs(addr[first], ptype[order][first], count.astype(COUNT_DTYPE))


def merge(refs: PageRefs, p: PassRefs) -> PageRefs:
    """Add one pass to accumulated references.

    Same address: the count grows by the pass's weight and the type seen first is kept (as C's
    ``update_page_refs``).  New addresses are inserted in order.
    """
    new = _reduce_pass(p)
    if len(refs) == 0:
        return new
    if len(new) == 0:
        return refs
    if len(new) == len(refs) and np.array_equal(new.addr, refs.addr):
        # the steady state: every pass sees the same pages
        return PageRefs(refs.addr, refs.type, refs.count + new.count)
    idx = np.searchsorted(refs.addr, new.addr)
    hit = idx < len(refs)
    hit[hit] = refs.addr[idx[hit]] == new.addr[hit]
    count = refs.count.copy()
    count[idx[hit]] += new.count[hit]  # addresses in `new` are unique, so no lost updates
    miss = ~hit
    if not miss.any():
        return PageRefs(refs.addr, refs.type, count)
    at = idx[miss]
    return PageRefs(
        np.insert(refs.addr, at, new.addr[miss]),
        np.insert(refs.type, at, new.type[miss]),
        np.insert(count, at, new.count[miss]),
    )


def accumulate(passes: Iterable[PassRefs]) -> PageRefs:
    """Fold scan passes (in pass order) into one address-sorted :class:`PageRefs`."""
    refs = PageRefs.empty()
    for p in passes:
        refs = merge(refs, p)
    return refs


def cold_mask(refs: PageRefs, threshold: int) -> np.ndarray:
    """Pages the slide engine calls cold: ``count < threshold`` (``threshold=0``: none)."""
    return refs.count < threshold


def dram_percent_target(vm_rss_kb: int, vm_swap_kb: int, dram_percent: int, page_size: int) -> int:
    """How many pages must go so that ``dram_percent`` of the process stays in DRAM.

    Same integer arithmetic as the original (division before multiplication):
    ``keep = (VmRSS + VmSwap) / 100 * dram_percent``; nothing to do if ``keep > VmRSS``.
    """
    keep = (vm_rss_kb + vm_swap_kb) // 100 * dram_percent
    if keep > vm_rss_kb:
        return 0
    return (vm_rss_kb - keep) * 1024 // page_size


def dram_percent_mask(refs: PageRefs, threshold: int, target: int) -> np.ndarray:
    """Cold pages chosen in ``dram_percent`` mode.

    Pages are taken by ascending count and, within one count, by descending address (the
    original's bucket walk); only pages with ``count < threshold`` qualify, and at most
    ``target`` of them.  Unlike C's ``loop + 1`` buckets, counts above ``loop`` (dirty weights)
    just sort after the others instead of overrunning the bucket array.
    """
    mask = np.zeros(len(refs), dtype=bool)
    if target <= 0:
        return mask
    cand = np.flatnonzero(refs.count < threshold)[::-1]  # descending address
    if len(cand) > target:
        order = np.argsort(refs.count[cand], kind="stable")
        cand = cand[order[:target]]
    mask[cand] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Text formatting.  ``swap_pages`` takes ``0x%lx\n`` lines; formatting 13 M of them was 42 % of
# the original's time.  Each 16-bit slice of an address becomes four hex characters through one
# table lookup, stored straight into its column of a fixed-width line block.

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_V16 = np.arange(1 << 16)
# _HEX4[v] = the four hex digits of v (big-endian text) as a native uint32
_HEX4 = (
    np.ascontiguousarray(np.stack([_HEX[(_V16 >> s) & 15] for s in (12, 8, 4, 0)], axis=1))
    .view(np.uint32)
    .ravel()
)
del _V16
_0X = np.frombuffer(b"0x", dtype=np.uint16)[0]
_PAD = 4  # bytes before the first line: the top word of a line may start left of its "0x"


def hex_digits(a: np.ndarray) -> np.ndarray:
    """Number of lower-case hex digits ``%lx`` prints for each value (1 for zero)."""
    a = np.asarray(a, dtype=ADDR_DTYPE)
    nd = np.ones(len(a), dtype=np.int8)
    for d in range(1, 16):  # int8 compare-and-add runs in SIMD: cheaper than a bit length
        nd += a >= np.uint64(1 << (4 * d))
    return nd


def _format_block(a: np.ndarray, d: int, tail: bytes = b"\n", ordered: bool = False) -> np.ndarray:
    """``0x`` + exactly ``d`` hex digits + ``tail`` for every value of ``a`` (all < 16**d).

    ``ordered``: ``a`` is sorted (either way), so a top 16-bit word equal at both ends is
    the same everywhere and is written as a constant.
    """
    m = len(a)
    width = d + 2 + len(tail)
    buf = np.empty(_PAD + m * width + 8, dtype=np.uint8)
    words = a.view(np.uint16).reshape(m, 4)  # little-endian: column 0 = lowest 16 bits
    nwords = (d + 3) // 4
    top_const = ordered and words[0, nwords - 1] == words[-1, nwords - 1]
    lowest = nwords - 1
    if top_const and d % 4 == 0 and tail == b"\n":
        # one 8-byte constant per line boundary: "\n" + "0x" + the top 4 digits (+ 1 byte the
        # next word overwrites), instead of three separate stores
        const = np.frombuffer(
            b"\n0x" + _HEX4[int(words[0, nwords - 1])].tobytes() + b"\0", dtype=np.uint64
        )[0]
        np.ndarray((m + 1,), dtype=np.uint64, buffer=buf, offset=_PAD - 1, strides=(width,))[
            ...
        ] = const
        lowest = nwords - 2
        prefix_done = True
    else:
        prefix_done = False
    tmp = np.empty(m, dtype=np.uint32)
    for k in range(lowest, -1, -1):  # top word first: lower ones overwrite its spill
        off = _PAD + 2 + d - 4 * (k + 1)
        dst = np.ndarray((m,), dtype=np.uint32, buffer=buf, offset=off, strides=(width,))
        if k == nwords - 1 and top_const:
            dst[...] = _HEX4[int(words[0, k])]
        else:
            np.take(_HEX4, words[:, k], out=tmp, mode="wrap")
            dst[...] = tmp
    if not prefix_done:
        np.ndarray((m,), dtype=np.uint16, buffer=buf, offset=_PAD, strides=(width,))[...] = _0X
        for i, ch in enumerate(tail):
            buf[_PAD + d + 2 + i :: width][:m] = ch
    return buf[_PAD : _PAD + m * width]


_POW16 = np.array([1 << (4 * d) for d in range(1, 16)], dtype=ADDR_DTYPE)


def format_hex_lines(a: np.ndarray, order: int = 0) -> np.ndarray:
    """``0x%lx\\n`` for every value of ``a``, in the given order, as one uint8 array.

    ``order``: 0 unknown, 1 ascending, -1 descending (lets the digit-count blocks be found
    by binary search instead of a pass over the data).
    """
    a = np.ascontiguousarray(a, dtype=ADDR_DTYPE)
    m = len(a)
    if m == 0:
        return np.empty(0, dtype=np.uint8)
    if order:
        asc = a if order > 0 else a[::-1]
        cuts = np.searchsorted(asc, _POW16)  # values below 16**d have at most d digits
        cuts = np.unique(np.r_[0, cuts, m] if order > 0 else m - np.r_[m, cuts, 0])
        bounds = cuts
    else:
        nd = hex_digits(a)
        bounds = np.r_[0, np.flatnonzero(nd[1:] != nd[:-1]) + 1, m]
    # every block holds values of one digit count: that of its first value
    blocks = [(int(s), int(e)) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s]
    parts = [_format_block(a[s:e], len(f"{int(a[s]):x}"), ordered=bool(order)) for s, e in blocks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def descending(addrs: np.ndarray) -> np.ndarray:
    """``addrs`` in descending order (a reversed view when it is already ascending)."""
    a = np.asarray(addrs, dtype=ADDR_DTYPE)
    if len(a) < 2 or bool(np.all(a[1:] <= a[:-1])):
        return a
    if bool(np.all(a[1:] >= a[:-1])):
        return a[::-1]
    return np.sort(a)[::-1]


def format_cold(addrs: np.ndarray, chunk: int = 1 << 18) -> bytes:
    """The ``swap_pages`` text for ``addrs``: ``0x%lx\\n`` lines in descending address order."""
    a = descending(addrs)
    return b"".join(
        format_hex_lines(a[i : i + chunk], order=-1).tobytes() for i in range(0, len(a), chunk)
    )


def _decimal_columns(v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned decimal digits of non-negative ``v`` as (m, width) ASCII, plus a keep-mask."""
    v = v.astype(np.int64)
    cols = np.empty((len(v), width), dtype=np.uint8)
    rest = v.copy()
    for c in range(width - 1, -1, -1):
        cols[:, c] = 48 + rest % 10
        rest //= 10
    nd = np.ones(len(v), dtype=np.int64)
    for d in range(1, width):
        nd += v >= 10**d
    keep = np.arange(width)[None, :] >= (width - nd)[:, None]
    return cols, keep


def _format_refs_digits(refs: PageRefs) -> np.ndarray:
    """:func:`format_refs` when every count and type is one digit (always, unless dirty
    weights or many passes): fixed-width lines per hex-digit block, two digit columns."""
    a = np.ascontiguousarray(refs.addr, dtype=ADDR_DTYPE)
    nd = hex_digits(a)
    bounds = np.r_[0, np.flatnonzero(nd[1:] != nd[:-1]) + 1, len(a)]
    parts = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        d = int(nd[s])
        block = _format_block(a[s:e], d, b" 0 0\n")
        block[d + 3 :: d + 7] += refs.count[s:e].astype(np.uint8)
        block[d + 5 :: d + 7] += refs.type[s:e]
        parts.append(block)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def format_refs(refs: PageRefs) -> bytes:
    """``0x<addr> <count> <type>`` lines in address order (the golden ``c_refs.txt`` format)."""
    m = len(refs)
    if m == 0:
        return b""
    if int(refs.count.min()) >= 0 and int(refs.count.max()) < 10 and int(refs.type.max()) < 10:
        return _format_refs_digits(refs).tobytes()
    # fixed-width rows, then one boolean compaction drops the padding
    hexrows = _format_block(np.ascontiguousarray(refs.addr, dtype=ADDR_DTYPE), 16, b" ")
    hexrows = hexrows.reshape(m, 19)
    hexkeep = np.ones((m, 19), dtype=bool)
    hexkeep[:, 2:18] = np.arange(16)[None, :] >= (16 - hex_digits(refs.addr))[:, None]
    cnt, cntkeep = _decimal_columns(refs.count, 10)
    typ, typkeep = _decimal_columns(refs.type, 3)
    sep = np.full((m, 1), ord(" "), dtype=np.uint8)
    nl = np.full((m, 1), ord("\n"), dtype=np.uint8)
    rows = np.concatenate([hexrows, cnt, sep, typ, nl], axis=1)
    ones = np.ones((m, 1), dtype=bool)
    keep = np.concatenate([hexkeep, cntkeep, ones, typkeep, ones], axis=1)
    return rows[keep].tobytes()
