"""openEuler's ``/proc/PID/idle_pages``: the byte-stream decoder and the ``idle_pages`` tracker.

Stream format (reference §8.4): ``0xA0`` + 8-byte big-endian address sets the current address;
any other byte is ``type << 4 | n``: ``n`` pages of that type from the current address, which
then advances by ``n`` pages of the type's size.  Types 0-2 are accessed (weight 1), 3-4 dirty
(weight 3), 5-6 idle (weight 0), 7 a PMD whose PTEs are all idle, 8-9 holes (advance only).

The decoder works on whole arrays: it finds the real SET_HVA commands, gives every record byte
its address with one cumulative sum per stream, and expands records to pages with ``repeat``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .machine import PAGE_SIZE
from .pagerefs import (
    _HEX4,
    _PAD,
    ADDR_DTYPE,
    COUNT_DTYPE,
    PMD,
    PTE,
    PUD,
    TYPE_DTYPE,
    WEIGHT_MAX,
    PageRefs,
    PageRuns,
    PassRefs,
    _fold,
    accumulate,
    cold_mask,
    descending,
    format_hex_lines,
    format_refs,
    page_sizes,
)
from .tracker import ScanError, Tracker, VmaRange

log = logging.getLogger(__name__)

# ioctl numbers: _IOW(0x66, nr, unsigned int) on x86_64 / arm64
IDLE_SCAN_ADD_FLAGS = 0x40046600
IDLE_SCAN_REMOVE_FLAGS = 0x40046601
VMA_SCAN_ADD_FLAGS = 0x40046602
VMA_SCAN_REMOVE_FLAGS = 0x40046603

SCAN_AS_HUGE = 0x01000000  # report KVM guest memory per 2 MiB
SCAN_IGN_HOST = 0x02000000  # report host pages as idle
VMA_SCAN_FLAG = 0x1000  # only VMAs marked with madvise(..., 203)
ALL_SCAN_FLAGS = SCAN_AS_HUGE | SCAN_IGN_HOST | VMA_SCAN_FLAG

SET_HVA = 0xA0
PMD_IDLE_PTES = 7
# etmemd's minimum read buffer: the kernel refuses less than 19 bytes
IDLE_BUF_MIN = 20

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
class _Tables:
    """Per record byte (0..255): what the record means, so decoding is table lookups."""

    step: np.ndarray  # uint64: how far the address advances
    npages: np.ndarray  # int64: entries emitted (0 for holes and n=0)
    etype: np.ndarray  # uint8: page type of the entries
    weight: np.ndarray  # uint8
    align: np.ndarray  # uint64: alignment mask of the entry size
    state: np.ndarray  # uint8: 0 = no entries, else 1 + etype * 4 + weight
    big: np.ndarray  # bool: entries larger than a base page (their alignment needs a check)


_TABLES: dict[int, _Tables] = {}


def _tables(page_size: int) -> _Tables:
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
        _TABLES[page_size] = _Tables(
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


def _records(b: np.ndarray, page_size: int) -> _Records:
    tab = _tables(page_size)
    v, hva, first = _stream_header(b)
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
        i = np.flatnonzero(unaligned)
        log.warning(
            "idle_pages: ignored %d record(s) not aligned to their page size, first at 0x%x",
            len(i),
            int(start[i[0]]),
        )
        keep &= ~unaligned
    return _Records(v, start, keep, end)


def decode_runs(buf: bytes | np.ndarray, page_size: int = PAGE_SIZE) -> Runs:
    """Decode one ``read()`` of idle_pages into runs of page entries.

    Follows etmemd: a SET_HVA with fewer than 8 address bytes left ends the stream; a record
    while the address is 0 (none set yet, or SET_HVA 0) is an error; records whose address is
    not aligned to their page size are skipped (the address still advances); PMD_IDLE_PTES
    becomes ``n * pmd/pte`` idle base pages -- the real ratio, not C's fixed 512 (§13.23).
    Raises :class:`StreamError` for streams the original rejects and for record types that
    do not exist (10 with a count, 11-15; C reads past its tables on those).
    """
    b = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray) else buf
    r = _records(b, page_size)
    tab = _tables(page_size)
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


def read_size(start: int, end: int, page_size: int = PAGE_SIZE) -> int:
    """etmemd's buffer for ``[start, end)``: one byte per 8 pages, at least 20 bytes."""
    return max(((end - start) >> 3) // page_size, IDLE_BUF_MIN)


# ---------------------------------------------------------------------------------------------
# the file


class IdlePagesIO(Protocol):
    """What the tracker needs from an open idle_pages file (tests pass a fake)."""

    def add_flags(self, request: int, flags: int) -> None: ...
    def read_at(self, pos: int, count: int) -> bytes: ...
    def close(self) -> None: ...


IoctlFn = Callable[[int, int, bytes], object]


class IdlePagesFile:
    """``/proc/PID/idle_pages`` opened read-only; reads at a virtual address via ``lseek``.

    ``ioctl=None`` skips the flag ioctls.  In a fake tree the file is a regular file holding
    one captured stream: its content answers the first read after open, later reads get
    nothing (a regular file cannot seek to a user address).
    """

    def __init__(self, path: Path | str, ioctl: IoctlFn | None = fcntl.ioctl) -> None:
        self.path = Path(path)
        self._ioctl = ioctl
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._recorded: bool | None = stat.S_ISREG(os.fstat(self.fd).st_mode) or None

    def add_flags(self, request: int, flags: int) -> None:
        """OR ``flags`` into the file's scan flags (IDLE_SCAN_ADD_FLAGS / VMA_SCAN_ADD_FLAGS)."""
        if self._ioctl is not None:
            self._ioctl(self.fd, request, struct.pack("I", flags))

    def read_at(self, pos: int, count: int) -> bytes:
        """One ``read()`` of at most ``count`` bytes describing pages from address ``pos``."""
        if self._recorded is not None:
            first, self._recorded = self._recorded, False
            return os.pread(self.fd, count, 0) if first else b""
        os.lseek(self.fd, pos, os.SEEK_SET)
        return os.read(self.fd, count)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class IdlePagesTracker(Tracker):
    """Access bits from openEuler's etmem_scan module, one pass per :meth:`scan_pass`.

    Per pass the file is opened afresh (as etmemd does) and the scan flags are set by ioctl.
    Each VMA is read from ``max(vma.start, last_walk_end)`` with etmemd's buffer size, but -- unlike
    etmemd, which reads once and silently loses the rest (§13.22) -- reads continue from the
    last decoded address until the VMA end is covered or the kernel returns nothing more.
    """

    name = "idle_pages"
    capability = "tracker.idle_pages"

    def __init__(
        self,
        pid: int,
        proc_root: Path | str = "/proc",
        *,
        flags: int = 0,
        vma_flags: int = 0,
        page_size: int = PAGE_SIZE,
        ioctl: IoctlFn | None = fcntl.ioctl,
        opener: Callable[[Path], IdlePagesIO] | None = None,
        sys_root: Path | str = "/sys",
    ) -> None:
        """``flags``: sent with IDLE_SCAN_ADD_FLAGS (SCAN_AS_HUGE, SCAN_IGN_HOST, VMA_SCAN_FLAG)
        when non-zero; ``vma_flags``: sent with VMA_SCAN_ADD_FLAGS (the slide engine's
        ``swap_flag=yes`` sends VMA_SCAN_FLAG).  ``ioctl=None`` skips both; ``opener`` replaces
        the file (tests).  ``sys_root`` is accepted for :func:`trackers.make_tracker` only."""
        for what, value in (("flags", flags), ("vma_flags", vma_flags)):
            if value & ~ALL_SCAN_FLAGS:
                raise ValueError(f"unknown idle_pages scan {what} 0x{value:x}")
        self.pid = pid
        self.path = Path(proc_root) / str(pid) / "idle_pages"
        self.flags = flags & ALL_SCAN_FLAGS
        self.vma_flags = vma_flags
        self.page_size = page_size
        self._open = opener or (lambda p: IdlePagesFile(p, ioctl))
        self.reads: list[tuple[int, int, int]] = []  # (pos, count, returned) of the last pass

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        """One sample of every VMA; raises :class:`ScanError` if the pass fails."""
        return expand(self.scan_runs(vmas), self.page_size)

    def scan_runs(self, vmas: Sequence[VmaRange]) -> Runs:
        """Like :meth:`scan_pass` but run-length (what the fast pipeline consumes)."""
        try:
            f = self._open(self.path)
        except OSError as e:
            raise ScanError(f"open {self.path}: {e.strerror}") from e
        self.reads = []
        parts: list[Runs] = []
        try:
            if self.flags:
                f.add_flags(IDLE_SCAN_ADD_FLAGS, self.flags)
            if self.vma_flags:
                f.add_flags(VMA_SCAN_ADD_FLAGS, self.vma_flags)
            last_walk_end = 0
            for vma in vmas:
                if last_walk_end > vma.end:
                    continue
                pos = max(vma.start, last_walk_end)
                while pos < vma.end:
                    count = read_size(pos, vma.end, self.page_size)
                    data = f.read_at(pos, count)
                    self.reads.append((pos, count, len(data)))
                    if not data:
                        break
                    runs = decode_runs(data, self.page_size)
                    parts.append(runs)
                    last_walk_end = runs.end
                    if runs.end <= pos:  # no progress: nothing more the kernel will tell
                        break
                    pos = runs.end
        except OSError as e:
            raise ScanError(f"read {self.path}: {e.strerror}") from e
        finally:
            f.close()
        return Runs.concat(parts)


# ---------------------------------------------------------------------------------------------
# captured streams (``etmem scan --decode``): one stream per pass


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

_NSTATES = 13  # 0 = no entry, else 1 + etype * 4 + weight (weight 0, 1 or 3)
_CODE_BITS = 8  # an event's (from, to) state pair, in the low bits of its page-aligned address
_st = np.arange(_NSTATES)
_ST_W = np.where(_st > 0, (_st - 1) % 4, 0)
_ST_T = np.where(_st > 0, (_st - 1) // 4, -1)
_code = np.arange(1 << _CODE_BITS)
_frm, _to = np.minimum(_code // _NSTATES, _NSTATES - 1), _code % _NSTATES
EVENT_DW = (_ST_W[_to] - _ST_W[_frm]).astype(np.int8)
EVENT_DCOV = np.stack([(_ST_T[_to] == t).astype(np.int8) - (_ST_T[_frm] == t) for t in range(3)])
del _st, _code, _frm, _to


def _stream_header(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _pass_events(i: int, stream: bytes, page_size: int, chunk: int = 1 << 16) -> list[np.ndarray]:
    """Events of one pass: ``address | from_state * 13 + to_state`` (uint64), address order
    within the pass, as one array per chunk.

    Same decoding rules as :func:`decode_runs`; works through the records a cache-sized chunk
    at a time, carrying the running address and state across chunks.
    """
    tab = _tables(page_size)
    v, hva, first = _stream_header(np.frombuffer(stream, dtype=np.uint8))
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
            keys += [je | (jp * np.uint64(_NSTATES)), start[js] | state[js].astype(np.uint64)]
        if len(change):
            before = np.where(change > 0, state[np.maximum(change - 1, 0)], prev_state)
            code = before.astype(np.uint64) * np.uint64(_NSTATES) + state[change]
            keys.append(start[change] | code)
        if len(keys) > nkeys + 1:  # jump events can be "nothing -> nothing": drop those
            new = np.concatenate(keys[nkeys:])
            keys[nkeys:] = [new[(new & np.uint64(0xFF)) != 0]]
        prev_state, prev_end = int(state[-1]), int(start[-1] + step[-1])
    if prev_state:
        keys.append(np.array([prev_end | prev_state * _NSTATES], ADDR_DTYPE))
    if nskipped:
        log.warning("idle_pages: ignored %d record(s) not aligned to their page size", nskipped)
    return keys


def _lean_events(
    v: np.ndarray, tab: _Tables, first_in: np.ndarray, hva_in: np.ndarray, chunk: int
) -> list[np.ndarray]:
    """:func:`_pass_events` for streams whose records are all aligned and cannot wrap."""
    keys: list[np.ndarray] = []
    n13 = np.uint64(_NSTATES)
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
        keys.append(np.array([int(e_carry + off) | prev_state * _NSTATES], ADDR_DTYPE))
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
