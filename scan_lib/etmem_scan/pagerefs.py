"""Page references as numpy arrays: per-pass samples, accumulated counts, cold lists.

The C original keeps one malloc'd list node per page (32 bytes with the allocator's overhead)
and walks the list for every page it merges.  Here the pages of a pass or of accumulated passes
are :class:`PageRuns` -- runs of equally spaced pages, a handful per mapping -- and the only
per-page data is a counter: ``uint8`` weights per pass, ``uint16`` saturating counts once
accumulated.  Addresses are computed from the runs when a caller asks (``.addr``), a chunk at a
time on the hot paths, so a 64 GiB process needs ~2 bytes per page, not 13.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .machine import PAGE_SIZE

# Page types, as the C ``enum page_type``.
PTE, PMD, PUD = 0, 1, 2

ADDR_DTYPE = np.uint64
TYPE_DTYPE = np.uint8
WEIGHT_DTYPE = np.uint8
#: accumulated counts; additions saturate at the top instead of wrapping to "cold"
COUNT_DTYPE = np.uint16
COUNT_MAX = int(np.iinfo(COUNT_DTYPE).max)
WEIGHT_MAX = int(np.iinfo(WEIGHT_DTYPE).max)

_CHUNK = 1 << 16  # pages per step where a per-page temporary is needed: 512 KiB of int64


def page_sizes(page_size: int = PAGE_SIZE) -> np.ndarray:
    """PTE, PMD and PUD sizes for a base page size (4 KiB -> 4 KiB / 2 MiB / 1 GiB).

    A page-table page holds ``page_size / 8`` entries, so each level multiplies by that.
    """
    shift = page_size.bit_length() - 1
    return np.array(
        [1 << shift, 1 << ((shift - 3) * 2 + 3), 1 << ((shift - 3) * 3 + 3)], dtype=ADDR_DTYPE
    )


@dataclass(frozen=True, slots=True)
class PageRuns:
    """Which pages, as runs: ``npages`` pages of ``type`` from ``start``, ``step`` bytes apart.

    Page addresses strictly increase from each run to the next, so the pages have one order
    (ascending address) and per-page arrays beside the runs follow it.  Runs never hold zero
    pages.  ``start``/``step`` uint64, ``npages`` int64, ``type`` uint8.
    """

    start: np.ndarray
    npages: np.ndarray
    type: np.ndarray
    step: np.ndarray

    def __len__(self) -> int:
        """Number of pages (not runs)."""
        return int(self.npages.sum()) if len(self.npages) else 0

    @classmethod
    def empty(cls) -> PageRuns:
        """No page."""
        return cls(
            np.empty(0, ADDR_DTYPE), np.empty(0, np.int64), np.empty(0, TYPE_DTYPE),
            np.empty(0, ADDR_DTYPE),
        )  # fmt: skip

    @classmethod
    def coalesce(
        cls, start: np.ndarray, npages: np.ndarray, ptype: np.ndarray, step: np.ndarray
    ) -> PageRuns:
        """Runs in address order with neighbours that continue each other joined (empty
        runs dropped).  The caller guarantees the address order."""
        start = np.asarray(start, ADDR_DTYPE)
        npages = np.asarray(npages, np.int64)
        ptype = np.asarray(ptype, TYPE_DTYPE)
        step = np.asarray(step, ADDR_DTYPE)
        some = npages > 0
        if not some.all():
            start, npages, ptype, step = start[some], npages[some], ptype[some], step[some]
        if len(start) < 2:
            return cls(start, npages, ptype, step)
        end = start + npages.astype(ADDR_DTYPE) * step
        cont = (start[1:] == end[:-1]) & (ptype[1:] == ptype[:-1]) & (step[1:] == step[:-1])
        if not cont.any():
            return cls(start, npages, ptype, step)
        head = np.flatnonzero(np.r_[True, ~cont])
        return cls(start[head], np.add.reduceat(npages, head), ptype[head], step[head])

    @classmethod
    def from_addresses(
        cls, addr: np.ndarray, ptype: np.ndarray, page_size: int = PAGE_SIZE
    ) -> PageRuns:
        """Runs of strictly increasing ``addr`` (one page each, types ``ptype``): a new run
        wherever the type changes or the next page is not the next one of that size."""
        addr = np.asarray(addr, ADDR_DTYPE)
        ptype = np.asarray(ptype, TYPE_DTYPE)
        if len(addr) == 0:
            return cls.empty()
        size = page_sizes(page_size)[np.minimum(ptype, PUD)]
        brk = np.r_[True, (ptype[1:] != ptype[:-1]) | (addr[1:] - addr[:-1] != size[:-1])]
        head = np.flatnonzero(brk)
        npages = np.diff(np.r_[head, len(addr)]).astype(np.int64)
        return cls(addr[head], npages, ptype[head], size[head])

    def first_page(self) -> np.ndarray:
        """Index of each run's first page in the page order (int64)."""
        return np.cumsum(self.npages) - self.npages

    def addresses(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Addresses (uint64, ascending) of pages ``lo .. hi-1``."""
        return _Expander(self).addresses(lo, len(self) if hi is None else hi)

    def types(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Page types (uint8) of pages ``lo .. hi-1``."""
        return _Expander(self).types(lo, len(self) if hi is None else hi)

    def chunks(
        self, chunk: int = _CHUNK, descending: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(addresses, types)`` of every page, ``chunk`` pages at a time; ``descending``:
        highest address first (the order ``swap_pages`` and slide's batches use)."""
        ex = _Expander(self)
        total = ex.total
        if descending:
            for hi in range(total, 0, -chunk):
                lo = max(hi - chunk, 0)
                yield ex.addresses(lo, hi)[::-1], ex.types(lo, hi)[::-1]
        else:
            for lo in range(0, total, chunk):
                hi = min(lo + chunk, total)
                yield ex.addresses(lo, hi), ex.types(lo, hi)

    def select(self, mask: np.ndarray) -> PageRuns:
        """The pages where ``mask`` (bool, one per page) is true, as runs."""
        n = len(self)
        mask = np.ascontiguousarray(mask, dtype=bool)
        if len(mask) != n:
            raise ValueError(f"mask of {len(mask)} entries for {n} pages")
        if n == 0 or not mask.any():
            return PageRuns.empty()
        m = mask.view(np.int8)
        flips = np.flatnonzero(m[1:] != m[:-1]) + 1
        begin = flips[m[flips] == 1]
        stop = flips[m[flips] == 0]
        if m[0]:
            begin = np.r_[0, begin]
        if m[-1]:
            stop = np.r_[stop, n]
        # a stretch of selected pages may cross runs: cut it at every run start inside it
        first = self.first_page()
        cuts = np.concatenate([begin, first[1:]])
        cuts.sort()
        cuts = cuts[mask[cuts]]  # starts of selected stretches within one run
        cuts = cuts[np.r_[True, cuts[1:] != cuts[:-1]]]
        run = np.searchsorted(first, cuts, side="right") - 1
        run_end = first[run] + self.npages[run]
        stretch_end = stop[np.searchsorted(stop, cuts, side="right")]
        length = np.minimum(run_end, stretch_end) - cuts
        start = self.start[run] + (cuts - first[run]).astype(ADDR_DTYPE) * self.step[run]
        return PageRuns(start, length.astype(np.int64), self.type[run], self.step[run])

    def descending_addresses(self, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
        """All addresses, highest first, ``chunk`` at a time."""
        for addr, _types in self.chunks(chunk, descending=True):
            yield addr

    def index_of(self, addrs: np.ndarray | int) -> np.ndarray:
        """How many pages lie below each of ``addrs`` (int64): the page index an address has,
        or would have, in the page order -- ``searchsorted`` over addresses never built."""
        a = np.atleast_1d(np.asarray(addrs, ADDR_DTYPE))
        below = np.zeros(a.shape, np.int64)
        r = np.searchsorted(self.start, a, side="left") - 1  # last run starting below
        ok = r >= 0
        if ok.any():
            rr = r[ok]
            step = self.step[rr]
            inside = ((a[ok] - self.start[rr] + step - np.uint64(1)) // step).astype(np.int64)
            below[ok] = self.first_page()[rr] + np.minimum(inside, self.npages[rr])
        return below

    def same_pages(self, other: PageRuns) -> bool:
        """True when both hold exactly the same pages in the same runs."""
        return len(self.start) == len(other.start) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in PageRuns.__slots__
        )


class _Expander:
    """Page rows of a :class:`PageRuns`, a slice at a time (run offsets computed once)."""

    def __init__(self, runs: PageRuns) -> None:
        self.runs = runs
        self.cum = np.cumsum(runs.npages)
        self.total = int(self.cum[-1]) if len(self.cum) else 0
        self.first = self.cum - runs.npages
        # address of page i of run r is base[r] + i * step[r] (modulo 2**64)
        self.base = runs.start - self.first.astype(ADDR_DTYPE) * runs.step
        self.one_step = bool(len(runs.step)) and bool(np.all(runs.step == runs.step[0]))

    def _span(self, lo: int, hi: int) -> tuple[int, int, np.ndarray]:
        r0 = int(np.searchsorted(self.cum, lo, side="right"))
        r1 = int(np.searchsorted(self.cum, hi - 1, side="right")) + 1
        take = np.minimum(self.cum[r0:r1], hi) - np.maximum(self.first[r0:r1], lo)
        return r0, r1, take

    def addresses(self, lo: int, hi: int) -> np.ndarray:
        hi = min(hi, self.total)
        if hi <= lo:
            return np.empty(0, ADDR_DTYPE)
        r0, r1, take = self._span(lo, hi)
        idx = np.arange(lo, hi, dtype=ADDR_DTYPE)
        if self.one_step:
            idx *= self.runs.step[0]
        else:
            idx *= np.repeat(self.runs.step[r0:r1], take)
        if r1 - r0 == 1:
            idx += self.base[r0]
        else:
            idx += np.repeat(self.base[r0:r1], take)
        return idx

    def types(self, lo: int, hi: int) -> np.ndarray:
        hi = min(hi, self.total)
        if hi <= lo:
            return np.empty(0, TYPE_DTYPE)
        r0, r1, take = self._span(lo, hi)
        return np.repeat(self.runs.type[r0:r1], take)


def _fold(addr: np.ndarray, ptype: np.ndarray, values: np.ndarray, top: int):
    """Sort pages by address and fold duplicates: values add (saturating at ``top``), the
    first sighting's type stays."""
    addr = np.asarray(addr, dtype=ADDR_DTYPE)
    ptype = np.asarray(ptype, dtype=TYPE_DTYPE)
    values = np.asarray(values)
    if len(addr) < 2 or bool(np.all(addr[1:] > addr[:-1])):
        return addr, ptype, np.minimum(values, top)
    order = np.argsort(addr, kind="stable")  # stable: equal addresses keep stream order
    addr = addr[order]
    first = np.flatnonzero(np.r_[True, addr[1:] != addr[:-1]])
    total = np.add.reduceat(values[order].astype(np.int64), first)
    return addr[first], ptype[order][first], np.minimum(total, top)


class _Paged:
    """Pages as :class:`PageRuns` plus one value per page; addresses and types on demand."""

    __slots__ = ("runs",)
    runs: PageRuns

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def addr(self) -> np.ndarray:
        """Address of every page (uint64, ascending) -- 8 bytes per page, built on each call."""
        return self.runs.addresses()

    @property
    def type(self) -> np.ndarray:
        """Type of every page (uint8: 0 PTE / 1 PMD / 2 PUD), built on each call."""
        return self.runs.types()


class PassRefs(_Paged):
    """One scan pass: the pages seen (:class:`PageRuns`) and a ``weight`` per page (uint8:
    1 accessed, 3 dirty, 0 idle).

    ``PassRefs(addr, type, weight)`` takes one row per page entry in any order (trackers build
    it so); duplicates fold as :func:`merge` would.  :meth:`from_runs` takes runs directly.
    """

    __slots__ = ("weight",)
    weight: np.ndarray

    def __init__(self, addr: np.ndarray, type: np.ndarray, weight: np.ndarray) -> None:  # noqa: A002
        addr, ptype, w = _fold(addr, type, weight, WEIGHT_MAX)
        self.runs = PageRuns.from_addresses(addr, ptype)
        self.weight = w.astype(WEIGHT_DTYPE)

    @classmethod
    def from_runs(cls, runs: PageRuns, weight: np.ndarray) -> PassRefs:
        """A pass from its runs and one uint8 weight per page (in the runs' order)."""
        p = object.__new__(cls)
        p.runs, p.weight = runs, np.asarray(weight, WEIGHT_DTYPE)
        return p

    @classmethod
    def empty(cls) -> PassRefs:
        """A pass that saw no page."""
        return cls.from_runs(PageRuns.empty(), np.empty(0, WEIGHT_DTYPE))


class PageRefs(_Paged):
    """Accumulated references: the pages (:class:`PageRuns`, ascending, unique) and ``count``
    per page (uint16, the sum of the pass weights, saturating at 65535).

    ``PageRefs(addr, type, count)`` takes one row per page (sorted, and folded like a pass if
    an address repeats); :meth:`from_runs` takes runs directly.
    """

    __slots__ = ("count",)
    count: np.ndarray

    def __init__(self, addr: np.ndarray, type: np.ndarray, count: np.ndarray) -> None:  # noqa: A002
        addr, ptype, c = _fold(addr, type, count, COUNT_MAX)
        self.runs = PageRuns.from_addresses(addr, ptype)
        self.count = c.astype(COUNT_DTYPE)

    @classmethod
    def from_runs(cls, runs: PageRuns, count: np.ndarray) -> PageRefs:
        """References from runs and one uint16 count per page (in the runs' order)."""
        r = object.__new__(cls)
        r.runs, r.count = runs, np.asarray(count, COUNT_DTYPE)
        return r

    @classmethod
    def empty(cls) -> PageRefs:
        """No page at all."""
        return cls.from_runs(PageRuns.empty(), np.empty(0, COUNT_DTYPE))


def add_saturating(count: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None):
    """``count + weight`` as uint16 that stops at 65535 instead of wrapping (a page seen
    that often must never come out as cold); ``out`` may be ``count`` itself."""
    if out is None:
        out = np.empty(len(count), COUNT_DTYPE)
    tmp = np.empty(min(len(count), _CHUNK), np.uint32)
    for c0 in range(0, len(count), _CHUNK):
        c1 = min(c0 + _CHUNK, len(count))
        t = tmp[: c1 - c0]
        np.add(count[c0:c1], weight[c0:c1], out=t, dtype=np.uint32)
        np.minimum(t, COUNT_MAX, out=t)
        out[c0:c1] = t
    return out


def _union(a: PageRuns, b: PageRuns) -> tuple[PageRuns, np.ndarray, np.ndarray] | None:
    """The runs holding the pages of ``a`` and ``b``, and where each input run starts in it
    (page index), or None when runs of different page sizes overlap in memory or one size's
    pages are off each other's grid (then only the page-level merge is exact)."""
    n = len(a.start)
    start = np.r_[a.start, b.start]
    step = np.r_[a.step, b.step]
    ptype = np.r_[a.type, b.type]
    end = start + np.r_[a.npages, b.npages].astype(ADDR_DTYPE) * step
    order = np.argsort(start, kind="stable")
    s, e, st, t = start[order], end[order], step[order], ptype[order]
    reach = np.maximum.accumulate(e)
    same = (st[1:] == st[:-1]) & (t[1:] == t[:-1])
    # a run joins the group before it if it overlaps the group, or touches it at equal size
    joins = (s[1:] < reach[:-1]) | ((s[1:] == reach[:-1]) & same)
    group = np.r_[0, np.cumsum(~joins)]
    head = np.flatnonzero(np.r_[True, ~joins])
    gs, gst, gt = s[head], st[head], t[head]
    if (st != gst[group]).any() or (t != gt[group]).any() or ((s - gs[group]) % st).any():
        return None
    last = np.r_[head[1:], len(s)] - 1
    gend = reach[last]
    gpages = ((gend - gs) // gst).astype(np.int64)
    runs = PageRuns(gs, gpages, gt, gst)
    gfirst = runs.first_page()
    dest = np.empty(len(s), np.int64)
    dest[order] = gfirst[group] + ((s - gs[group]) // st).astype(np.int64)
    return runs, dest[:n], dest[n:]


def _scatter(out: np.ndarray, src_runs: PageRuns, dest: np.ndarray, values: np.ndarray, add: bool):
    """``out[position of each page of src_runs] = (out +) values``, a chunk at a time."""
    first = src_runs.first_page()
    shift = dest - first  # destination index = source index + shift of its run
    cum = first + src_runs.npages
    total = len(values)
    for lo in range(0, total, _CHUNK):
        hi = min(lo + _CHUNK, total)
        r0 = int(np.searchsorted(cum, lo, side="right"))
        r1 = int(np.searchsorted(cum, hi - 1, side="right")) + 1
        take = np.minimum(cum[r0:r1], hi) - np.maximum(first[r0:r1], lo)
        pos = np.repeat(shift[r0:r1], take)
        pos += np.arange(lo, hi)
        if add:
            out[pos] = add_saturating(out[pos], values[lo:hi])
        else:
            out[pos] = values[lo:hi]


def carry_runs(
    old: PageRuns, values: np.ndarray, new: PageRuns, fill: int = 0, chunk: int = _CHUNK
) -> np.ndarray:
    """Values kept per page of ``old`` lined up with the pages of ``new``: ``values`` where a
    page of ``new`` has the address of a page of ``old``, else ``fill``.

    A merge of the two page orders, ``chunk`` pages at a time, so nothing per page is built but
    the result (one value per page of ``new``).  When both hold the same pages, ``values``
    itself comes back (not a copy).
    """
    values = np.asarray(values)
    if old.same_pages(new):
        return values
    out = np.full(len(new), fill, dtype=values.dtype)
    if len(out) == 0 or len(old) == 0:
        return out
    old_ex, new_ex = _Expander(old), _Expander(new)
    for lo in range(0, old_ex.total, chunk):
        hi = min(lo + chunk, old_ex.total)
        oa = old_ex.addresses(lo, hi)
        # the pages of ``new`` within this chunk's address span
        n_lo, n_hi = new.index_of(np.array([oa[0], oa[-1] + np.uint64(1)], ADDR_DTYPE)).tolist()
        for s in range(n_lo, n_hi, chunk):
            e = min(s + chunk, n_hi)
            na = new_ex.addresses(s, e)
            idx = np.minimum(np.searchsorted(oa, na), len(oa) - 1)
            hit = oa[idx] == na
            out[s:e][hit] = values[lo:hi][idx[hit]]
    return out


def _merge_pages(refs: PageRefs, p: PassRefs) -> PageRefs:
    """:func:`merge` one row per page: exact whatever the page sizes, 30+ bytes per page."""
    ra, pa = refs.addr, p.addr
    idx = np.searchsorted(ra, pa)
    hit = idx < len(ra)
    hit[hit] = ra[idx[hit]] == pa[hit]
    count = refs.count.copy()
    count[idx[hit]] = add_saturating(count[idx[hit]], p.weight[hit])
    miss = ~hit
    if not miss.any():
        return PageRefs.from_runs(refs.runs, count)
    at = idx[miss]
    addr = np.insert(ra, at, pa[miss])
    ptype = np.insert(refs.type, at, p.type[miss])
    return PageRefs.from_runs(
        PageRuns.from_addresses(addr, ptype, _page_size_of(refs.runs, p.runs)),
        np.insert(count, at, p.weight[miss]),
    )


def _page_size_of(*runs: PageRuns) -> int:
    """The base page size the runs were built with (their PTE step), else this machine's."""
    for r in runs:
        pte = r.step[r.type == PTE]
        if len(pte):
            return int(pte[0])
    return PAGE_SIZE


def merge(refs: PageRefs, p: PassRefs, *, in_place: bool = False) -> PageRefs:
    """Add one pass to accumulated references.

    Same address: the count grows by the pass's weight (saturating) and the type seen first is
    kept (as C's ``update_page_refs``).  New addresses are inserted in order.  ``in_place``
    lets the result reuse ``refs.count`` (for callers that drop ``refs``).
    """
    if len(p) == 0:
        return refs
    if len(refs) == 0:
        return PageRefs.from_runs(p.runs, p.weight.astype(COUNT_DTYPE))
    if refs.runs.same_pages(p.runs):
        # the steady state: every pass sees the same pages
        out = refs.count if in_place else None
        return PageRefs.from_runs(refs.runs, add_saturating(refs.count, p.weight, out))
    union = _union(refs.runs, p.runs)
    if union is None:
        return _merge_pages(refs, p)
    runs, dest_refs, dest_pass = union
    count = np.zeros(len(runs), COUNT_DTYPE)
    _scatter(count, refs.runs, dest_refs, refs.count, add=False)
    _scatter(count, p.runs, dest_pass, p.weight, add=True)
    return PageRefs.from_runs(runs, count)


def accumulate(passes: Iterable[PassRefs]) -> PageRefs:
    """Fold scan passes (in pass order) into one address-sorted :class:`PageRefs`."""
    refs = PageRefs.empty()
    owned = False  # the first pass's weights are copied, so later merges may add in place
    for p in passes:
        refs = merge(refs, p, in_place=owned)
        owned = len(refs) > 0
        del p  # not alive while the next pass is being built
    return refs


def cold_mask(refs: PageRefs, threshold: int) -> np.ndarray:
    """Pages the slide engine calls cold: ``count < threshold`` (``threshold=0``: none)."""
    return refs.count < threshold


def cold_runs(refs: PageRefs, threshold: int) -> PageRuns:
    """The cold pages (``count < threshold``) as runs: what pageout batches are built from."""
    return refs.runs.select(cold_mask(refs, threshold))


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
