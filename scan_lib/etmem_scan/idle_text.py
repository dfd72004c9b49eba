"""Text of accumulated idle_pages passes: the cold list (``0x%lx`` lines, what the slide engine
writes to ``swap_pages``) and the page list with counts, formatted from :func:`.idle_sweep.sweep`'s
ranges a chunk at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .idle_sweep import Segments, decode_passes, sweep
from .machine import PAGE_SIZE
from .pagerefs import (
    _HEX4,
    _PAD,
    ADDR_DTYPE,
    PageRefs,
    cold_mask,
    descending,
    format_hex_lines,
    format_refs,
    page_sizes,
)


def _desc_parts(
    seg: Segments, sizes: np.ndarray, lo: int, hi: int, cum: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For lines ``lo .. hi-1`` counted from the top page of ``seg``: per segment touched,
    ``k`` (the address of line ``l`` is ``k - l * size``), how many lines, and the size."""
    r0 = int(np.searchsorted(cum, lo, side="right"))
    r1 = int(np.searchsorted(cum, hi - 1, side="right")) + 1
    # segments are stored ascending; line l counts from the top: segment j = n - 1 - r
    n = len(seg.start)
    j = np.arange(n - 1 - r0, n - 1 - r1, -1)
    size = sizes[seg.type[j]]
    top = seg.start[j] + (seg.npages[j].astype(ADDR_DTYPE) - np.uint64(1)) * size
    first_line = np.r_[0, cum][r0:r1]  # global line index of each segment's top page
    take = np.minimum(cum[r0:r1], hi) - np.maximum(first_line, lo)
    return top + first_line.astype(ADDR_DTYPE) * size, take, size


def _expand_desc(
    seg: Segments, sizes: np.ndarray, lo: int, hi: int, cum: np.ndarray, ramp: np.ndarray | None
) -> np.ndarray:
    """Addresses ``lo .. hi-1`` of the pages of ``seg`` counted from the top (descending).

    ``ramp``: ``arange(n) * size`` when every segment has that one page size (else None).
    """
    k, take, size = _desc_parts(seg, sizes, lo, hi, cum)
    if ramp is not None:
        a = np.repeat(k - np.uint64(lo) * size, take)
        a -= ramp[: hi - lo]
        return a
    lines = np.arange(lo, hi, dtype=ADDR_DTYPE)
    return np.repeat(k, take) - lines * np.repeat(size, take)


_HEX8_20: np.ndarray | None = None


def _lines12_4k(k: np.ndarray, take: np.ndarray, lo: int, m: int, top: int, ramp32) -> bytes:
    """``0x%lx`` lines of 4 KiB pages whose addresses all have 12 hex digits and the same top
    16 bits: per line one table lookup on address bits 12-31 (8 digits of which the last
    three are "000") and two 8-byte stores."""
    global _HEX8_20
    if _HEX8_20 is None:  # 8 MiB, built on first use: bits 16-31 x bits 12-15
        low = _HEX4[np.arange(16) << 12].astype(np.uint64) << np.uint64(32)
        _HEX8_20 = (_HEX4.astype(np.uint64)[:, None] | low[None, :]).ravel()
    base = (((k >> np.uint64(12)) - np.uint64(lo)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    idx = np.repeat(base, take)
    idx -= ramp32[:m]
    idx &= np.uint32(0xFFFFF)
    buf = np.empty(_PAD + m * 15 + 8, dtype=np.uint8)
    const = np.frombuffer(b"\n0x" + _HEX4[top].tobytes() + b"\0", dtype=np.uint64)[0]
    np.ndarray((m + 1,), dtype=np.uint64, buffer=buf, offset=_PAD - 1, strides=(15,))[...] = const
    np.ndarray((m,), dtype=np.uint64, buffer=buf, offset=_PAD + 6, strides=(15,))[...] = np.take(
        _HEX8_20, idx
    )
    return buf[_PAD : _PAD + m * 15].tobytes()


def cold_text_chunks(
    streams: Sequence[bytes], threshold: int, page_size: int = PAGE_SIZE, chunk: int = 1 << 16,
    workers: int = 1, record_chunk: int = 1 << 16, table_min: int = 1 << 20,
) -> Iterator[bytes]:  # fmt: skip
    """The ``swap_pages`` text of the accumulated passes (``count < threshold``), in pieces.

    Exactly what the slide engine writes: ``0x%lx`` lines, highest address first.  Raises
    :class:`StreamError` (with ``pass_index``) for a pass the original rejects.  With two
    ``workers`` the next pieces are formatted in a thread while one is written (numpy drops
    the GIL); on the shared 2-core development VMs that was no faster (the other core is
    busy) and cost ~0.5 byte/page more, so the default is to do everything in this thread.
    """
    seg = sweep(streams, page_size, chunk=record_chunk, threshold=threshold)
    if seg is None:  # overlapping page sizes: the exact page-level path
        refs = decode_passes(streams, page_size)
        cold = descending(refs.addr[cold_mask(refs, threshold)])
        del refs
        for i in range(0, len(cold), chunk):
            yield format_hex_lines(cold[i : i + chunk], order=-1).tobytes()
        return
    total = int(seg.npages.sum())
    if total == 0:
        return
    sizes = page_sizes(page_size)
    cum = np.cumsum(seg.npages[::-1])  # lines before the end of each segment, from the top
    ramp = ramp32 = None
    if np.all(seg.type == seg.type[0]):
        ramp = np.arange(min(chunk, total), dtype=ADDR_DTYPE) * sizes[seg.type[0]]
        if sizes[seg.type[0]] == 4096 and total >= table_min:  # worth an 8 MiB table
            ramp32 = np.arange(min(chunk, total), dtype=np.uint32)

    def piece(lo: int) -> bytes:
        hi = min(lo + chunk, total)
        if ramp32 is not None:  # the common case: 4 KiB pages at 12-digit addresses
            k, take, _ = _desc_parts(seg, sizes, lo, hi, cum)
            a_hi, a_lo = int(k[0]) - lo * 4096, int(k[-1]) - (hi - 1) * 4096
            if 1 << 44 <= a_lo and a_hi < 1 << 48 and a_hi >> 32 == a_lo >> 32:
                return _lines12_4k(k, take, lo, hi - lo, a_hi >> 32, ramp32)
        return format_hex_lines(_expand_desc(seg, sizes, lo, hi, cum, ramp), order=-1).tobytes()

    starts = range(0, total, chunk)
    if workers <= 1 or len(starts) < 2:
        for lo in starts:
            yield piece(lo)
        return
    # numpy drops the GIL in take/copy: format the next pieces while this one is written
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for lo in starts:
            pending.append(pool.submit(piece, lo))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def refs_text_chunks(
    streams: Sequence[bytes], page_size: int = PAGE_SIZE, chunk: int = 1 << 16
) -> Iterator[bytes]:
    """``0x<addr> <count> <type>`` lines of the accumulated passes, by address, in pieces."""
    seg = sweep(streams, page_size)
    if seg is None:  # overlapping page sizes: the exact page-level path
        yield format_refs(decode_passes(streams, page_size))
        return
    total = int(seg.npages.sum())
    sizes = page_sizes(page_size)
    cum = np.cumsum(seg.npages)
    first = cum - seg.npages  # line of each segment's first page
    base = (
        seg.start - first.astype(ADDR_DTYPE) * sizes[seg.type]
    )  # address of line l = base + l*size
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        r0 = int(np.searchsorted(cum, lo, side="right"))
        r1 = int(np.searchsorted(cum, hi - 1, side="right")) + 1
        take = np.minimum(cum[r0:r1], hi) - np.maximum(first[r0:r1], lo)
        lines = np.arange(lo, hi, dtype=ADDR_DTYPE)
        addr = np.repeat(base[r0:r1], take) + lines * np.repeat(sizes[seg.type[r0:r1]], take)
        yield format_refs(PageRefs(addr, np.repeat(seg.type[r0:r1], take),
                                   np.repeat(seg.count[r0:r1], take)))  # fmt: skip


def refs_text(streams: Sequence[bytes], page_size: int = PAGE_SIZE) -> bytes:
    """``0x<addr> <count> <type>`` lines of the accumulated passes, by address."""
    return b"".join(refs_text_chunks(streams, page_size))
