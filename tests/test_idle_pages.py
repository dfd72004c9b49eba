"""idle_pages decoder and tracker against every golden case recorded from the original etmemd.

Each case folder holds the reads C issued (c_reads.txt), what they returned (read_N.bin), the
page list after every pass (c_passK.txt) and the cold list written to swap_pages.  A fake
idle_pages serves the recorded chunks to the reads C made; any further read we issue (we read
each VMA to its end, C reads once) gets nothing back from the fake and is checked to be such a
continuation read.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import idle_pages as ip
from etmem_scan import idle_stream, idle_sweep, idle_text, pagerefs, procfs
from etmem_scan.pagerefs import PageRefs, cold_mask, format_cold, format_refs, merge
from etmem_scan.tracker_interface import ScanError


@dataclass(frozen=True)
class Vma:
    start: int
    end: int


def anon_vmas(maps: str) -> list:
    """The case's maps through the real reader, with etmemd's anonymous rule."""
    return procfs.parse_maps(maps)


def load_manifest(golden: Path) -> dict:
    return json.loads((golden / "idle_pages" / "manifest.json").read_text())


def case_names() -> list[str]:
    from conftest import GOLDEN  # the fixture's path, needed at collection time

    return [
        c["name"] for c in json.loads((GOLDEN / "idle_pages/manifest.json").read_text())["cases"]
    ]


READ_RE = re.compile(r"read offset=0x([0-9a-f]+) count=(\d+) -> chunk=(\d+) returned=(\d+)")


def recorded_reads(case_dir: Path) -> list[tuple[int, int, int, int]]:
    """(offset, count, chunk, returned) of the etmemd_do_scan phase, in order."""
    text = (case_dir / "c_reads.txt").read_text()
    phase = text.split("# phase etmemd_do_scan")[1].split("# phase")[0]
    return [tuple(int(g, 16) if i == 0 else int(g) for i, g in enumerate(m.groups()))
            for m in READ_RE.finditer(phase)]  # fmt: skip


class ReplayFile:
    """An idle_pages file replaying the recorded reads; unexpected reads get b""."""

    def __init__(self, replay: Replay) -> None:
        self.r = replay
        self.flags: list[tuple[int, int]] = []

    def add_flags(self, request: int, flags: int) -> None:
        self.flags.append((request, flags))

    def read_at(self, pos: int, count: int) -> bytes:
        return self.r.read(pos, count)

    def close(self) -> None:
        self.r.closed += 1


class Replay:
    def __init__(self, case_dir: Path) -> None:
        self.dir = case_dir
        self.expected = recorded_reads(case_dir)
        self.i = 0
        self.issued: list[tuple[int, int, bool]] = []  # (pos, count, was recorded)
        self.closed = 0

    def read(self, pos: int, count: int) -> bytes:
        if self.i < len(self.expected) and self.expected[self.i][:2] == (pos, count):
            chunk = self.expected[self.i][2]
            self.i += 1
            self.issued.append((pos, count, True))
            return (self.dir / f"read_{chunk + 1}.bin").read_bytes()[:count]
        self.issued.append((pos, count, False))
        return b""


def parse_refs(text: str) -> list[tuple[int, int, int]]:
    return [(int(a, 16), int(c), int(t)) for a, c, t in (ln.split() for ln in text.splitlines())]


def as_rows(refs: PageRefs) -> list[tuple[int, int, int]]:
    return list(zip(refs.addr.tolist(), refs.count.tolist(), refs.type.tolist(), strict=True))


def summed(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """C's list with duplicate nodes folded (count sum, first type) and sorted by address."""
    acc: dict[int, list[int]] = {}
    for a, c, t in rows:
        if a in acc:
            acc[a][0] += c
        else:
            acc[a] = [c, t]
    return sorted((a, c, t) for a, (c, t) in acc.items())


def run_case(case: dict, case_dir: Path, page_size: int = 4096):
    replay = Replay(case_dir)
    tracker = ip.IdlePagesTracker(
        1234, proc_root="/nonexistent", page_size=page_size, opener=lambda p: ReplayFile(replay)
    )
    vmas = anon_vmas(case["maps"])
    refs = PageRefs.empty()
    after: list[PageRefs] = []
    error: Exception | None = None
    for _ in range(case["loop"]):
        try:
            refs = merge(refs, tracker.scan_pass(vmas))
        except ScanError as e:
            error = e
            break
        after.append(refs)
    return replay, after, error


# cases where C's list is not address-sorted/unique (SET_HVA jumping backwards): ours is
UNSORTED_IN_C = {"set_hva_backward"}
FAILING = {"record_before_address", "set_hva_zero", "error_in_second_pass"}


@pytest.mark.parametrize("name", case_names())
def test_golden_case(golden: Path, name: str) -> None:
    case = next(c for c in load_manifest(golden)["cases"] if c["name"] == name)
    case_dir = golden / "idle_pages" / name
    replay, after, error = run_case(case, case_dir)

    # every read C issued, we issued too, in order and with C's buffer size; any extra read is a
    # continuation inside a VMA (read to its end; etmemd stops) and got nothing from the fake
    recorded = [(p, c) for p, c, ok in replay.issued if ok]
    assert recorded == [e[:2] for e in replay.expected[: len(recorded)]]
    vmas = anon_vmas(case["maps"])
    for pos, _count, ok in replay.issued:
        if not ok:
            assert any(v.start < pos < v.end for v in vmas), hex(pos)

    if name in FAILING:
        assert isinstance(error, idle_stream.StreamError)
        assert "before any address" in str(error)
        for k, refs in enumerate(after, start=1):
            assert as_rows(refs) == parse_refs((case_dir / f"c_pass{k}.txt").read_text())
        assert (case_dir / "c_swap_pages.txt").read_bytes() == b""  # C wrote nothing either
        return
    assert error is None
    assert len(replay.expected) == len(recorded)  # no recorded read left unused
    assert len(after) == case["loop"]
    for k, refs in enumerate(after, start=1):
        c_rows = parse_refs((case_dir / f"c_pass{k}.txt").read_text())
        if name in UNSORTED_IN_C:
            assert as_rows(refs) == summed(c_rows)
        else:
            assert as_rows(refs) == c_rows
    final = after[-1]
    if name not in UNSORTED_IN_C:
        assert format_refs(final) == (case_dir / "c_refs.txt").read_bytes()
        cold = format_cold(final.addr[cold_mask(final, case["T"])])
        assert cold == (case_dir / "c_swap_pages.txt").read_bytes()


def test_set_hva_backward_we_fold_duplicates(golden: Path) -> None:
    """Deliberate difference: C only searches forward from its cursor, so a backward SET_HVA
    leaves its list unsorted with a duplicate node for B+0x10000 (counts 2 and 0) and writes that
    duplicate (count 0) as cold.  We keep one sorted entry per address with the summed count
    (2), so with T=1 nothing is cold."""
    case = next(c for c in load_manifest(golden)["cases"] if c["name"] == "set_hva_backward")
    case_dir = golden / "idle_pages" / "set_hva_backward"
    _, after, _ = run_case(case, case_dir)
    final = after[-1]
    assert as_rows(final) == summed(parse_refs((case_dir / "c_refs.txt").read_text()))
    assert (case_dir / "c_swap_pages.txt").read_bytes() == b"0x7f0000010000\n"
    assert format_cold(final.addr[cold_mask(final, case["T"])]) == b""


def test_multi_vma_reads_each_vma_to_its_end(golden: Path) -> None:
    """Deliberate difference (etmemd reads once): VMA D (1031 pages) gets a second read for its
    last 7 pages (C's one-byte-per-8-pages buffer stops at 1024), and VMAs whose stream stopped
    short of their end get a continuation read."""
    case = next(c for c in load_manifest(golden)["cases"] if c["name"] == "multi_vma")
    replay, _, _ = run_case(case, golden / "idle_pages" / "multi_vma")
    extra = [(p, c) for p, c, ok in replay.issued if not ok]
    d_start, d_end = 0x7F0001000000, 0x7F0001407000
    # pass 1: D's stream covers 18 pages, so we go on from there with the rest's buffer size
    assert (d_start + 18 * 4096, ip.read_size(d_start + 18 * 4096, d_end)) in extra
    assert len(extra) > 0


# ---------------------------------------------------------------------------------------------
# decoder unit tests


def hva(addr: int) -> bytes:
    return b"\xa0" + struct.pack(">Q", addr)


B = 0x7F0000000000


def test_pmd_idle_ptes_uses_real_ratio_for_64k_pages() -> None:
    """Deliberate difference: with 64 KiB base pages a PMD maps 512 MiB = 8192 base pages;
    C always expands PMD_IDLE_PTES to 512 entries."""
    runs = idle_stream.decode_runs(hva(B) + bytes([0x71]), page_size=65536)
    assert runs.npages.tolist() == [8192]
    p = idle_stream.expand(runs, page_size=65536)
    assert len(p) == 8192 and int(p.addr[-1]) == B + 8191 * 65536
    assert runs.end == B + (1 << 29)
    assert set(p.weight.tolist()) == {0} and set(p.type.tolist()) == {0}


def test_page_sizes() -> None:
    assert pagerefs.page_sizes(4096).tolist() == [4096, 2 << 20, 1 << 30]
    assert pagerefs.page_sizes(65536).tolist() == [65536, 512 << 20, 4 << 40]


def test_a0_inside_an_address_is_data() -> None:
    # address bytes contain 0xa0 twice; only the real command sets the address
    addr = 0x7FA0A0000000
    p = idle_stream.decode(hva(addr) + bytes([0x02]))
    assert p.addr.tolist() == [addr, addr + 4096]
    # back-to-back SET_HVAs whose payloads hold 0xa0: the second one wins
    p = idle_stream.decode(hva(0x7FA0000A0000) + hva(addr) + bytes([0x01]))
    assert p.addr.tolist() == [addr]


def test_unknown_record_type_is_an_error() -> None:
    with pytest.raises(idle_stream.StreamError, match="unknown idle_pages record 0xb1"):
        idle_stream.decode(hva(B) + bytes([0xB1]))
    with pytest.raises(idle_stream.StreamError, match="0xa3"):
        idle_stream.decode(hva(B) + bytes([0xA3]))


def test_hole_before_address_is_an_error() -> None:
    with pytest.raises(idle_stream.StreamError, match="before any address"):
        idle_stream.decode(bytes([0x81]) + hva(B) + bytes([0x01]))


def test_empty_and_address_only_streams() -> None:
    assert len(idle_stream.decode(b"")) == 0
    r = idle_stream.decode_runs(hva(B))
    assert len(r) == 0 and r.end == B
    r = idle_stream.decode_runs(hva(B)[:5])  # truncated SET_HVA: nothing, end stays 0 as in C
    assert len(r) == 0 and r.end == 0


def test_weights_and_types() -> None:
    p = idle_stream.decode(
        hva(B) + bytes([0x01, 0x31, 0x51]) + hva(B + (2 << 20)) + bytes([0x11, 0x41, 0x61])
    )
    assert p.weight.tolist() == [1, 3, 0, 1, 3, 0]
    assert p.type.tolist() == [0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------------------------------------
# the tracker against a small model of the kernel side (reads budget bytes like the module)


class ModelKernel:
    """Pages of one process and the module's read(): walk [pos, pos + count*8 pages), one byte
    per run of up to 15 same-type pages, SET_HVA at the start and after each gap; stop when the
    buffer cannot take the next item."""

    def __init__(self, pages: dict[int, int], page: int = 4096) -> None:
        self.pages = pages  # address -> idle_pages type (0 accessed / 5 idle)
        self.page = page

    def read(self, pos: int, count: int) -> bytes:
        out = bytearray()
        addrs = sorted(a for a in self.pages if pos <= a < pos + count * 8 * self.page)
        cur = None
        i = 0
        while i < len(addrs):
            a = addrs[i]
            t = self.pages[a]
            n = 1
            while (n < 15 and i + n < len(addrs) and addrs[i + n] == a + n * self.page
                   and self.pages[addrs[i + n]] == t):  # fmt: skip
                n += 1
            need = 1 + (9 if cur != a else 0)
            if len(out) + need > count:
                break
            if cur != a:
                out += hva(a)
            out.append(t << 4 | n)
            cur = a + n * self.page
            i += n
        return bytes(out)


class ModelFile:
    def __init__(self, k: ModelKernel, log: list) -> None:
        self.k, self.log = k, log

    def add_flags(self, request: int, flags: int) -> None:
        self.log.append(("ioctl", request, flags))

    def read_at(self, pos: int, count: int) -> bytes:
        self.log.append(("read", pos, count))
        return self.k.read(pos, count)

    def close(self) -> None:
        self.log.append(("close",))


def c_single_read_pages(k: ModelKernel, vmas: list[Vma]) -> set[int]:
    """What etmemd's one read per VMA would see (for comparison)."""
    seen: set[int] = set()
    end = 0
    for v in vmas:
        if end > v.end:
            continue
        start = max(v.start, end)
        p = idle_stream.decode_runs(k.read(start, ip.read_size(start, v.end)))
        seen |= set(idle_stream.expand(p).addr.tolist())
        end = p.end
    return seen


def test_tracker_reads_fragmented_vma_and_tail_to_the_end() -> None:
    """Deliberate difference (etmemd reads once): a fragmented VMA overflows etmemd's buffer
    (every other page present -> 10 bytes per page, budget 1 byte per 8 pages) and a VMA of
    8k+5 pages has a tail etmemd's buffer never covers.  We read on until the VMA end: every
    page is seen."""
    frag = Vma(B, B + 4096 * 4096)
    tail = Vma(B + (1 << 30), B + (1 << 30) + 4096 * 8 * 40 + 5 * 4096)
    pages = {frag.start + i * 4096: (0 if i % 4 else 5) for i in range(0, 4096, 2)}
    pages |= {a: 0 for a in range(tail.start, tail.end, 4096)}
    k = ModelKernel(pages)
    log: list = []
    t = ip.IdlePagesTracker(1, opener=lambda p: ModelFile(k, log), vma_flags=ip.VMA_SCAN_FLAG)
    p = t.scan_pass([frag, tail])
    assert sorted(p.addr.tolist()) == sorted(pages)
    weights = dict(zip(p.addr.tolist(), p.weight.tolist(), strict=True))
    assert all(weights[a] == (1 if pages[a] == 0 else 0) for a in pages)
    c_seen = c_single_read_pages(k, [frag, tail])
    assert len(c_seen) < len(pages)  # what the original loses
    assert not any(a in c_seen for a in range(tail.end - 5 * 4096, tail.end, 4096))
    assert log[0] == ("ioctl", ip.VMA_SCAN_ADD_FLAGS, ip.VMA_SCAN_FLAG)
    assert log[-1] == ("close",)


def test_tracker_flags_ioctl_and_pass_error() -> None:
    log: list = []

    class Bad(ModelFile):
        def read_at(self, pos: int, count: int) -> bytes:
            return bytes([0x01])

    t = ip.IdlePagesTracker(
        1, flags=ip.SCAN_AS_HUGE | ip.SCAN_IGN_HOST, opener=lambda p: Bad(ModelKernel({}), log)
    )
    with pytest.raises(ScanError):
        t.scan_pass([Vma(B, B + 65536)])
    assert log == [("ioctl", ip.IDLE_SCAN_ADD_FLAGS, 0x03000000), ("close",)]
    with pytest.raises(ValueError):
        ip.IdlePagesTracker(1, flags=0x4)


def test_real_file_ioctl_is_injectable(tmp_path: Path) -> None:
    """IdlePagesFile on a fake tree: the ioctl callable gets the fd, request and a packed uint;
    a regular file answers the first read with its content."""
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "idle_pages").write_bytes(hva(B) + bytes([0x02]))
    calls: list = []
    t = ip.IdlePagesTracker(
        42, proc_root=tmp_path, flags=ip.VMA_SCAN_FLAG, ioctl=lambda *a: calls.append(a)
    )
    assert t.scan_pass([Vma(B, B + 65536)]).addr.tolist() == [B, B + 4096]
    assert [(c[1], struct.unpack("I", c[2])[0]) for c in calls] == [
        (ip.IDLE_SCAN_ADD_FLAGS, ip.VMA_SCAN_FLAG)
    ]
    assert t.reads == [(B, 20, 10), (B + 8192, 20, 0)]


def test_missing_file_is_a_scan_error(tmp_path: Path) -> None:
    t = ip.IdlePagesTracker(42, proc_root=tmp_path)
    with pytest.raises(ScanError, match="idle_pages"):
        t.scan_pass([Vma(B, B + 65536)])


# ---------------------------------------------------------------------------------------------
# the run-level fast path (etmem scan --decode --cold) against the page-level one


def random_stream(rng: np.random.Generator, nrec: int) -> bytes:
    """Mostly plausible streams: aligned SET_HVAs (some 2M-aligned, for PMD records), every
    record type, n = 0..15, the odd jump backwards or to an unaligned address.  Half of them
    hold base pages only (the decoder's lean path)."""
    out = bytearray()
    if rng.random() < 0.5:
        for _ in range(nrec):
            if not out or rng.random() < 0.05:
                out += hva(B + int(rng.integers(0, 64)) * 4096)
            else:
                out.append(int(rng.choice([0, 3, 5, 8, 0, 5])) << 4 | int(rng.integers(0, 16)))
        return bytes(out)
    for _ in range(nrec):
        r = rng.random()
        if not out or r < 0.05:
            unit = int(rng.choice([4096, 2 << 20, 2 << 20, 2048]))
            out += hva(B + int(rng.integers(0, 8 if unit > 4096 else 64)) * unit)
        elif r < 0.3:
            out.append(int(rng.choice([1, 4, 6, 7, 9])) << 4 | int(rng.integers(0, 4)))
        else:
            out.append(int(rng.choice([0, 3, 5, 8, 0, 5])) << 4 | int(rng.integers(0, 16)))
    return bytes(out)


def page_level(streams: list[bytes], threshold: int) -> bytes | type:
    try:
        refs = idle_sweep.decode_passes(streams)
    except idle_stream.StreamError:
        return idle_stream.StreamError
    return format_cold(refs.addr[cold_mask(refs, threshold)])


def run_level(streams: list[bytes], threshold: int, chunk: int) -> bytes | type:
    try:
        pieces = idle_text.cold_text_chunks(
            streams, threshold, chunk=97 * chunk, record_chunk=chunk
        )
        return b"".join(pieces)
    except idle_stream.StreamError:
        return idle_stream.StreamError


def test_fast_cold_path_equals_page_level_on_random_streams() -> None:
    rng = np.random.default_rng(2024)
    paths = {"sweep": 0, "fallback": 0}
    for _ in range(200):
        streams = [random_stream(rng, int(rng.integers(0, 40))) for _ in range(rng.integers(1, 4))]
        if rng.random() < 0.05:  # the occasional broken pass
            streams[-1] = bytes([int(rng.choice([0x01, 0xB3]))]) + streams[-1]
        threshold = int(rng.integers(0, 5))
        chunk = int(rng.choice([3, 7, 1 << 15]))  # records per chunk: boundaries everywhere
        assert run_level(streams, threshold, chunk) == page_level(streams, threshold)
        if page_level(streams, threshold) is not idle_stream.StreamError:
            listing = b"".join(idle_text.refs_text_chunks(streams, chunk=97 * chunk))
            assert listing == format_refs(idle_sweep.decode_passes(streams))
        try:
            seg = idle_sweep.sweep(streams, chunk=chunk)
        except idle_stream.StreamError:
            continue
        paths["sweep" if seg is not None else "fallback"] += 1
    assert paths["sweep"] > 50 and paths["fallback"] > 10  # both paths were exercised


def test_sweep_segments_match_page_level(golden: Path) -> None:
    d = golden / "idle_pages" / "multipass_counts"
    streams = [(d / f"read_{k}.bin").read_bytes() for k in (1, 2, 3)]
    seg = idle_sweep.sweep(streams, chunk=5)
    assert seg is not None
    refs = idle_sweep.decode_passes(streams)
    addr = np.concatenate(
        [s + np.arange(n, dtype=np.uint64) * np.uint64(4096)
         for s, n in zip(seg.start.tolist(), seg.npages.tolist(), strict=True)]
    )  # fmt: skip
    assert addr.tolist() == refs.addr.tolist()
    assert np.repeat(seg.count, seg.npages).tolist() == refs.count.tolist()


@pytest.mark.parametrize("lines", [1, 3, 7, 1000])
def test_cold_text_across_digit_and_top_word_changes(lines: int) -> None:
    """Pieces that cross a 4 GiB boundary (top 16 bits change), go from 12 to 11 hex digits,
    or hold 2 MiB pages take the general formatter; the text is the same either way."""
    streams = [
        hva(0x7F00FFFFD000) + bytes([0x56])  # idle pages across 0x7f0100000000
        + hva(0x100000FFE000) + bytes([0x54])  # 13 digits down to 12
        + hva(0xFFFFFFE000) + bytes([0x54])  # 10 digits and 11
        + hva(0x7F0200000000) + bytes([0x62]),  # two idle 2 MiB pages
    ]  # fmt: skip
    fast = b"".join(idle_text.cold_text_chunks(streams, 1, chunk=lines))
    assert fast == page_level(streams, 1)
    assert fast.count(b"\n") == 6 + 4 + 4 + 2
    base_pages_only = [streams[0][:-10]]  # the 4 KiB table path where a piece allows it
    fast = b"".join(idle_text.cold_text_chunks(base_pages_only, 1, chunk=lines, table_min=1))
    assert fast == page_level(base_pages_only, 1)
    assert fast.count(b"\n") == 6 + 4 + 4


def test_decoded_pass_is_runs_plus_a_weight_byte_per_page() -> None:
    base = 0x7F0000000000
    stream = b"\xa0" + base.to_bytes(8, "big") + bytes([0x0F, 0x5F, 0x3F, 0x8F, 0x0F])
    p = idle_stream.decode(stream, 4096)
    # accessed, idle and dirty records that follow each other share a run; the hole cuts it
    assert p.runs.start.tolist() == [base, base + 60 * 4096]
    assert p.runs.npages.tolist() == [45, 15]
    assert p.weight.dtype == np.uint8
    assert p.weight.tolist() == [1] * 15 + [0] * 15 + [3] * 15 + [1] * 15
    assert p.addr.tolist() == [base + i * 4096 for i in (*range(45), *range(60, 75))]
