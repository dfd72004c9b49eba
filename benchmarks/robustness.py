"""Long fuzz and load runs against a real etmemd, with the figures docs/robustness.md records.

    .venv/bin/python benchmarks/robustness.py                      # the full run
    .venv/bin/python benchmarks/robustness.py --requests 2000 --files 200 --clients 100

Runs, each against one etmemd started here on a unique abstract socket:

1. fuzzed requests (default 100,000) and fuzzed object files (default 10,000): answered,
   malformed replies, crashes, tracebacks in the log, RSS before and after;
2. parallel root clients (default 1,000) beside 10 silent clients and one unprivileged
   connect flooder: answered, p99 latency;
3. obj add and del through the etmem CLI of TOML files with 40,000 tasks, 65,536 tasks (the
   most a file may hold) in 10 MiB, 185,000 tasks in 10 MiB (refused: how soon), and a
   10 MiB GKeyFile of repeated headers: seconds each;
4. (``--only stop``, in process) ``project start``, ``project stop`` and ``obj del`` of a
   started project of 40,000 slide tasks that each hold a pid of their own: stopping gives
   every claim up. The pids are a fake /proc tree (this machine's pid_max is 32,768);
   ``--stop-tasks`` sets the count.

Needs root (the flooder drops to uid 65534; object files must be root's).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from etmemd_proc import EtmemdProc  # noqa: E402
from fuzzing import (  # noqa: E402
    fuzz_object_files,
    fuzz_requests,
    parallel_root_clients,
    rss_kib,
    silent_clients,
    start_flooder,
)


def _tracebacks(d: EtmemdProc) -> int:
    return (d.workdir / f"etmemd-{d.sock}.log").read_bytes().count(b"Traceback")


def _start(work: Path, log_level: int = 0) -> EtmemdProc:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    return EtmemdProc(work, env=env, log_level=log_level)


def fuzz(args: argparse.Namespace, work: Path) -> None:
    d = _start(work)
    try:
        rss0 = rss_kib(d.proc.pid)
        t0 = time.monotonic()
        req = fuzz_requests(d.sock, args.requests, seed=args.seed)
        t1 = time.monotonic()
        files_dir = work / "fz"
        files_dir.mkdir(exist_ok=True)
        obj = fuzz_object_files(d.sock, files_dir, args.files, seed=args.seed + 1)
        t2 = time.monotonic()
        rss1 = rss_kib(d.proc.pid)
        alive = d.proc.poll() is None
        print(
            f"fuzzed requests: {req.tried} tried, {req.answered} answered, "
            f"{len(req.malformed)} malformed replies, {t1 - t0:.1f} s"
        )
        print(
            f"fuzzed object files: {args.files} files, {obj.tried} requests, {obj.answered} "
            f"answered, {len(obj.malformed)} malformed, {t2 - t1:.1f} s"
        )
        print(
            f"crashes: {0 if alive else 1}, tracebacks in the log: {_tracebacks(d)}, "
            f"RSS {rss0} KiB -> {rss1} KiB (+{(rss1 - rss0) / 1024:.1f} MiB)"
        )
    finally:
        d.stop()


def load(args: argparse.Namespace, work: Path) -> None:
    # -l 3 is etmemd's default (errors only); -l 0 writes two debug lines per request
    for level in (3, 0):
        d = _start(work, level)
        try:
            silent = silent_clients(d.sock, 10)
            flooder = start_flooder(d.sock, args.flood_seconds)
            try:
                time.sleep(0.5)
                rounds = [parallel_root_clients(d.sock, args.clients) for _ in range(args.rounds)]
            finally:
                for s in silent:
                    s.close()
                os.waitpid(flooder, 0)
            log = d.logtext()
            shown = ", ".join(
                f"{t.answered}/{t.tried} p99 {t.p99() * 1000:.0f} ms "
                f"(max {max(t.latencies, default=0) * 1000:.0f})"
                for t in rounds
            )
            print(
                f"-l {level}: parallel root clients, {args.rounds} rounds: {shown} (beside 10 "
                f"silent clients and a uid 65534 flooder); 'permission denied' lines in the log "
                f"tail: {log.count('permission denied')}"
            )
        finally:
            d.stop()


def _toml_tasks(path: Path, n: int, pad: int = 0) -> None:
    """A slide project with ``n`` tasks, each followed by a ``pad``-byte comment."""
    comment = "#" + "x" * (pad - 2) + "\n" if pad else ""
    with open(path, "w") as f:
        f.write('[project]\nname = "s"\nloop = 1\ninterval = 1\nsleep = 1\n')
        f.write('[[engine]]\nname = "slide"\n')
        for i in range(n):
            f.write(f'[[task]]\nname = "t{i}"\ntype = "pid"\nvalue = "1"\nT = 1\n{comment}')


def _keyfile_headers(path: Path, size: int) -> None:
    """A GKeyFile of ``size`` bytes that repeats ``[task]`` (the reader's worst case)."""
    head = "[project]\nname=k\nloop=1\ninterval=1\nsleep=1\n"
    path.write_text(head + "[task]\n" * ((size - len(head)) // 7))


def scale(args: argparse.Namespace, work: Path) -> None:
    d = _start(work)
    try:
        # The first file naming an engine imports it (~0.2 s for slide): not a cost per task.
        warm = work / "warm.toml"
        _toml_tasks(warm, 1)
        os.chmod(warm, 0o600)
        t0 = time.monotonic()
        d.etmem("obj", "add", "-f", str(warm))
        d.etmem("obj", "del", "-f", str(warm))
        print(f"first use of the slide engine (1 task, add + del): {time.monotonic() - t0:.2f} s")
        cases = [
            ("40k", "40k tasks", "s40k.toml", lambda p: _toml_tasks(p, 40_000)),
            ("64k", "64k tasks, 10 MiB", "s64k.toml", lambda p: _toml_tasks(p, 65_536, 100)),
            (
                "big",
                f"{args.big_tasks} tasks",
                "sbig.toml",
                lambda p: _toml_tasks(p, args.big_tasks),
            ),
            (
                "keyfile",
                "GKeyFile, 10 MiB of [task]",
                "skf.conf",
                lambda p: _keyfile_headers(p, 10 << 20),
            ),
        ]
        chosen = args.scale_cases.split(",")
        for key, label, name, make in cases * args.scale_repeat:
            if key not in chosen:
                continue
            path = work / name
            make(path)
            os.chmod(path, 0o600)
            size = path.stat().st_size
            results = []
            for verb in ("add", "del"):
                c0, t0 = _cpu_seconds(d.proc.pid), time.monotonic()
                res = d.etmem("obj", verb, "-f", str(path), check=False)
                took, cpu = time.monotonic() - t0, _cpu_seconds(d.proc.pid) - c0
                said = "ok" if res.returncode == 0 else (res.stdout.strip() or res.stderr.strip())
                results.append(f"obj {verb} {took:.2f} s, etmemd CPU {cpu:.2f} s ({said[:160]})")
            load = os.getloadavg()[0]
            print(f"{label}, {size / 1048576:.1f} MiB (load {load:.1f}): " + "; ".join(results))
        if "concurrent" not in chosen:
            return
        # Concurrent adds of the biggest file: at most BIG_LOADS are parsed at once.
        big = work / "s64k.toml"
        if not big.exists():
            _toml_tasks(big, 65_536, 100)
            os.chmod(big, 0o600)
        with ThreadPoolExecutor(args.concurrent_adds) as pool:
            t0 = time.monotonic()
            codes = list(
                pool.map(
                    lambda _: d.etmem("obj", "add", "-f", str(big), check=False).returncode,
                    range(args.concurrent_adds),
                )
            )
        took = time.monotonic() - t0
        d.etmem("obj", "del", "-f", str(big), check=False)
        print(
            f"{args.concurrent_adds} concurrent obj adds of the 9.7 MiB file: {took:.1f} s, "
            f"{codes.count(0)} added, {len(codes) - codes.count(0)} refused (exists or busy); "
            f"etmemd's peak RSS over the whole scale run: {_hwm_kib(d.proc.pid) / 1024:.0f} MiB"
        )
    finally:
        d.stop()


def _fake_pids(root: Path, first: int, n: int) -> None:
    """A /proc tree with ``n`` idle processes: what slide's start reads of a target pid."""
    from etmem_sdk.testing.fake_proc import FakeProc

    FakeProc(root)  # meminfo, self/clear_refs (so the refs tracker is usable), an empty /sys
    for pid in range(first, first + n):
        d = root / str(pid)
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "task" / str(pid) / "children").write_text("")
        (d / "stat").write_text(
            f"{pid} (w) S 1 {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 1\n"
        )


def stop(args: argparse.Namespace, work: Path) -> None:
    """Start, stop and delete (started) a project of tasks that each hold a pid, in process.

    Each task's periodic worker is a stand-in without a thread: 40,000 timer threads would
    need more pids than this machine has (pid_max 32,768, shared with everything else), and
    what is measured is the stop path (stop_task, giving claims up), not thread start-up.
    """
    import etmem_slide.engine
    from etmem_sdk import scan
    from etmem_sdk.worker import PeriodicWorker

    from etmem_core.lifecycle import ObjectStore

    class IdleWorker(PeriodicWorker):
        def start(self) -> None:
            self.ticks = 0

        @property
        def running(self) -> bool:
            return not self._stop.is_set()

        def stop(self, timeout: float = 1.0) -> bool:
            self._stop.set()
            return True

    n, first = args.stop_tasks, 100_000
    root = work / "proc"
    t0 = time.monotonic()
    _fake_pids(root, first, n)
    print(f"fake /proc of {n} processes: {time.monotonic() - t0:.1f} s")
    path = work / "stop.toml"
    with open(path, "w") as f:
        f.write('[project]\nname = "s"\nloop = 1\ninterval = 1\nsleep = 1\n')
        f.write('[[engine]]\nname = "slide"\n')
        for i in range(n):
            f.write(f'[[task]]\nname = "t{i}"\ntype = "pid"\nvalue = "{first + i}"\nT = 1\n')
    os.chmod(path, 0o600)
    times: dict[str, list[float]] = {}
    real_worker = etmem_slide.engine.PeriodicWorker
    etmem_slide.engine.PeriodicWorker = IdleWorker  # type: ignore[misc]
    try:
        with scan.using_defaults(proc_root=str(root), sys_root=str(root.parent / "proc-sys")):
            store = ObjectStore(hook_deadline=0)  # hooks on this thread, as a profiler wants
            for _ in range(args.rounds):
                for label, call, arg in (
                    ("obj add", store.obj_add, str(path)),
                    ("project start", store.project_start, "s"),
                    ("project stop", store.project_stop, "s"),
                    ("project start", store.project_start, "s"),
                    ("obj del (started)", store.obj_del, str(path)),
                ):
                    t0 = time.monotonic()
                    call(arg)
                    times.setdefault(label, []).append(time.monotonic() - t0)
    finally:
        etmem_slide.engine.PeriodicWorker = real_worker  # type: ignore[misc]
    shown = "; ".join(f"{label} {min(v):.2f}-{max(v):.2f} s" for label, v in times.items())
    print(f"{n} tasks holding a pid each, {args.rounds} rounds: {shown}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far: what a request cost etmemd itself, apart
    from the client's start-up and from the CPU that other processes took meanwhile."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


FAULT_OPS = (
    "fill_eng_params",
    "fill_task_params",
    "start_task",
    "eng_mgt_func",
    "stop_task",
    "clear_task_params",
    "clear_eng_params",
)


def _helpers_of(pid: int) -> list[int]:
    """Pids of the isolate helpers started by etmemd ``pid`` (their argv names it)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"etmem_thirdparty_so.isolate_helper" in argv and str(pid).encode() in argv:
            found.append(int(entry))
    return found


def faults(args: argparse.Namespace, work: Path) -> None:
    """An isolated policy that hangs, segfaults, aborts or exits in each op in turn: every
    request must be answered before the client's 10 s, etmemd must exit 0 on SIGTERM, and
    no helper may be left."""
    from thirdparty_build import compile_policy

    lib = compile_policy("fault_engine.c", work / "libfault.so")
    conf = work / "fault.conf"
    conf.write_text(
        "[project]\nname=f\nloop=1\ninterval=1\nsleep=1\n"
        f"[engine]\nname=thirdparty\nproject=f\neng_name=fault\nlibname={lib}\n"
        "ops_name=fault_ops\nisolate=yes\nisolate_timeout=1\n"
        f"[task]\nproject=f\nengine=fault\nname=t\ntype=pid\nvalue={os.getpid()}\n"
    )
    os.chmod(conf, 0o600)
    steps = (
        ("obj", "add", "-f", str(conf)),
        ("project", "start", "-n", "f"),
        ("engine", "hello", "-n", "f", "-e", "fault"),
        ("project", "stop", "-n", "f"),
        ("obj", "del", "-f", str(conf)),
        ("project", "show"),
    )
    worst, scenarios, fired, bad = 0.0, 0, 0, []
    for how in ("hang", "segv", "abort", "exit"):
        for op in FAULT_OPS:
            env = dict(os.environ, ETMEMD_HOOK_DEADLINE="2", ETMEM_FAULT_OP=op)
            env["ETMEM_FAULT_HOW"] = how
            env.pop("NOTIFY_SOCKET", None)
            d = EtmemdProc(work, env=env)
            scenarios += 1
            try:
                failed = 0
                for step in steps:
                    t0 = time.monotonic()
                    res = d.etmem(*step, check=False)
                    took = time.monotonic() - t0
                    worst = max(worst, took)
                    failed += res.returncode != 0
                    if took >= 9.5 or res.returncode not in (0, 186) or d.proc.poll() is not None:
                        bad.append(f"{how} in {op}: {' '.join(step[:2])} -> {res.returncode}")
                fired += failed > 0  # else the fault never happened: the run proves nothing
                helpers = _helpers_of(d.proc.pid)
                d.proc.send_signal(signal.SIGTERM)
                status = d.proc.wait(40)
                time.sleep(0.5)
                left = [p for p in helpers if os.path.exists(f"/proc/{p}")]
                if status != 0 or left:
                    bad.append(f"{how} in {op}: SIGTERM -> exit {status}, helpers left {left}")
                    for pid in left:
                        os.kill(pid, signal.SIGKILL)
            finally:
                d.stop()
    print(
        f"isolated policy faults: {scenarios} scenarios (hang, segv, abort, exit x "
        f"{len(FAULT_OPS)} ops), {scenarios * len(steps)} requests, {fired} scenarios where the "
        f"fault made a request fail, slowest answer {worst:.2f} s; problems: {bad or 'none'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5, help="bursts of --clients clients")
    parser.add_argument(
        "--big-tasks", type=int, default=185_000, help="tasks of the 10 MiB file (over the limit)"
    )
    parser.add_argument("--concurrent-adds", type=int, default=50)
    parser.add_argument(
        "--scale-cases",
        default="40k,64k,big,keyfile,concurrent",
        help="which files --only scale adds and deletes (comma-separated)",
    )
    parser.add_argument(
        "--scale-repeat", type=int, default=1, help="add and delete each file this many times"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-tasks", type=int, default=40_000, help="tasks of --only stop")
    parser.add_argument("--only", choices=("fuzz", "load", "scale", "faults", "stop"), default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    print(f"load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    print(subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="etmem-robust-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        for name, run in (
            ("fuzz", fuzz),
            ("load", load),
            ("scale", scale),
            ("faults", faults),
            ("stop", stop),
        ):
            if args.only in (None, name):
                run(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
