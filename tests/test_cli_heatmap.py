"""``etmem scan PID --heatmap FILE.png`` / ``--wss``: the picture and the working-set summary."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from etmem_sdk import scan
from etmem_sdk.testing import spawn_workload

from etmem_core.cli import heatmap


def read_png(path: Path) -> np.ndarray:
    """Decode our own PNG (8-bit RGB, filter 0 on every row) back into an array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + n
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(h, 1 + w * 3)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_round_trips(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    heatmap.write_png(tmp_path / "x.png", img)
    assert (read_png(tmp_path / "x.png") == img).all()


def test_render_tells_accessed_from_idle_from_absent():
    s = heatmap.Sampled(
        "fake",
        3 * 4096,
        resident=np.array([[4096.0, 4096.0, 0.0]] * 2),
        accessed=np.array([[4096.0, 0.0, 0.0]] * 2),
        vma_starts=np.array([0], dtype=np.uint64),
        vma_offsets=np.array([0], dtype=np.uint64),
    )
    img = heatmap.render(s)
    assert img.shape == (3, 2 * heatmap.BAND, 3)
    hot, idle, absent = (img[r, 0].astype(int) for r in range(3))
    assert hot.sum() > idle.sum() > absent.sum() == 0


def test_wss_text_has_each_pass_and_percentiles():
    s = heatmap.Sampled(
        "fake",
        8192,
        resident=np.array([[8192.0], [8192.0]]),
        accessed=np.array([[4096.0], [8192.0]]),
        vma_starts=np.array([0], dtype=np.uint64),
        vma_offsets=np.array([0], dtype=np.uint64),
    )
    text = heatmap.format_wss(7, s, 1.0)
    assert "   1  4.0K" in text and "   2  8.0K" in text
    assert "        50  6.0K" in text


@pytest.mark.root
def test_heatmap_of_a_live_process_shows_hot_and_cold_apart(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("scanning another process needs root")
    png = tmp_path / "heat.png"
    with spawn_workload(hot_mib=16, cold_mib=64) as w:
        out, err = io.StringIO(), io.StringIO()
        # refs, not the default: with any swap on (another test's, a benchmark's) the default
        # becomes the probe, which pages the cold mapping out and the picture shows it absent
        rc = heatmap.main(
            w.pid, loop=3, sleep=1, tracker="refs", heatmap=png, wss=True, out=out, err=err
        )
        assert rc == 0, err.getvalue()
        vmas = scan.read_vmas(w.pid)
    img = read_png(png)
    assert img.shape == (heatmap.ROWS, 3 * heatmap.BAND, 3)
    starts = np.array([v.start for v in vmas], dtype=np.uint64)
    sizes = np.array([v.end - v.start for v in vmas], dtype=np.uint64)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.uint64)
    span = int(sizes.sum())

    def rows(lo: int, hi: int) -> np.ndarray:
        addrs = np.arange(lo, hi, 4096 * 64, dtype=np.uint64)
        return np.unique(heatmap.bin_of(addrs, starts, offsets, span, heatmap.ROWS))

    hot_rows, cold_rows = rows(*w.hot), rows(*w.cold)
    hot_rows = np.setdiff1d(hot_rows, cold_rows)[1:-1]  # bins wholly inside one mapping
    cold_rows = np.setdiff1d(cold_rows, hot_rows)[1:-1]
    assert len(hot_rows) >= 3 and len(cold_rows) >= 3
    brightness = img.astype(int).sum(axis=2)[:, heatmap.BAND :]  # passes after the first
    assert brightness[hot_rows].min() > brightness[cold_rows].max()
    assert brightness[cold_rows].min() > 0  # cold memory is resident, not absent
    assert "percentile  wss" in out.getvalue()
