"""``etmem scan PID --heatmap FILE.png`` and ``--wss``: where and how much a process touches.

Like DAMON's ``damo report heatmap`` / ``wss``: ``loop`` passes of a tracker (after a priming
pass), each ``sleep`` seconds apart. The heatmap has time (one band per pass) across and the
process's scanned address space down (its VMAs laid end to end, lowest address at the top, the
gaps between them left out); a pixel's brightness is the share of that address bin's bytes
accessed in that pass (black: nothing resident; dark blue: resident, idle; up to yellow: all
accessed). The PNG is written with zlib and struct, so it needs no plotting package.

The working-set size of a pass is the bytes accessed during it; ``--wss`` prints it per pass
and its percentiles over the passes.
"""

from __future__ import annotations

import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from etmem_sdk import scan
from etmem_sdk.errors import EtmemError

#: address bins (image rows) and pixels per pass (image columns per band)
ROWS = 256
BAND = 16
MAX_WIDTH = 2048


@dataclass
class Sampled:
    """Per pass and address bin: resident and accessed bytes (``passes × rows`` arrays)."""

    tracker: str
    span: int  # bytes of address space covered (VMAs end to end)
    resident: np.ndarray
    accessed: np.ndarray
    #: VMA starts and where each begins in the collapsed space, for reading addresses back
    vma_starts: np.ndarray
    vma_offsets: np.ndarray

    def wss(self) -> np.ndarray:
        """Bytes accessed in each pass."""
        return self.accessed.sum(axis=1)


def bin_of(addr: np.ndarray, starts: np.ndarray, offsets: np.ndarray, span: int, rows: int):
    """The image row of each address (VMAs laid end to end over ``rows`` bins)."""
    idx = np.searchsorted(starts, addr, side="right") - 1
    pos = offsets[idx] + (addr - starts[idx])
    return np.minimum((pos * rows) // max(span, 1), rows - 1).astype(np.intp)


def sample(pid: int, loop: int, sleep: float, tracker: str | None, rows: int = ROWS) -> Sampled:
    """Scan ``pid`` ``loop`` times and bin every pass (see module docs)."""
    name = scan.choose_tracker(tracker)
    vmas = scan.read_vmas(pid)
    if not vmas:
        raise EtmemError(f"process {pid} has no memory that can be scanned")
    starts = np.array([v.start for v in vmas], dtype=np.uint64)
    sizes = np.array([v.end - v.start for v in vmas], dtype=np.uint64)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.uint64)
    span = int(sizes.sum())
    resident = np.zeros((loop, rows), dtype=np.float64)
    accessed = np.zeros((loop, rows), dtype=np.float64)
    with scan.open_tracker(name, pid) as t:
        t.scan_pass(vmas)  # priming: what was accessed before the scan does not count
        for i in range(loop):
            time.sleep(sleep)
            p = t.scan_pass(vmas)
            if not len(p):
                continue
            rows_of = bin_of(p.addr, starts, offsets, span, rows)
            size = scan.page_bytes(p.type).astype(np.float64)
            resident[i] = np.bincount(rows_of, weights=size, minlength=rows)
            accessed[i] = np.bincount(rows_of, weights=size * (p.weight > 0), minlength=rows)
    return Sampled(name, span, resident, accessed, starts, offsets)


def render(s: Sampled) -> np.ndarray:
    """The heatmap as an RGB ``uint8`` array (rows × columns × 3)."""
    passes, rows = s.resident.shape
    band = max(1, min(BAND, MAX_WIDTH // max(passes, 1)))
    share = np.divide(s.accessed, s.resident, out=np.zeros_like(s.accessed), where=s.resident > 0)
    v = share.T  # rows × passes
    present = (s.resident > 0).T
    rgb = np.zeros((rows, passes, 3), dtype=np.float64)
    # idle resident memory is dark blue; accessed memory goes through red to yellow
    rgb[..., 0] = np.where(present, 40 + 215 * np.clip(v * 1.5, 0, 1), 0)
    rgb[..., 1] = np.where(present, 20 + 235 * np.clip(v * 1.5 - 0.5, 0, 1), 0)
    rgb[..., 2] = np.where(present, 90 * (1 - v), 0)
    img = np.repeat(rgb.round().astype(np.uint8), band, axis=1)
    return img


def write_png(path: Path, img: np.ndarray) -> None:
    """Write an RGB ``uint8`` array as a PNG (8-bit truecolour, no filter)."""
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), img.reshape(h, w * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
    png += chunk(b"IEND", b"")
    path.write_bytes(png)


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def format_wss(pid: int, s: Sampled, sleep: float) -> str:
    """The ``--wss`` text: working set per pass and its percentiles."""
    wss = s.wss()
    lines = [
        f"pid {pid}: tracker {s.tracker}, {len(wss)} pass(es) {sleep:g} s apart; "
        f"working set = bytes accessed during a pass ({_human(s.span)} scanned)",
        "pass  wss",
    ]
    lines += [f"{i + 1:>4}  {_human(float(x))}" for i, x in enumerate(wss)]
    lines.append("percentile  wss")
    for q in (0, 25, 50, 75, 90, 100):
        lines.append(f"{q:>10}  {_human(float(np.percentile(wss, q)))}")
    return "\n".join(lines) + "\n"


def main(
    pid: int,
    *,
    loop: int,
    sleep: float,
    tracker: str | None,
    heatmap: Path | None,
    wss: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Sample ``pid``; write the heatmap and/or print the working-set summary. Exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        s = sample(pid, loop, sleep, tracker)
    except EtmemError as e:  # gone, tracker unavailable, nothing to scan
        print(f"etmem: scan: {e}", file=err)
        return 1
    if heatmap is not None:
        img = render(s)
        try:
            write_png(heatmap, img)
        except OSError as e:
            print(f"etmem: scan: cannot write {heatmap}: {e.strerror}", file=err)
            return 1
        h, w, _ = img.shape
        print(
            f"heatmap of pid {pid}: {w}x{h} px written to {heatmap} "
            f"(time across, {_human(s.span)} of address space down, tracker {s.tracker})",
            file=err if wss else out,
        )
    if wss:
        out.write(format_wss(pid, s, sleep))
    return 0
