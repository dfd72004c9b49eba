"""openEuler's ``/proc/PID/idle_pages`` byte stream, decoded to runs and to page entries.

Stream format (as etmemd_scan.c reads it): ``0xA0`` + 8-byte big-endian address sets the
current address; any other byte is ``type << 4 | n``: ``n`` pages of that type from the current
address, which then advances by ``n`` pages of the type's size.  Types 0-2 are accessed
(weight 1), 3-4 dirty (weight 3), 5-6 idle (weight 0), 7 a PMD whose PTEs are all idle, 8-9
holes (advance only).

The decoder works on whole arrays: it finds the real SET_HVA commands, gives every record byte
its address with one cumulative sum per stream, and expands records to pages with ``repeat``.
The tracker that reads the file is in :mod:`.idle_pages`; accumulating captured streams in
:mod:`.idle_sweep`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .machine import PAGE_SIZE
from .pagerefs import (
    ADDR_DTYPE,
    PMD,
    PTE,
    PUD,
    TYPE_DTYPE,
    WEIGHT_MAX,
    PageRuns,
    PassRefs,
    _fold,
    page_sizes,
)
from .tracker_interface import ScanError

log = logging.getLogger(__name__)

SET_HVA = 0xA0
PMD_IDLE_PTES = 7

# per idle_pages type 0..9: page type of the entries, and the size class the address advances by
_ENTRY_TYPE = np.array([PTE, PMD, PUD, PTE, PMD, PTE, PMD, PTE, PTE, PMD], dtype=TYPE_DTYPE)
_STEP_TYPE = np.array([PTE, PMD, PUD, PTE, PMD, PTE, PMD, PMD, PTE, PMD], dtype=TYPE_DTYPE)
_WEIGHT = np.array([1, 1, 1, 3, 3, 0, 0, 0, 0, 0], dtype=np.uint8)


class StreamError(ScanError):
    """The idle_pages stream is one the original rejects (the whole pass fails)."""


@dataclass(frozen=True, slots=True)
class Runs:
    """Decoded records of one read, run-length: ``npages`` entries of ``type`` from ``start``.

    ``end`` is the address after the last record (C's ``last_walk_end``; 0 if none was set).
    """

    start: np.ndarray  # uint64
    npages: np.ndarray  # int64
    type: np.ndarray  # uint8 page type (0 PTE, 1 PMD, 2 PUD)
    weight: np.ndarray  # uint8
    end: int

    def __len__(self) -> int:
        return len(self.start)

    @staticmethod
    def concat(parts: Sequence[Runs]) -> Runs:
        """All runs of ``parts`` in order; ``end`` of the last part."""
        if not parts:
            return _EMPTY_RUNS
        if len(parts) == 1:
            return parts[0]
        return Runs(
            np.concatenate([p.start for p in parts]),
            np.concatenate([p.npages for p in parts]),
            np.concatenate([p.type for p in parts]),
            np.concatenate([p.weight for p in parts]),
            parts[-1].end,
        )


_EMPTY_RUNS = Runs(
    np.empty(0, ADDR_DTYPE),
    np.empty(0, np.int64),
    np.empty(0, TYPE_DTYPE),
    np.empty(0, np.uint8),
    0,
)


def _set_hva_positions(b: np.ndarray) -> np.ndarray:
    """Offsets of the real SET_HVA commands (a 0xA0 inside another one's address is data)."""
    cand = np.flatnonzero(b == SET_HVA)
    if len(cand) < 2:
        return cand
    real = np.r_[True, np.diff(cand) > 8]  # nothing within 8 bytes before: cannot be payload
    for i in np.flatnonzero(~real):  # rare: clusters of 0xA0 bytes
        j = i - 1
        while not real[j]:
            j -= 1
        real[i] = cand[i] - cand[j] > 8
    return cand[real]


@dataclass(frozen=True, slots=True)
class RecordTables:
    """Per record byte (0..255): what the record means, so decoding is table lookups."""

    step: np.ndarray  # uint64: how far the address advances
    npages: np.ndarray  # int64: entries emitted (0 for holes and n=0)
    etype: np.ndarray  # uint8: page type of the entries
    weight: np.ndarray  # uint8
    align: np.ndarray  # uint64: alignment mask of the entry size
    state: np.ndarray  # uint8: 0 = no entries, else 1 + etype * 4 + weight
    big: np.ndarray  # bool: entries larger than a base page (their alignment needs a check)


#: how many values :attr:`RecordTables.state` takes (0 and 1 + 3 page types * 4 weights)
RECORD_STATES = 13

_TABLES: dict[int, RecordTables] = {}


def record_tables(page_size: int) -> RecordTables:
    """The :class:`RecordTables` for a base page size (built once per size)."""
    if page_size not in _TABLES:
        sizes = page_sizes(page_size)
        v = np.arange(256)
        t, n = v >> 4, v & 15
        valid = t < 10
        tt = np.where(valid, t, 8)  # invalid bytes are refused before the tables are used
        etype = _ENTRY_TYPE[tt]
        npages = np.where((tt <= PMD_IDLE_PTES) & valid, n, 0).astype(np.int64)
        npages[tt == PMD_IDLE_PTES] *= int(sizes[PMD] // sizes[PTE])
        weight = _WEIGHT[tt]
        _TABLES[page_size] = RecordTables(
            step=(n.astype(ADDR_DTYPE) * sizes[_STEP_TYPE[tt]]),
            npages=npages,
            etype=etype,
            weight=weight,
            align=sizes[etype] - np.uint64(1),
            state=np.where(npages > 0, 1 + etype.astype(np.int64) * 4 + weight, 0).astype(np.uint8),
            big=(npages > 0) & (etype != PTE),
        )
    return _TABLES[page_size]


@dataclass(frozen=True, slots=True)
class _Records:
    """The record bytes of one stream (SET_HVA commands removed) with their addresses."""

    v: np.ndarray  # uint8 record bytes
    start: np.ndarray  # uint64 address of each record
    keep: np.ndarray  # bool: the record emits entries (not a hole, n > 0, aligned)
    end: int  # address after the last record (C's last_walk_end)


def split_stream(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record bytes (SET_HVA commands cut out), and per SET_HVA: its address and the index of
    the first record it governs."""
    hva_pos = _set_hva_positions(b)
    cut = len(b)
    trunc = np.flatnonzero(hva_pos + 8 >= len(b))
    if len(trunc):  # an incomplete SET_HVA stops decoding there
        cut = int(hva_pos[trunc[0]])
        hva_pos = hva_pos[: trunc[0]]
    k = len(hva_pos)
    if not k:
        return b[:cut], np.empty(0, ADDR_DTYPE), np.empty(0, np.int64)
    hva = (
        np.ascontiguousarray(b[hva_pos[:, None] + np.arange(1, 9)])
        .view(">u8")
        .ravel()
        .astype(ADDR_DTYPE)
    )
    v = np.delete(b[:cut], (hva_pos[:, None] + np.arange(9)).ravel())
    return v, hva, hva_pos - 9 * np.arange(k)


def _records(b: np.ndarray, page_size: int) -> _Records:
    tab = record_tables(page_size)
    v, hva, first = split_stream(b)
    k = len(first)

    def byte_offset(i: int) -> int:  # position in the stream, for messages
        return i + 9 * int(np.searchsorted(first, i, side="right"))

    if len(v) == 0:
        return _Records(v, np.empty(0, ADDR_DTYPE), np.empty(0, bool), int(hva[-1]) if k else 0)
    if (v >= 0xA0).any():
        i = int(np.argmax(v >= 0xA0))
        raise StreamError(f"unknown idle_pages record 0x{int(v[i]):02x} at byte {byte_offset(i)}")
    step = tab.step[v]
    start = np.cumsum(step)
    start -= step  # address as if no SET_HVA had moved it
    if k:
        # add each SET_HVA's correction to the records it governs (records before the first
        # one keep address 0, which is the error below)
        at = np.minimum(first, len(v) - 1)
        off = hva - np.where(first < len(v), start[at], start[-1] + step[-1])
        lengths = np.diff(np.r_[first, len(v)])
        start[first[0] :] += np.repeat(off, lengths)
    zero = start == 0
    if zero.any():
        i = int(np.argmax(zero))
        raise StreamError(f"idle_pages record at byte {byte_offset(i)} before any address")
    end = int(hva[-1]) if k and first[-1] == len(v) else int(start[-1] + step[-1])
    keep = tab.npages[v] > 0
    unaligned = keep & ((start & tab.align[v]) != 0)
    if unaligned.any():
        bad = np.flatnonzero(unaligned)
        log.warning(
            "idle_pages: ignored %d record(s) not aligned to their page size, first at 0x%x",
            len(bad),
            int(start[bad[0]]),
        )
        keep &= ~unaligned
    return _Records(v, start, keep, end)


def decode_runs(buf: bytes | np.ndarray, page_size: int = PAGE_SIZE) -> Runs:
    """Decode one ``read()`` of idle_pages into runs of page entries.

    Follows etmemd: a SET_HVA with fewer than 8 address bytes left ends the stream; a record
    while the address is 0 (none set yet, or SET_HVA 0) is an error; records whose address is
    not aligned to their page size are skipped (the address still advances); PMD_IDLE_PTES
    becomes ``n * pmd/pte`` idle base pages -- the real ratio, not C's fixed 512.
    Raises :class:`StreamError` for streams the original rejects and for record types that
    do not exist (10 with a count, 11-15; C reads past its tables on those).
    """
    b = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray) else buf
    r = _records(b, page_size)
    tab = record_tables(page_size)
    v = r.v[r.keep]
    return Runs(r.start[r.keep], tab.npages[v], tab.etype[v], tab.weight[v], r.end)


def _run_heads(runs: Runs, page_size: int, chunk: int) -> np.ndarray | None:
    """Indices of the records that start a :class:`PageRuns` run (the others continue the
    record before them), or None when the records are not in strict address order.  Worked
    through a chunk of records at a time: per-record temporaries are 8 bytes each."""
    sizes = page_sizes(page_size)
    heads = [np.zeros(1, np.int64)]
    for c0 in range(0, len(runs), chunk):
        a, c1 = max(c0 - 1, 0), min(c0 + chunk, len(runs))  # one record of overlap
        start, ptype = runs.start[a:c1], runs.type[a:c1]
        size = sizes[ptype]
        end = runs.npages[a:c1].astype(ADDR_DTYPE)
        end *= size
        end += start
        if not np.all(start[1:] > end[:-1] - size[:-1]):  # after the previous last page
            return None
        cont = start[1:] == end[:-1]
        cont &= ptype[1:] == ptype[:-1]
        heads.append(np.flatnonzero(~cont) + (a + 1))
    return np.concatenate(heads)


def expand(runs: Runs, page_size: int = PAGE_SIZE, chunk: int = 1 << 16) -> PassRefs:
    """The pass ``runs`` describe: records that continue each other become one
    :class:`PageRuns` run, and each page gets its record's weight (1 byte per page).

    Records out of address order or overlapping (a SET_HVA moving back) take the exact way:
    one row per page entry (``repeat`` + ramp, a chunk at a time), sorted and folded.
    """
    total = int(runs.npages.sum()) if len(runs) else 0
    if total == 0:
        return PassRefs.empty()
    if not runs.npages.all():
        some = runs.npages > 0
        runs = Runs(runs.start[some], runs.npages[some], runs.type[some], runs.weight[some], 0)
    heads = _run_heads(runs, page_size, chunk)
    if heads is not None:
        ptype = runs.type[heads]
        return PassRefs.from_runs(
            PageRuns(runs.start[heads], np.add.reduceat(runs.npages, heads), ptype,
                     page_sizes(page_size)[ptype]),
            np.repeat(runs.weight, runs.npages),
        )  # fmt: skip
    sizes = page_sizes(page_size)[runs.type]
    first = (np.cumsum(runs.npages) - runs.npages).astype(ADDR_DTYPE)
    addr = np.repeat(runs.start - first * sizes, runs.npages)
    step = np.repeat(sizes, runs.npages)
    for c0 in range(0, total, chunk):
        part = addr[c0 : c0 + chunk]
        part += np.arange(c0, c0 + len(part), dtype=ADDR_DTYPE) * step[c0 : c0 + len(part)]
    del step
    addr, ptype, weight = _fold(
        addr, np.repeat(runs.type, runs.npages), np.repeat(runs.weight, runs.npages), WEIGHT_MAX
    )
    return PassRefs.from_runs(PageRuns.from_addresses(addr, ptype, page_size), weight)


def decode(buf: bytes | np.ndarray, page_size: int = PAGE_SIZE) -> PassRefs:
    """Decode one stream straight to page entries (see :func:`decode_runs`)."""
    return expand(decode_runs(buf, page_size), page_size)
