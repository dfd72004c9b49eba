#!/usr/bin/env python3
"""slide on real applications: redis-server and memcached with a hot tenth of their keys.

The server (the distribution's package) is started on a free 127.0.0.1 port with persistence off
and filled with ``--keys`` values of ``--value`` random (incompressible) bytes. A reader process
then keeps reading: ``--dist uniform`` reads only the hot ``--hot-fraction`` of the keys, uniformly;
``--dist zipf`` reads the whole keyspace with Zipfian popularity. It sends one request at a time,
so every request's latency is measured. With ``--fill-order shuffled`` (the default) the keys go in
in random order, so hot values lie scattered among cold ones on the heap's pages, as in a cache
that has been running for a while; ``sequential`` puts the hot keys first.

After a ``--baseline`` window without etmem, ``--mode`` starts what is measured:

* ``etmem``: ``etmemd`` (``--etmemd PATH``; the ``etmem`` beside it is the client) and a slide
  project through ``etmem obj add`` + ``project start`` (loop=1 interval=1 sleep=1 T=1,
  ``type=name value=<server>``, ``tracker=`` if ``--tracker`` is given);
* ``damo``: DAMON's own DAMOS pageout through the ``damo`` tool (only inside the QEMU test bed:
  on the development machines nothing may write under /sys/kernel/mm/damon/);
* ``none``: nothing, a control for the machine's own noise.

Every second it records the server's VmRSS, VmSwap and major faults and the CPU time of etmemd
(or of the kdamonds). It reports the share of the RSS reclaimed, the time to reach 60 % of it,
and the hot reads' throughput and p99 latency in the last ``--steady`` seconds against the
baseline. It makes its own swap file (on a disk filesystem, ahead of other swap areas, off and
deleted at exit) unless enough swap is free already; in the test bed it uses zram. Everything it
started is ended at exit, also on Ctrl-C and errors, the server before the swap goes off.

Run as root::

    .venv/bin/python benchmarks/realapps.py --app redis --keys 300000 --value 1024 [--json]

Targets (issue 12), redis 300 k x 1 KiB, hot tenth, the machine's default tracker: >= 60 % of the
RSS reclaimed within 60 s of ``project start``; hot reads >= 90 % of the baseline throughput;
p99 <= 2x the baseline; etmemd <= 5 % of one core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/etmemd_proc.py starts and drives etmemd

from etmem_scan import procfs  # noqa: E402
from etmem_sdk.testing import swap_on  # noqa: E402
from etmemd_proc import EtmemdProc  # noqa: E402

MIB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")
SERVERS = {"redis": "redis-server", "memcached": "memcached"}
TARGETS = {"reclaimed": 0.60, "within_s": 60.0, "throughput": 0.90, "p99": 2.0, "cpu": 0.05}
FILL_BATCH = 500
DEMO_ENOUGH = 0.3  # share of the RSS reclaimed for the demo to call it done
DAMO_HOST = (
    "--mode damo runs only inside the QEMU test bed (tests/vm/run): the development "
    "machine's platform owns /sys/kernel/mm/damon/ and nothing else may write there"
)


# --- the two protocols ----------------------------------------------------------------------------


def key_name(i: int) -> bytes:
    """The key of index ``i`` (the same text for both servers)."""
    return b"key:%08d" % i


def value_pool(size: int, seed: int) -> bytes:
    """Random bytes to cut values from: incompressible, never zero pages (which are not swapped)."""
    return np.random.default_rng(seed).integers(1, 256, size, dtype=np.uint8).tobytes()


def set_command(app: str, key: bytes, value: bytes) -> bytes:
    """One SET request in the server's protocol."""
    if app == "redis":
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
    return b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)


def get_command(app: str, key: bytes) -> bytes:
    """One GET request in the server's protocol."""
    if app == "redis":
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    return b"get %s\r\n" % key


class Conn:
    """A blocking loopback connection with a receive buffer, enough to parse replies."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        """The next CRLF-terminated line, without the CRLF."""
        while (end := self.buf.find(b"\r\n")) < 0:
            self._more()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    def exact(self, n: int) -> None:
        """Consume ``n`` bytes."""
        while len(self.buf) < n:
            self._more()
        del self.buf[:n]

    def get_reply(self, app: str) -> bool:
        """Read one GET reply; True if the key was there."""
        head = self.line()
        if app == "redis":
            if head == b"$-1":
                return False
            if not head.startswith(b"$"):
                raise RuntimeError(f"redis: unexpected reply {head[:80]!r}")
            self.exact(int(head[1:]) + 2)
            return True
        if head == b"END":
            return False
        if not head.startswith(b"VALUE "):
            raise RuntimeError(f"memcached: unexpected reply {head[:80]!r}")
        self.exact(int(head.split()[3]) + 2)
        if self.line() != b"END":
            raise RuntimeError("memcached: no END after the value")
        return True


def fill(app: str, port: int, keys: int, value: int, order: str, seed: int) -> float:
    """SET every key once, pipelined in batches; returns the seconds it took."""
    pool = value_pool(4 * MIB + value, seed)
    idx = np.arange(keys)
    if order == "shuffled":
        np.random.default_rng(seed + 1).shuffle(idx)
    ok = b"+OK" if app == "redis" else b"STORED"
    conn = Conn(port)
    t0 = time.monotonic()
    try:
        for start in range(0, keys, FILL_BATCH):
            batch = idx[start : start + FILL_BATCH]
            parts = []
            for i in batch.tolist():
                off = (i * 4099) % (len(pool) - value)
                parts.append(set_command(app, key_name(i), pool[off : off + value]))
            conn.sock.sendall(b"".join(parts))
            for _ in range(len(batch)):
                reply = conn.line()
                if reply != ok:
                    raise RuntimeError(f"{app}: SET failed: {reply[:120]!r}")
    finally:
        conn.close()
    return time.monotonic() - t0


def reader_keys(
    keys: int, hot_fraction: float, dist: str, zipf_s: float, seed: int, n: int = 1 << 20
) -> np.ndarray:
    """``n`` key indices in the order the reader asks for them."""
    rng = np.random.default_rng(seed + 2)
    if dist == "uniform":
        return rng.integers(0, max(1, int(keys * hot_fraction)), n)
    # Zipf over the whole keyspace by inverting its CDF; ranks are given to random keys so the
    # popular ones are scattered like the uniform case's hot keys.
    cdf = np.cumsum(1.0 / np.arange(1, keys + 1, dtype=np.float64) ** zipf_s)
    ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1])
    return rng.permutation(keys)[np.minimum(ranks, keys - 1)]


def run_reader(args: argparse.Namespace) -> int:
    """The reader process: GETs one at a time until ``--run-for`` s pass or SIGTERM; then writes
    ``(send time, latency)`` in ns since its start to ``--out`` (.npy, shape (n, 2))."""
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    seq = reader_keys(args.keys, args.hot_fraction, args.dist, args.zipf_s, args.seed)
    reqs = [get_command(args.app, key_name(i)) for i in range(args.keys)]
    order = seq.tolist()
    stamps: list[int] = []
    lats: list[int] = []
    misses = 0
    conn = Conn(args.port)
    clock = time.perf_counter_ns
    t0 = clock()
    end = t0 + int(args.run_for * 1e9)
    Path(args.ready + ".tmp").write_text(str(t0))
    os.rename(args.ready + ".tmp", args.ready)  # whole or absent for the parent polling it
    i = 0
    n = len(order)
    try:
        while not stop:
            t = clock()
            if t > end:
                break
            conn.sock.sendall(reqs[order[i % n]])
            if not conn.get_reply(args.app):
                misses += 1
            stamps.append(t - t0)
            lats.append(clock() - t)
            i += 1
    finally:
        conn.close()
        out = np.empty((len(stamps), 2), dtype=np.int64)
        out[:, 0] = stamps
        out[:, 1] = lats
        np.save(args.out, out)
        Path(args.out + ".misses").write_text(str(misses))
    return 0


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end(proc: subprocess.Popen, term_wait: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(term_wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def server(
    app: str, keys: int, value: int, workdir: Path, extra: Sequence[str] = ()
) -> Iterator[tuple[int, int]]:
    """The server on a free loopback port: ``(pid, port)``; killed at exit, before any swapoff."""
    exe = shutil.which(SERVERS[app])
    if not exe:
        raise RuntimeError(f"{SERVERS[app]} is not installed (apt-get install {SERVERS[app]})")
    port = free_port()
    if app == "redis":
        cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(workdir), "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
    else:
        # Slab memory for every item with room to spare, so that nothing is evicted.
        mem = keys * (value + 200) * 3 // 2 // MIB + 64
        cmd = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(mem), "-t", "2"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    cmd += extra
    log = open(workdir / f"{app}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                text = (workdir / f"{app}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{app} exited ({proc.returncode}): {text}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{app} does not listen on port {port}") from None
                time.sleep(0.05)
        yield proc.pid, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def c_compiler() -> str | None:
    """The C compiler ``--reader c`` builds with, if the machine has one."""
    return shutil.which("cc") or shutil.which("gcc")


def c_reader(workdir: Path) -> Path:
    """realapps_reader.c built into ``workdir`` (the test bed sees the checkout read-only)."""
    exe = workdir / "realapps_reader"
    src = Path(__file__).resolve().with_name("realapps_reader.c")
    cc = c_compiler()
    if cc is None:
        raise RuntimeError("--reader c needs a C compiler (cc); or use --reader python")
    built = subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(src)], capture_output=True)
    if built.returncode:
        raise RuntimeError(f"building {src.name} failed: {built.stderr.decode()[-400:]}")
    return exe


class Reader:
    """The reader child process; ``finish()`` stops it and loads its reads, ``close()`` ends it."""

    def __init__(self, args: argparse.Namespace, port: int, workdir: Path, run_for: float) -> None:
        self.raw = args.reader == "c"
        self.out = workdir / ("reader.bin" if self.raw else "reader.npy")
        ready = workdir / "reader.ready"
        if self.raw:
            keys = workdir / "reader.keys"
            seq = reader_keys(args.keys, args.hot_fraction, args.dist, args.zipf_s, args.seed)
            seq.astype(np.uint32).tofile(keys)
            cmd = [str(c_reader(workdir)), args.app, str(port), str(keys),
                   str(run_for), str(self.out), str(ready)]  # fmt: skip
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--reader-child",
                   "--app", args.app, "--port", str(port), "--keys", str(args.keys),
                   "--hot-fraction", str(args.hot_fraction), "--dist", args.dist,
                   "--zipf-s", str(args.zipf_s), "--seed", str(args.seed),
                   "--run-for", str(run_for), "--out", str(self.out),
                   "--ready", str(ready)]  # fmt: skip
        self.proc = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the reader did not start")
                time.sleep(0.05)
            self.t0_ns = int(ready.read_text())
        except BaseException:  # also Ctrl-C: the caller never gets an object to close
            self.close()
            raise

    def now(self) -> float:
        """Seconds on the reader's clock (its reads are stamped with it)."""
        return (time.perf_counter_ns() - self.t0_ns) / 1e9

    def finish(self) -> tuple[np.ndarray, int]:
        """Stop reading; ``(reads, misses)`` with reads as (n, 2) ns: send time, latency."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)
        if self.proc.returncode:
            raise RuntimeError(f"the reader failed ({self.proc.returncode})")
        reads = np.fromfile(self.out, np.int64).reshape(-1, 2) if self.raw else np.load(self.out)
        return reads, int(Path(str(self.out) + ".misses").read_text())

    def close(self) -> None:
        _end(self.proc, 15)


def end_children() -> None:
    """SIGKILL and reap any child of ours still alive: a Ctrl-C that lands between a child's
    fork and the code that would stop it (inside ``Popen`` or while etmemd starts) leaves one."""
    me = str(os.getpid())
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        ppid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), "")
        if ppid == me:
            with contextlib.suppress(OSError):
                os.kill(int(d), signal.SIGKILL)
                os.waitpid(int(d), 0)


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of ``pid`` (all its threads) so far, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) so far, in seconds."""
    return sum(cpu_times(pid))


def cpu_speed_s() -> float:
    """Seconds this machine takes for a fixed piece of Python and numpy work (best of 3): the
    ratio between two machines' figures (the test bed under TCG against its host) says how much
    slower every instruction runs there, etmemd's included."""
    a = np.arange(1 << 20, dtype=np.uint64)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(200_000):
            total += i & 7
        np.sort(a[::-1] ^ np.uint64(0x5555))
        best = min(best, time.perf_counter() - t0)
    return best


def majflt(pid: int) -> int:
    """Major faults of ``pid`` so far (swap-ins that had to wait for I/O)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return int(raw[raw.rfind(b")") + 2 :].split()[9])


def kdamond_pids() -> list[int]:
    """The kernel's kdamond threads (DAMON's workers), to charge DAMOS its CPU time."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/comm").read_text().startswith("kdamond"):
                    out.append(int(d))
            except OSError:
                continue
    return out


# --- swap -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def zram_swap(size_mib: int) -> Iterator[Path]:
    """zram0 as swap (the test bed has no disk for a swap file); off and reset at exit."""
    sysfs = Path("/sys/block/zram0")
    if not sysfs.is_dir():
        raise RuntimeError("no /dev/zram0: the test bed's init loads the zram module")
    (sysfs / "reset").write_text("1")
    (sysfs / "disksize").write_text(str(size_mib * MIB))
    on = False
    try:
        subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
        subprocess.run(["swapon", "/dev/zram0"], check=True)
        on = True
        yield Path("/dev/zram0")
    finally:
        if on:
            subprocess.run(["swapoff", "/dev/zram0"], check=False)
        (sysfs / "reset").write_text("1")


@contextlib.contextmanager
def enough_swap(
    size_mib: int, swap_dir: str | None, policy: str = "own"
) -> Iterator[tuple[str, str | None]]:
    """Swap with ``size_mib`` free for the run; yields (a description, the area we switched on).

    ``own`` (the default) always switches on a file of ours, ahead of the others: on a shared
    machine another test's swap file may go off in the middle of a run. ``existing`` uses the
    swap that is on if it has room."""
    free_mib = procfs.read_meminfo().get("SwapFree", 0) // 1024
    if policy == "existing" and free_mib >= size_mib:
        yield f"existing swap ({free_mib} MiB free)", None
    elif os.environ.get("ETMEM_IN_VM") == "1" and not os.environ.get("ETMEM_TEST_SWAP_DEVICE"):
        with zram_swap(size_mib) as dev:
            yield f"zram {dev} ({size_mib} MiB)", str(dev)
    else:
        with swap_on(size_mib, swap_dir, priority=32000) as path:
            yield f"swap file {path} ({size_mib} MiB, priority 32000)", str(path)


# --- what is measured -----------------------------------------------------------------------------


@contextlib.contextmanager
def etmem_slide(args: argparse.Namespace, workdir: Path, pid: int) -> Iterator[int]:
    """etmemd plus a started slide project on the server; yields etmemd's pid."""
    bindir = Path(args.etmemd).resolve().parent if args.etmemd else Path(sys.executable).parent
    daemon = EtmemdProc(workdir, bindir=bindir)  # at -l 0: its log explains a miss
    try:
        task = f"type=pid\nvalue={pid}\n" if args.task_type == "pid" else (
            f"type=name\nvalue={SERVERS[args.app]}\n")  # fmt: skip
        extra = f"tracker={args.tracker}\n" if args.tracker else ""
        daemon.add(
            "realapps",
            "[project]\nname=realapps\nloop=1\ninterval=1\nsleep=1\n"
            "[engine]\nname=slide\nproject=realapps\n"
            f"[task]\nproject=realapps\nengine=slide\nname=app\n{task}T=1\n{extra}",
        )
        daemon.etmem("project", "start", "-n", "realapps")
        yield daemon.proc.pid
        daemon.etmem("project", "stop", "-n", "realapps", check=False)
    finally:
        daemon.stop()
        if args.keep_log:
            Path(args.keep_log).write_text(daemon.logtext())


#: damo's default monitoring attributes, which ``--mode etmem-damon`` gives its project too.
DAMO_ATTRS = {"sample_interval": 5_000, "aggr_interval": 100_000, "update_interval": 1_000_000,
              "min_nr_regions": 10, "max_nr_regions": 1000}  # fmt: skip


@contextlib.contextmanager
def etmem_damon(args: argparse.Namespace, workdir: Path, pid: int) -> Iterator[int]:
    """etmemd plus a started damon project with the DAMOS scheme ``--mode damo`` gives damo
    (pageout of regions with no access for ``--damo-age``, damo's default attributes)."""
    if os.environ.get("ETMEM_IN_VM") != "1":
        raise RuntimeError(DAMO_HOST.replace("--mode damo", "--mode etmem-damon"))
    bindir = Path(args.etmemd).resolve().parent if args.etmemd else Path(sys.executable).parent
    age_s = float(args.damo_age.removesuffix("s"))
    min_age = round(age_s * 1e6 / DAMO_ATTRS["aggr_interval"])
    daemon = EtmemdProc(workdir, bindir=bindir)
    try:
        project = "".join(f"{k}={v}\n" for k, v in DAMO_ATTRS.items())
        daemon.add(
            "realapps",
            f"[project]\nname=realapps\nscan_type=region\n{project}"
            "[engine]\nname=damon\nproject=realapps\nmin_size=0\nmax_size=9223372036854775807\n"
            f"min_acc=0\nmax_acc=0\nmin_age={min_age}\nmax_age=4294967295\naction=pageout\n"
            f"[task]\nproject=realapps\nengine=damon\nname=app\ntype=pid\nvalue={pid}\n",
        )
        daemon.etmem("project", "start", "-n", "realapps")
        yield daemon.proc.pid
        daemon.etmem("project", "stop", "-n", "realapps", check=False)
    finally:
        daemon.stop()
        if args.keep_log:
            Path(args.keep_log).write_text(daemon.logtext())


@contextlib.contextmanager
def damo_pageout(args: argparse.Namespace, pid: int) -> Iterator[None]:
    """DAMOS pageout of regions not accessed for ``--damo-age``, through ``damo``."""
    if os.environ.get("ETMEM_IN_VM") != "1":
        raise RuntimeError(DAMO_HOST)
    damo = shutil.which("damo", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not damo:
        raise RuntimeError("damo is not installed (.venv/bin/pip install damo)")
    tracing = "/sys/kernel/tracing"
    if not os.path.ismount(tracing):
        # damo refuses to start without tracefs (its feature probe), which the test bed's
        # init does not mount: "trace feature check fail (tracefs is not mounted)"
        subprocess.run(["mount", "-t", "tracefs", "nodev", tracing], check=False)
    cmd = [damo, "start", "--ops", "vaddr", "--target_pid", str(pid), "--damos_action", "pageout",
           "--damos_access_rate", "0%", "0%", "--damos_age", args.damo_age, "max"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode:
        raise RuntimeError(f"damo start failed: {res.stdout}{res.stderr}")
    try:
        yield
    finally:
        subprocess.run([damo, "stop"], capture_output=True, timeout=60, check=False)
        # `damo stop` turns its kdamond off but leaves it configured, and etmemd never touches
        # a kdamond it did not make: free DAMON for the runs that follow (test bed only)
        kdamonds = Path("/sys/kernel/mm/damon/admin/kdamonds")
        if (kdamonds / "nr_kdamonds").read_text().strip() != "0":
            (kdamonds / "nr_kdamonds").write_text("0\n")


@dataclass
class Sample:
    t: float
    rss_kb: int
    swap_kb: int
    majflt: int
    cpu_s: float


def window(reads: np.ndarray, t_from: float, t_to: float) -> dict[str, float]:
    """Throughput and latency percentiles of the reads sent in [t_from, t_to) s (reader clock)."""
    sel = reads[(reads[:, 0] >= t_from * 1e9) & (reads[:, 0] < t_to * 1e9), 1]
    span = max(t_to - t_from, 1e-9)
    if not len(sel):
        return {"reads_per_s": 0.0, "p50_us": float("nan"), "p99_us": float("nan"), "n": 0}
    p50, p99, p999 = np.percentile(sel, [50, 99, 99.9]) / 1e3
    return {"reads_per_s": len(sel) / span, "p50_us": float(p50), "p99_us": float(p99),
            "p999_us": float(p999), "n": int(len(sel))}  # fmt: skip


def timeline(reads: np.ndarray, t_start: float, t_end: float, step: float) -> list[list[float]]:
    """``[t, reads/s, p99 us]`` per ``step`` seconds after the start (t at each slice's start)."""
    out = []
    t = t_start
    while t + step <= t_end + 1e-9:  # whole slices only
        w = window(reads, t, min(t + step, t_end))
        out.append([round(t - t_start, 1), round(w["reads_per_s"]), round(w["p99_us"], 1)])
        t += step
    return out


def measure(args: argparse.Namespace) -> dict:
    """One complete run; returns the report as a dict (see ``print_report``)."""
    app = args.app
    mode = args.mode
    swap_mib = args.keys * args.value * 2 // MIB + 256
    # Only a safety bound (the reader is stopped at the end): starting etmemd and the project
    # can take a minute in the TCG test bed, and a reader that ends early makes the heap look idle.
    run_for = args.warmup + args.baseline + args.duration + 600
    if mode == "damo" and os.environ.get("ETMEM_IN_VM") != "1":
        raise RuntimeError(DAMO_HOST)
    daemon_pid = None
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="etmem-realapps-")))
        swap_desc, swap_path = stack.enter_context(enough_swap(swap_mib, args.swap_dir, args.swap))
        stack.callback(end_children)  # runs after every context below, before the swapoff
        pid, port = stack.enter_context(
            server(app, args.keys, args.value, workdir, shlex.split(args.server_args))
        )
        fill_s = fill(app, port, args.keys, args.value, args.fill_order, args.seed)
        filled = procfs.read_status(pid)
        log(args, f"{app} pid {pid} port {port}: {args.keys} keys x {args.value} B in "
            f"{fill_s:.1f}s, RSS {filled.get('VmRSS', 0) / 1024:.1f} MiB; {swap_desc}")  # fmt: skip
        rd = Reader(args, port, workdir, run_for)
        stack.callback(rd.close)
        rclock = rd.now
        time.sleep(args.warmup)
        base_from = rclock()
        time.sleep(args.baseline)
        base_to = rclock()
        before = procfs.read_status(pid)
        log(args, f"baseline done ({args.baseline:.0f}s); starting {mode}")
        samples: list[Sample] = []
        if mode == "etmem":
            daemon_pid = stack.enter_context(etmem_slide(args, workdir, pid))
            watched = [daemon_pid]
        elif mode == "damo":
            stack.enter_context(damo_pageout(args, pid))
            watched = kdamond_pids()
        elif mode == "etmem-damon":
            daemon_pid = stack.enter_context(etmem_damon(args, workdir, pid))
            watched = [daemon_pid, *kdamond_pids()]
        else:
            watched = []
        t_start = rclock()  # the project has started (etmem returned) or damo has
        cpu0 = sum(cpu_seconds(p) for p in watched)
        split0 = cpu_times(daemon_pid) if daemon_pid else (0.0, 0.0)
        flt0 = majflt(pid)
        deadline = t_start + args.duration
        rss0 = before.get("VmRSS", 0)
        last_log = t_start
        while (now := rclock()) < deadline:
            st = procfs.read_status(pid)
            samples.append(Sample(now - t_start, st.get("VmRSS", 0), st.get("VmSwap", 0),
                                  majflt(pid) - flt0,
                                  sum(cpu_seconds(p) for p in watched) - cpu0))  # fmt: skip
            smp = samples[-1]
            if args.progress and now - last_log >= args.progress - 0.05:
                last_log = now
                log(args, f"  t={smp.t:5.1f}s RSS {smp.rss_kb / 1024:7.1f} MiB swap "
                    f"{smp.swap_kb / 1024:7.1f} MiB majflt {smp.majflt}")  # fmt: skip
            if args.stop_at and rss0 and 1 - smp.rss_kb / rss0 >= args.stop_at:
                # Reached: only the steady-state window is still to be measured.
                deadline = min(deadline, now + args.steady)
            time.sleep(max(0.0, min(1.0, deadline - rclock())))
        t_end = rclock()
        cpu_total = sum(cpu_seconds(p) for p in watched) - cpu0 if watched else 0.0
        split = cpu_times(daemon_pid) if daemon_pid else (0.0, 0.0)
        # Stop the reader first, so that stopping etmemd or damo is not in its figures.
        reads, misses = rd.finish()
        if not len(reads) or reads[-1, 0] / 1e9 < t_end - 5:
            raise RuntimeError("the reader stopped before the end of the window; no figures")
    rss = np.array([s.rss_kb for s in samples], dtype=np.float64)
    frac = 1.0 - rss / rss0 if rss0 else np.zeros_like(rss)
    reached = np.nonzero(frac >= TARGETS["reclaimed"])[0]
    base = window(reads, base_from, base_to)
    steady = window(reads, t_end - args.steady, t_end)
    report = {
        "app": app,
        "mode": mode,
        "tracker": args.tracker or "default",
        "etmemd": args.etmemd or str(Path(sys.executable).parent / "etmemd"),
        "keys": args.keys,
        "value": args.value,
        "dist": args.dist,
        "hot_fraction": args.hot_fraction,
        "reader": args.reader,
        "fill_order": args.fill_order,
        "fill_s": fill_s,
        "swap": swap_desc,
        "swap_path": swap_path,
        "server_pid": pid,
        "port": port,
        "etmemd_pid": daemon_pid,
        "rss_before_mib": rss0 / 1024,
        "swap_before_mib": before.get("VmSwap", 0) / 1024,
        "rss_end_mib": float(rss[-1]) / 1024 if len(rss) else 0.0,
        "swap_end_mib": samples[-1].swap_kb / 1024 if samples else 0.0,
        "reclaimed_end": float(frac[-1]) if len(frac) else 0.0,
        "reclaimed_max": float(frac.max()) if len(frac) else 0.0,
        "reclaimed_at_60s": float(frac[[s.t <= 60 for s in samples]].max()) if len(frac) else 0.0,
        "time_to_60pct_s": float(samples[reached[0]].t) if len(reached) else None,
        "major_faults": samples[-1].majflt if samples else 0,
        "baseline": base,
        "steady": steady,
        "throughput_ratio": steady["reads_per_s"] / base["reads_per_s"]
        if base["reads_per_s"]
        else 0,
        "p99_ratio": steady["p99_us"] / base["p99_us"] if base["n"] else float("nan"),
        "cpu_core_share": cpu_total / (t_end - t_start) if watched else None,
        "cpu_s": cpu_total,
        # etmemd alone: its own code (user) and the kernel's work it calls (system: page-outs,
        # pagemap, and in the test bed zram's compression of what it pages out)
        "etmemd_user_s": split[0] - split0[0],
        "etmemd_system_s": split[1] - split0[1],
        "cpu_speed_s": cpu_speed_s(),
        "window_s": t_end - t_start,
        "misses": misses,
        "timeline": timeline(reads, t_start, t_end, 5.0),
        "samples": [
            [round(s.t, 2), s.rss_kb, s.swap_kb, s.majflt, round(s.cpu_s, 3)] for s in samples
        ],
    }
    report["targets"] = judge(report)
    return report


def judge(r: dict) -> dict[str, bool | None]:
    """Each target of issue 12, met or not (None where the run does not measure it)."""
    t60 = r["time_to_60pct_s"]
    return {
        "reclaimed>=60%_within_60s": t60 is not None and t60 <= TARGETS["within_s"],
        "throughput>=90%": r["throughput_ratio"] >= TARGETS["throughput"],
        "p99<=2x": bool(r["p99_ratio"] <= TARGETS["p99"]),
        "cpu<=5%": None if r["cpu_core_share"] is None else r["cpu_core_share"] <= TARGETS["cpu"],
    }


def log(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"realapps: {text}", file=sys.stderr, flush=True)


def print_report(r: dict) -> None:
    """The human-readable summary."""
    b, s = r["baseline"], r["steady"]
    t60 = "never" if r["time_to_60pct_s"] is None else f"{r['time_to_60pct_s']:.0f} s"
    cpu = "-" if r["cpu_core_share"] is None else f"{100 * r['cpu_core_share']:.1f} % of a core"
    print(f"{r['app']} {r['keys']} x {r['value']} B, {r['dist']} reads "
          f"(hot {r['hot_fraction']:.0%}, fill {r['fill_order']}, "
          f"reader {r.get('reader', 'python')}), mode {r['mode']}, "
          f"tracker {r['tracker']}")  # fmt: skip
    print(f"  RSS {r['rss_before_mib']:.1f} MiB -> {r['rss_end_mib']:.1f} MiB "
          f"(swap {r['swap_end_mib']:.1f} MiB): reclaimed {100 * r['reclaimed_end']:.1f} % "
          f"(max {100 * r['reclaimed_max']:.1f} %), 60 % reached: {t60}")  # fmt: skip
    print(f"  hot reads: baseline {b['reads_per_s']:.0f}/s p99 {b['p99_us']:.0f} us; steady "
          f"{s['reads_per_s']:.0f}/s p99 {s['p99_us']:.0f} us "
          f"({100 * r['throughput_ratio']:.0f} %, p99 x{r['p99_ratio']:.2f}); "
          f"major faults {r['major_faults']}")  # fmt: skip
    print(f"  {r['mode']} CPU: {cpu} ({r['cpu_s']:.1f} s over {r['window_s']:.0f} s)")
    if r.get("etmemd_pid"):
        print(f"  etmemd: user {r['etmemd_user_s']:.1f} s, system {r['etmemd_system_s']:.1f} s; "
              f"this machine's CPU yardstick {1000 * r['cpu_speed_s']:.0f} ms")  # fmt: skip
    marks = ", ".join(f"{k} {'-' if v is None else ('yes' if v else 'NO')}"
                      for k, v in r["targets"].items())  # fmt: skip
    print(f"  targets: {marks}")


def demo_report(r: dict) -> int:
    """What scripts/demo prints; 0 if a good part of the server's memory left RAM, else 1."""
    b, s = r["baseline"], r["steady"]
    print(f"before: RSS {r['rss_before_mib']:7.1f} MiB   swap {r['swap_before_mib']:7.1f} MiB   "
          f"hot reads {b['reads_per_s']:8.0f}/s  p99 {b['p99_us']:6.0f} us")  # fmt: skip
    print(f"after:  RSS {r['rss_end_mib']:7.1f} MiB   swap {r['swap_end_mib']:7.1f} MiB   "
          f"hot reads {s['reads_per_s']:8.0f}/s  p99 {s['p99_us']:6.0f} us")  # fmt: skip
    share, speed = r["reclaimed_end"], r["throughput_ratio"]
    if share >= DEMO_ENOUGH:
        print(f"demo: done - {100 * share:.0f} % of {r['app']}'s memory went to swap while its "
              f"hot reads kept {100 * speed:.0f} % of their throughput")  # fmt: skip
        return 0
    print(f"demo: only {100 * share:.1f} % of {r['app']}'s memory left RAM. `etmem sysinfo` says "
          "which tracker this machine uses; one that sees only whole mappings (refs) cannot find "
          "the cold values among the hot ones in one heap", file=sys.stderr)  # fmt: skip
    return 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--app", choices=sorted(SERVERS), default="redis", help="Which server to run.")
    ap.add_argument("--keys", type=int, default=300_000, help="How many keys to fill it with.")
    ap.add_argument(
        "--value", type=int, default=1024, help="Bytes per value (random, incompressible)."
    )
    ap.add_argument(
        "--hot-fraction", type=float, default=0.1, help="Share of keys the uniform reader reads."
    )
    ap.add_argument(
        "--dist",
        choices=("uniform", "zipf"),
        default="uniform",
        help="uniform over the hot keys, or Zipfian over all keys.",
    )
    ap.add_argument("--zipf-s", type=float, default=0.99, help="The Zipf exponent.")
    ap.add_argument(
        "--reader",
        choices=("python", "c"),
        default="python",
        help="The reader's implementation: c (built with cc) costs far fewer instructions per "
        "read, which matters under the test bed's emulator.",
    )
    ap.add_argument(
        "--fill-order",
        choices=("shuffled", "sequential"),
        default="shuffled",
        help="Order of the fill: shuffled scatters the hot keys over the heap.",
    )
    ap.add_argument(
        "--mode",
        choices=("etmem", "etmem-damon", "damo", "none"),
        default="etmem",
        help="What runs after the baseline window.",
    )
    ap.add_argument(
        "--tracker", default=None, help="tracker= for the slide task (default: the machine's)."
    )
    ap.add_argument(
        "--task-type",
        choices=("name", "pid"),
        default="name",
        help="type=name value=SERVER (the issue's setup) or type=pid.",
    )
    ap.add_argument(
        "--etmemd", default=None, help="etmemd to run; the etmem beside it is the client."
    )
    ap.add_argument("--damo-age", default="5s", help="Minimum age of a DAMOS pageout region.")
    ap.add_argument(
        "--warmup", type=float, default=3.0, help="Seconds of reads before the baseline."
    )
    ap.add_argument("--baseline", type=float, default=20.0, help="Seconds of the baseline window.")
    ap.add_argument(
        "--duration", type=float, default=90.0, help="Seconds measured after the start."
    )
    ap.add_argument(
        "--steady", type=float, default=20.0, help="Last seconds that count as steady state."
    )
    ap.add_argument(
        "--swap-dir", default=None, help="Directory of the swap file (a disk filesystem)."
    )
    ap.add_argument(
        "--swap",
        choices=("own", "existing"),
        default="own",
        help="own: a swap file of ours (zram in the test bed); existing: the swap on, if roomy.",
    )
    ap.add_argument("--server-args", default="", help="Extra arguments for the server.")
    ap.add_argument("--keep-log", default=None, help="Write the end of etmemd's log here.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="Print the report as JSON.")
    ap.add_argument("--demo", action="store_true", help="Print only the before/after lines.")
    ap.add_argument(
        "--progress", type=float, default=0.0, help="Log a sample every this many seconds."
    )
    ap.add_argument(
        "--stop-at",
        type=float,
        default=0.0,
        help="End --steady seconds after this share of the RSS was reclaimed (0: run --duration).",
    )
    ap.add_argument("--quiet", action="store_true", help="No progress messages on stderr.")
    # The reader child's own arguments.
    ap.add_argument("--reader-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--run-for", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.reader_child:
        return run_reader(args)
    if os.geteuid() != 0:
        print("realapps: run as root (swap and etmemd need it)", file=sys.stderr)
        return 1
    if args.steady > args.duration:
        args.steady = args.duration
    # SIGTERM unwinds like Ctrl-C, so every context above cleans up.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = measure(args)
    except KeyboardInterrupt:
        print("realapps: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"realapps: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1))
    elif args.demo:
        return demo_report(report)
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
