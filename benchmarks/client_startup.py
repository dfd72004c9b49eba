"""Start-up of the ``etmem`` client: wall time and peak RSS of ``etmem project show`` as a
whole process, against a real etmemd, beside a bare interpreter; docs/performance.md records it.

    .venv/bin/python benchmarks/client_startup.py             # 20 runs each
    .venv/bin/python benchmarks/client_startup.py --runs 50 --importtime
    .venv/bin/python benchmarks/client_startup.py --no-bytecode-cache
    .venv/bin/python benchmarks/client_startup.py --no-site

The etmemd is started here on a unique abstract socket and stopped at the end.

An installed etmem has the bytecode of its modules (pip compiles them at install), but an
environment with PYTHONDONTWRITEBYTECODE=1 and a source checkout has none: each run would then
compile every module of ours from source, which costs more than running them. So the runs get
a bytecode cache of their own (PYTHONPYCACHEPREFIX in the temporary directory, filled by the
warm-up run) unless --no-bytecode-cache asks for compiling each time.

--no-site runs the interpreter (and the client, imported from this checkout) with ``-S``: the
virtual environment's .pth files, the editable install's import finder above all, cost more
than the client; without them the figures come closer to a wheel installed in a plain
environment (whose ``site`` itself adds a few ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from etmemd_proc import EtmemdProc  # noqa: E402

#: The environment of every measured run (see the module docstring); set in main().
ENV: dict[str, str] = dict(os.environ)


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``argv``, which must succeed.

    CPU time is the steadier figure on a shared machine: waiting for a core counts in the wall
    time only.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode})")
    return elapsed, usage.ru_utime + usage.ru_stime


def peak_rss_kib(argv: list[str]) -> int:
    """Peak RSS of one run, from GNU time (``%M``): ``wait4``'s ``ru_maxrss`` of a forked child
    also counts the parent's pages it carried before ``exec``."""
    res = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
        env=ENV,
    )
    return int(res.stderr.split()[-1])


def report(label: str, argv: list[str], runs: int) -> None:
    samples = [timed(argv) for _ in range(runs)]
    wall = [w * 1000 for w, _ in samples]
    cpu = [c * 1000 for _, c in samples]
    rss = statistics.median(peak_rss_kib(argv) for _ in range(5)) / 1024
    print(
        f"{label:<20} wall median {statistics.median(wall):6.1f} ms (min {min(wall):5.1f})  "
        f"CPU median {statistics.median(cpu):5.1f} ms (min {min(cpu):5.1f})  "
        f"peak RSS {rss:4.1f} MiB  ({runs} runs)"
    )


ROOT = Path(__file__).resolve().parent.parent

#: ``etmem project show -s SOCK`` from this checkout, for ``python -S -c`` (argv: root, socket).
_SHOW_NO_SITE = (
    "import sys; sys.path.insert(0, sys.argv[1]); from etmem_core.cli import main; "
    "sys.exit(main(['project', 'show', '-s', sys.argv[2]]))"
)

_IN_PROCESS = (
    "import sys, time\n"
    "sys.path[:0] = sys.argv[2:]  # the checkout, without site (--no-site)\n"
    "t0 = time.perf_counter()\n"
    "from etmem_core.cli import main\n"
    "t1 = time.perf_counter()\n"
    "main(['project', 'show', '-s', sys.argv[1]])\n"
    "t2 = time.perf_counter()\n"
    "print((t1 - t0) * 1000, (t2 - t1) * 1000, file=sys.stderr)\n"
)


def in_process_samples(sock: str, runs: int, no_site: bool = False) -> list[list[float]]:
    """``[import ms, command ms]`` of ``runs`` runs, timed inside the process."""
    samples = []
    argv = [sys.executable, "-S", "-c", _IN_PROCESS, sock, str(ROOT)] if no_site else []
    for _ in range(runs):
        res = subprocess.run(
            argv or [sys.executable, "-c", _IN_PROCESS, sock],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
            env=ENV,
        )
        samples.append([float(x) for x in res.stderr.split()[-2:]])
    return samples


def in_process(sock: str, runs: int, no_site: bool = False) -> None:
    """Where the client's own time goes: importing it, and the command (the noun's module, the
    request and the reply), timed inside the process."""
    samples = in_process_samples(sock, runs, no_site)
    imp = statistics.median(a for a, _ in samples)
    cmd = statistics.median(b for _, b in samples)
    print(f"in the process: import etmem_core.cli {imp:5.1f} ms, the command {cmd:5.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--importtime", action="store_true", help="print the slowest imports")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run with PYTHONDONTWRITEBYTECODE=1: every run compiles our modules from source",
    )
    parser.add_argument(
        "--no-site",
        action="store_true",
        help="run the interpreter with -S (no .pth files, no editable finder) and the client "
        "from this checkout",
    )
    args = parser.parse_args()
    python = [sys.executable, "-S"] if args.no_site else [sys.executable]
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        if args.no_bytecode_cache:
            ENV["PYTHONDONTWRITEBYTECODE"] = "1"
            print("bytecode: none cached, every run compiles our modules")
        else:
            ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            print("bytecode: cached in the temporary directory, as an installed etmem has it")
        daemon = EtmemdProc(Path(tmp))
        try:
            if args.no_site:
                script = ["-c", _SHOW_NO_SITE, str(ROOT), daemon.sock]
                show = [*python, *script]
            else:
                script = show = [str(bindir / "etmem"), "project", "show", "-s", daemon.sock]
            timed(show)  # warm the page cache (and fill the bytecode cache)
            # its -c goes through the cache too: fill it
            in_process_samples(daemon.sock, 1, args.no_site)
            flags = " -S" if args.no_site else ""
            report(f"python{flags} -c pass", [*python, "-c", "pass"], args.runs)
            report(f"etmem project show{flags}", show, args.runs)
            in_process(daemon.sock, args.runs, args.no_site)
            if args.importtime:
                res = subprocess.run(
                    [*python, "-X", "importtime", *script],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=ENV,
                )
                rows = [
                    line
                    for line in res.stderr.splitlines()
                    if line.startswith("import time:") and line.split("|")[1].strip().isdigit()
                ]
                rows.sort(key=lambda line: int(line.split("|")[1]))
                print("slowest imports (cumulative us):")
                print("\n".join(rows[-15:]))
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
