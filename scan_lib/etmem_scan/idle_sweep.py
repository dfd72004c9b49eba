"""Captured idle_pages streams (``etmem scan --decode``), one per pass, accumulated.

:func:`decode_passes` is the page-level way (a :class:`PageRefs`); :func:`sweep` gets the same
counts as address ranges (:class:`Segments`) without a row per page, which is what
:mod:`.idle_text` turns into text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .idle_stream import (
    RECORD_STATES,
    RecordTables,
    Runs,
    StreamError,
    decode_runs,
    expand,
    record_tables,
    split_stream,
)
from .machine import PAGE_SIZE
from .pagerefs import (
    ADDR_DTYPE,
    COUNT_DTYPE,
    PMD,
    PTE,
    PUD,
    TYPE_DTYPE,
    PageRefs,
    accumulate,
    page_sizes,
)

log = logging.getLogger(__name__)


def _decode_pass(i: int, stream: bytes, page_size: int) -> Runs:
    try:
        return decode_runs(stream, page_size)
    except StreamError as e:
        e.pass_index = i  # type: ignore[attr-defined]  # which file, for the message
        raise


def decode_passes(streams: Sequence[bytes], page_size: int = PAGE_SIZE) -> PageRefs:
    """Accumulate captured streams, one per pass, into a :class:`PageRefs`.

    Raises :class:`StreamError` (with ``pass_index``) if any pass is one the original rejects:
    as in etmemd, one bad pass discards the whole result.
    """
    # a generator: one pass is alive at a time, counts are added in place
    passes = (expand(_decode_pass(i, s, page_size), page_size) for i, s in enumerate(streams))
    return accumulate(passes)


# The fast path works on runs, never on one row per page until the text is written: every pass
# becomes a sorted list of "events" (address where the pass's weight or page size changes),
# all passes' events are merged by one sort, and a cumulative sum over them gives, for every
# stretch of addresses, the accumulated count and which page size covers it.  Only the cold
# stretches are expanded to addresses, a chunk at a time, straight into text.

_CODE_BITS = 8  # an event's (from, to) state pair, in the low bits of its page-aligned address
_st = np.arange(RECORD_STATES)
_ST_W = np.where(_st > 0, (_st - 1) % 4, 0)
_ST_T = np.where(_st > 0, (_st - 1) // 4, -1)
_code = np.arange(1 << _CODE_BITS)
_frm, _to = np.minimum(_code // RECORD_STATES, RECORD_STATES - 1), _code % RECORD_STATES
EVENT_DW = (_ST_W[_to] - _ST_W[_frm]).astype(np.int8)
EVENT_DCOV = np.stack([(_ST_T[_to] == t).astype(np.int8) - (_ST_T[_frm] == t) for t in range(3)])
del _st, _code, _frm, _to


def _pass_events(i: int, stream: bytes, page_size: int, chunk: int = 1 << 16) -> list[np.ndarray]:
    """Events of one pass: ``address | from_state * 13 + to_state`` (uint64), address order
    within the pass, as one array per chunk.

    Same decoding rules as :func:`decode_runs`; works through the records a cache-sized chunk
    at a time, carrying the running address and state across chunks.
    """
    tab = record_tables(page_size)
    v, hva, first = split_stream(np.frombuffer(stream, dtype=np.uint8))
    n = len(v)
    if n == 0:
        return []

    def fail(what: str, at: int, why: str = "") -> StreamError:
        pos = at + 9 * int(np.searchsorted(first, at, side="right"))  # offset in the stream
        e = StreamError(f"{what} at byte {pos}{why}")
        e.pass_index = i  # type: ignore[attr-defined]
        return e

    bad = v >= 0xA0
    if bad.any():
        j = int(np.argmax(bad))
        raise fail(f"unknown idle_pages record 0x{int(v[j]):02x}", j)
    # a SET_HVA followed directly by another one governs nothing: keep the last per index
    if len(first):
        last = np.r_[first[1:] != first[:-1], True]
        first, hva = first[last], hva[last]
    first_in, hva_in = first[first < n], hva[first < n]
    check_align = bool(np.any(hva & np.uint64(page_size - 1))) or bool(
        tab.big[np.flatnonzero(np.bincount(v, minlength=256))].any()
    )
    keys: list[np.ndarray] = []
    # Lean path: when every record is bound to be aligned and no address can wrap past 2**64,
    # addresses are needed only where an event happens, not for every record.
    sizes = page_sizes(page_size)
    if (
        not check_align
        and (not len(hva) or int(hva.max()) < 1 << 62)
        and n * 15 * int(sizes[PUD]) < 1 << 62
    ):
        if not len(first_in) or first_in[0] > 0:
            raise fail("idle_pages record", 0, " before any address")
        if (hva_in == 0).any():
            at = int(first_in[np.argmax(hva_in == 0)])
            raise fail("idle_pages record", at, " before any address")
        return _lean_events(v, tab, first_in, hva_in, chunk)
    nskipped = 0
    u_carry = np.uint64(0)  # running address before SET_HVA corrections
    off = np.uint64(0)  # correction of the segment in force
    prev_state, prev_end = 0, 0
    for c0 in range(0, n, chunk):
        vc = v[c0 : c0 + chunk]
        m = len(vc)
        step = tab.step[vc]
        start = np.cumsum(step)
        start -= step
        start += u_carry
        u_carry = start[-1] + step[-1]
        lo, hi = np.searchsorted(first_in, [c0, c0 + m])
        js = first_in[lo:hi] - c0
        if len(js):
            seg_off = hva_in[lo:hi] - start[js]
            offs = np.repeat(np.r_[off, seg_off], np.diff(np.r_[0, js, m]))
            off = seg_off[-1]
            start += offs
        elif off:
            start += off
        zero = start == 0
        if zero.any():
            raise fail("idle_pages record", c0 + int(np.argmax(zero)), " before any address")
        state = tab.state[vc]
        if check_align:
            unaligned = (start & tab.align[vc]) != 0
            unaligned &= state > 0
            if unaligned.any():
                nskipped += int(unaligned.sum())
                state[unaligned] = 0
        change = np.flatnonzero(state[1:] != state[:-1]) + 1
        if state[0] != prev_state:
            change = np.r_[0, change]
        nkeys = len(keys)
        if len(js):  # a SET_HVA may move the address: close and reopen there
            change = change[~np.isin(change, js)]
            jb = np.maximum(js - 1, 0)
            jp = np.where(js > 0, state[jb], prev_state).astype(np.uint64)
            je = np.where(js > 0, start[jb] + step[jb], np.uint64(prev_end))
            keys += [je | (jp * np.uint64(RECORD_STATES)), start[js] | state[js].astype(np.uint64)]
        if len(change):
            before = np.where(change > 0, state[np.maximum(change - 1, 0)], prev_state)
            code = before.astype(np.uint64) * np.uint64(RECORD_STATES) + state[change]
            keys.append(start[change] | code)
        if len(keys) > nkeys + 1:  # jump events can be "nothing -> nothing": drop those
            new = np.concatenate(keys[nkeys:])
            keys[nkeys:] = [new[(new & np.uint64(0xFF)) != 0]]
        prev_state, prev_end = int(state[-1]), int(start[-1] + step[-1])
    if prev_state:
        keys.append(np.array([prev_end | prev_state * RECORD_STATES], ADDR_DTYPE))
    if nskipped:
        log.warning("idle_pages: ignored %d record(s) not aligned to their page size", nskipped)
    return keys


def _lean_events(
    v: np.ndarray, tab: RecordTables, first_in: np.ndarray, hva_in: np.ndarray, chunk: int
) -> list[np.ndarray]:
    """:func:`_pass_events` for streams whose records are all aligned and cannot wrap."""
    keys: list[np.ndarray] = []
    n13 = np.uint64(RECORD_STATES)
    e_carry = np.uint64(0)  # uncorrected end of the last record of the previous chunk
    off = np.uint64(0)  # SET_HVA correction in force
    prev_state = 0
    for c0 in range(0, len(v), chunk):
        vc = v[c0 : c0 + chunk]
        m = len(vc)
        ends = tab.step[vc]
        ends[0] += e_carry
        np.cumsum(ends, out=ends)  # uncorrected end of each record

        def ustart(idx: np.ndarray, ends=ends, e_carry=e_carry) -> np.ndarray:
            return np.where(idx > 0, ends[np.maximum(idx - 1, 0)], e_carry)

        lo, hi = np.searchsorted(first_in, [c0, c0 + m])
        js = first_in[lo:hi] - c0
        offs = np.r_[off, hva_in[lo:hi] - ustart(js)]  # correction from each SET_HVA on
        state = tab.state[vc]
        change = np.flatnonzero(state[1:] != state[:-1]) + 1
        if state[0] != prev_state:
            change = np.r_[0, change]
        nkeys = len(keys)
        if len(js):  # a SET_HVA may move the address: close and reopen there
            change = change[js[np.minimum(np.searchsorted(js, change), len(js) - 1)] != change]
            jp = np.where(js > 0, state[np.maximum(js - 1, 0)], prev_state).astype(np.uint64)
            keys += [(ustart(js) + offs[:-1]) | (jp * n13), hva_in[lo:hi] | state[js]]
        if len(change):
            before = np.where(change > 0, state[np.maximum(change - 1, 0)], prev_state)
            at = ustart(change) + offs[np.searchsorted(js, change, side="right")]
            keys.append(at | (before.astype(np.uint64) * n13 + state[change]))
        if len(keys) > nkeys + 1:  # jump events can be "nothing -> nothing": drop those
            new = np.concatenate(keys[nkeys:])
            keys[nkeys:] = [new[(new & np.uint64(0xFF)) != 0]]
        off, e_carry, prev_state = offs[-1], ends[-1], int(state[-1])
    if prev_state:
        keys.append(np.array([int(e_carry + off) | prev_state * RECORD_STATES], ADDR_DTYPE))
    return keys


@dataclass(frozen=True, slots=True)
class Segments:
    """Accumulated passes as address ranges: ``npages`` pages of ``type`` from ``start``, each
    with the same ``count``; sorted, not overlapping, only ranges some pass saw."""

    start: np.ndarray  # uint64
    npages: np.ndarray  # int64
    type: np.ndarray  # uint8
    count: np.ndarray  # int32


def _merged_events(streams: Sequence[bytes], page_size: int, chunk: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    for i, s in enumerate(streams):
        parts += _pass_events(i, s, page_size, chunk)
    keys = np.concatenate(parts) if parts else np.empty(0, ADDR_DTYPE)
    del parts
    keys.sort(kind="stable")  # each pass is sorted already: timsort merges the runs
    return keys


def sweep(
    streams: Sequence[bytes],
    page_size: int = PAGE_SIZE,
    chunk: int = 1 << 16,
    threshold: int | None = None,
) -> Segments | None:
    """Accumulate captured passes as :class:`Segments`.

    Same result as :func:`decode_passes`, without a row per page.  With ``threshold`` only
    the cold ranges (``count < threshold``) are kept, neighbours of one page size merged.
    Returns None when pages of different sizes overlap (a huge page split between passes,
    PMD_IDLE_PTES against PMD_ACCESSED): the type-of-first-sighting rule then needs the
    page-level path.  Raises :class:`StreamError` (with ``pass_index``) for a rejected pass.
    """
    keys = _merged_events(streams, page_size, chunk)
    sizes = page_sizes(page_size)
    out: list[Segments] = []
    carry = np.zeros(4, dtype=np.int64)  # count and coverage per page type before the chunk
    pend: tuple[np.ndarray, ...] | None = None  # last boundary of the previous chunk
    n, c0 = len(keys), 0
    low = np.uint64((1 << _CODE_BITS) - 1)
    while c0 < n:
        c1 = min(c0 + chunk, n)
        if c1 < n:  # all events at one address in the same chunk
            c1 = int(np.searchsorted(keys, ((keys[c1 - 1] >> np.uint64(_CODE_BITS)) + np.uint64(1))
                                     << np.uint64(_CODE_BITS)))  # fmt: skip
        kc = keys[c0:c1]
        code = (kc & low).astype(np.intp)
        kc &= ~low  # now the address
        last = np.flatnonzero(np.r_[kc[1:] != kc[:-1], True])
        state = [kc[last]]
        for t, table in enumerate((EVENT_DW, *EVENT_DCOV)):
            run = np.cumsum(table[code], dtype=np.int64)[last]
            run += carry[t]
            carry[t] = run[-1]
            state.append(run)
        if pend is not None:
            state = [np.r_[p, q] for p, q in zip(pend, state, strict=True)]
        pend = tuple(x[-1:] for x in state)
        bounds, count, cov = state[0], state[1][:-1], [c[:-1] > 0 for c in state[2:]]
        c0 = c1
        ncov = cov[0].astype(np.int8) + cov[1] + cov[2]
        if (ncov > 1).any():
            return None
        keep = ncov == 1
        if threshold is not None:
            keep &= count < threshold
        idx = np.flatnonzero(keep)
        if not len(idx):
            continue
        ptype = np.where(cov[1], PMD, np.where(cov[2], PUD, PTE)).astype(TYPE_DTYPE)[idx]
        start, end = bounds[idx], bounds[idx + 1]
        if threshold is not None:  # neighbours of one page size need not stay apart
            head = np.r_[True, (start[1:] != end[:-1]) | (ptype[1:] != ptype[:-1])]
            first = np.flatnonzero(head)
            last_of = np.r_[first[1:], len(idx)] - 1
            start, end, ptype, idx = start[first], end[last_of], ptype[first], idx[first]
        npages = ((end - start) // sizes[ptype]).astype(np.int64)
        out.append(Segments(start, npages, ptype, count[idx].astype(COUNT_DTYPE)))
    if not out:
        return Segments(np.empty(0, ADDR_DTYPE), np.empty(0, np.int64), np.empty(0, TYPE_DTYPE),
                        np.empty(0, COUNT_DTYPE))  # fmt: skip
    return Segments(*(np.concatenate([getattr(o, f) for o in out]) for f in Segments.__slots__))
