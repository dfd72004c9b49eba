"""The real-application benchmark's machinery (benchmarks/realapps.py) against a real redis-server:
fill, reader, RSS sampling, the slide project through etmemd, and that nothing it started outlives
it -- on a normal end and on SIGTERM. Tiny key counts: each test takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from etmem_scan import procfs
from etmemd_proc import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "realapps.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def _load():
    spec = importlib.util.spec_from_file_location("realapps", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["realapps"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


realapps = _load()


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (swapon, etmemd)")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _readers(port: int) -> list[int]:
    """Reader children (by their command line) still reading from ``port``."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"--reader-child" in argv
            and str(port).encode() in argv
            and str(SCRIPT).encode() in argv
        ):
            found.append(int(d))
    return found


def _read_for(args, port: int, workdir: Path, seconds: float):
    """Run the reader of ``args`` for ``seconds`` and stop it: (reader, reads, misses)."""
    rd = realapps.Reader(args, port, workdir, run_for=30)
    try:
        time.sleep(seconds)
        reads, misses = rd.finish()
    finally:
        rd.close()
    return rd, reads, misses


def test_reader_keys_hot_tenth_and_zipf() -> None:
    hot = realapps.reader_keys(10_000, 0.1, "uniform", 0.99, seed=1, n=50_000)
    assert hot.min() >= 0 and hot.max() < 1000
    assert len(np.unique(hot)) > 950  # uniform over the whole hot tenth, not a few keys
    z = realapps.reader_keys(10_000, 0.1, "zipf", 0.99, seed=1, n=50_000)
    assert z.min() >= 0 and z.max() < 10_000
    counts = np.sort(np.bincount(z, minlength=10_000))[::-1]
    assert counts[:1000].sum() > 0.5 * len(z)  # the most popular tenth gets most reads
    assert (counts > 0).sum() > 3000  # but the tail is read too


def test_fill_reader_and_sampling_against_redis(tmp_path: Path) -> None:
    with realapps.server("redis", 2000, 1024, tmp_path) as (pid, port):
        realapps.fill("redis", port, 2000, 1024, "shuffled", seed=3)
        rss_kb = procfs.read_status(pid)["VmRSS"]
        assert rss_kb > 2000  # 2000 x 1 KiB values are resident
        args = realapps.parse(["--keys", "2000", "--hot-fraction", "0.1"])
        _rd, reads, misses = _read_for(args, port, tmp_path, 1.0)
        assert misses == 0
        assert len(reads) > 100
        assert (reads[:, 1] > 0).all()
        w = realapps.window(reads, 0.0, 1.0)
        assert w["n"] > 100 and w["reads_per_s"] > 100 and w["p99_us"] >= w["p50_us"]
        conn = realapps.Conn(port)
        try:  # the last key of the cold part is there, with its full value
            conn.sock.sendall(realapps.get_command("redis", realapps.key_name(1999)))
            assert conn.get_reply("redis")
            conn.sock.sendall(realapps.get_command("redis", b"no-such-key"))
            assert not conn.get_reply("redis")
        finally:
            conn.close()
    assert _gone(pid)


@pytest.mark.parametrize("app", ["redis", "memcached"])
@pytest.mark.parametrize("impl", ["python", "c"])
def test_both_readers_name_keys_and_parse_hits_and_misses_alike(
    app: str, impl: str, tmp_path: Path
) -> None:
    if shutil.which(realapps.SERVERS[app]) is None:
        pytest.skip(f"{realapps.SERVERS[app]} not installed")
    if impl == "c" and realapps.c_compiler() is None:
        pytest.skip("no C compiler")
    with realapps.server(app, 400, 200, tmp_path) as (_pid, port):
        realapps.fill(app, port, 400, 200, "sequential", seed=3)
        # the reader asks for keys 0..799 of which only 0..399 exist: half its reads miss
        args = realapps.parse(
            ["--app", app, "--keys", "800", "--hot-fraction", "1", "--reader", impl]
        )
        rd, reads, misses = _read_for(args, port, tmp_path, 1.0)
    assert rd.proc.returncode == 0  # stopped by SIGTERM in the middle, it still writes its reads
    assert len(reads) > 200
    assert 0.4 < misses / len(reads) < 0.6, (misses, len(reads))
    assert (np.diff(reads[:, 0]) > 0).all() and (reads[:, 1] > 0).all()


def test_measure_etmem_run_cleans_up() -> None:
    _need_root()
    args = realapps.parse(
        [
            "--keys",
            "3000",
            "--warmup",
            "0.5",
            "--baseline",
            "1",
            "--duration",
            "3",
            "--steady",
            "1",
            "--quiet",
        ]  # fmt: skip
    )
    r = realapps.measure(args)
    assert r["rss_before_mib"] > 3.0
    assert r["baseline"]["n"] > 0 and r["steady"]["n"] > 0
    assert len(r["samples"]) >= 2
    assert r["etmemd_pid"] and r["cpu_core_share"] is not None
    assert set(r["targets"]) == {"reclaimed>=60%_within_60s", "throughput>=90%", "p99<=2x",
                                 "cpu<=5%"}  # fmt: skip
    assert _gone(r["server_pid"]) and _gone(r["etmemd_pid"])
    assert not _readers(r["port"])
    if r["swap_path"]:
        assert not Path(r["swap_path"]).exists()
        assert r["swap_path"] not in Path("/proc/swaps").read_text()


def test_damo_mode_refused_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETMEM_IN_VM", raising=False)
    args = realapps.parse(["--mode", "damo", "--keys", "10"])
    with pytest.raises(RuntimeError, match="test bed"):
        realapps.measure(args)


def test_sigterm_stops_everything(tmp_path: Path) -> None:
    _need_root()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--keys", "3000", "--baseline", "60", "--duration", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()  # "realapps: redis pid N port P: ..." once filled
        assert "pid" in first, first
        words = first.split()
        pid, port = int(words[words.index("pid") + 1]), int(words[words.index("port") + 1][:-1])
        swap = next((w for w in words if w.startswith("/var/tmp/") or w.startswith("/")), None)
        assert wait_for(lambda: bool(_readers(port)), 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert _gone(pid)
    assert not _readers(port)
    if swap and "etmem-sdk-swap" in swap:
        assert not Path(swap).exists()


def test_reader_stops_by_itself(tmp_path: Path) -> None:
    with realapps.server("redis", 500, 64, tmp_path) as (_pid, port):
        realapps.fill("redis", port, 500, 64, "sequential", seed=3)
        args = realapps.parse(["--keys", "500"])
        rd = realapps.Reader(args, port, tmp_path, run_for=1.0)
        try:
            assert wait_for(lambda: rd.proc.poll() is not None, 20)
            reads, _ = rd.finish()
        finally:
            rd.close()
    assert rd.proc.returncode == 0
    assert 0 < reads[-1, 0] / 1e9 <= 1.0
