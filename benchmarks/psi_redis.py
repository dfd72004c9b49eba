#!/usr/bin/env python3
"""The psi engine on redis in a memory cgroup: how much it reclaims, and at what pressure.

Only inside the QEMU test bed (cgroup v2 with ``memory.reclaim``; run through
``tests/vm/run``). redis-server is started on 127.0.0.1, moved into a fresh cgroup
(``/sys/fs/cgroup/etmem-psi-bench``) before it is filled with ``--keys`` values of ``--value``
random bytes (v2 charges memory where it is allocated), and a reader keeps reading the hot
tenth of the keys (benchmarks/realapps.py's reader). After ``--baseline`` s, etmemd runs a psi
project on the cgroup (``interval=1``, ``pressure=--pressure``, ``reclaim_rate=--rate``) for
``--duration`` s. Every second it records the cgroup's ``memory.current`` and its PSI ``some``
averages.

Reports the share of the cgroup's memory reclaimed (1 - last/first ``memory.current``), the
highest ``some avg10`` seen while the engine ran, whether it stayed under the threshold, and
the hot reads' throughput against the baseline. Swap is zram (the guest has no disk); every
process is ended and the cgroup removed at exit, the server before the swap goes off.

    tests/vm/run --mem 4G --timeout 900 .venv/bin/python benchmarks/psi_redis.py --json

Target (issue 16): >= 30 % of the cgroup's memory reclaimed with its ``some`` pressure kept
under the configured threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realapps  # noqa: E402  (its server, filler, reader and zram swap)
from etmem_sdk.cgroup import parse_psi  # noqa: E402
from etmemd_proc import EtmemdProc  # noqa: E402  (realapps put tests/ on the path)

CGROUP = Path("/sys/fs/cgroup")
GROUP = CGROUP / "etmem-psi-bench"
TARGET_RECLAIMED = 0.30


def sample(t0: float) -> dict:
    some = parse_psi((GROUP / "memory.pressure").read_text())["some"]
    return {
        "t": round(time.monotonic() - t0, 2),
        "current": int((GROUP / "memory.current").read_text()),
        "avg10": some.avg10,
        "avg60": some.avg60,
    }


def psi_project(args: argparse.Namespace) -> str:
    return (
        "[project]\nname=bench\nscan_type=psi\ninterval=1\n"
        "[engine]\nname=psi\nproject=bench\n"
        "[task]\nproject=bench\nengine=psi\nname=redis\ntype=name\nvalue=redis-server\n"
        f"cg_dir={GROUP.name}\npressure={args.pressure}\nreclaim_rate={args.rate}\n"
        f"reclaim_rate_max={max(args.rate, 0.5)}\n"
    )


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    (CGROUP / "cgroup.subtree_control").write_text("+memory")
    GROUP.mkdir(exist_ok=True)
    ns = argparse.Namespace(app="redis", keys=args.keys, hot_fraction=0.1, dist="uniform",
                            zipf_s=1.0, seed=1)  # fmt: skip
    run_for = args.baseline + args.duration + 120
    try:
        with (
            realapps.zram_swap(args.swap_mib),
            realapps.server("redis", args.keys, args.value, workdir) as (pid, port),
        ):
            (GROUP / "cgroup.procs").write_text(str(pid))
            realapps.fill("redis", port, args.keys, args.value, "shuffled", 1)
            reader = realapps.Reader(ns, port, workdir, run_for)
            try:
                t0 = time.monotonic()
                time.sleep(args.baseline)
                t_start = reader.now()
                before = sample(t0)
                daemon = EtmemdProc(workdir)
                try:
                    daemon.add("bench", psi_project(args))
                    daemon.etmem("project", "start", "-n", "bench")
                    series = []
                    end = time.monotonic() + args.duration
                    while time.monotonic() < end:
                        time.sleep(1)
                        series.append(sample(t0))
                    t_end = reader.now()
                    stats = daemon.etmem("engine", "showstats", "-n", "bench", "-e", "psi").stdout
                    daemon.etmem("project", "stop", "-n", "bench", check=False)
                finally:
                    daemon.stop()
                reads, _ = reader.finish()
            finally:
                reader.close()
    finally:
        for p in (GROUP / "cgroup.procs").read_text().split() if GROUP.exists() else ():
            os.kill(int(p), 9)
        time.sleep(0.5)
        if GROUP.exists():
            GROUP.rmdir()
    base = realapps.window(reads, 0.0, t_start)
    steady = realapps.window(reads, t_end - min(30.0, args.duration / 3), t_end)
    last = series[-1]["current"]
    peak = max(s["avg10"] for s in series)
    return {
        "keys": args.keys,
        "value": args.value,
        "pressure_threshold": args.pressure,
        "reclaim_rate": args.rate,
        "duration_s": args.duration,
        "cgroup_before_mib": round(before["current"] / realapps.MIB, 1),
        "cgroup_after_mib": round(last / realapps.MIB, 1),
        "reclaimed_share": round(1 - last / before["current"], 3),
        "max_some_avg10": peak,
        "pressure_kept_under": peak < args.pressure,
        "baseline_reads_per_s": base.get("reads_per_s"),
        "steady_reads_per_s": steady.get("reads_per_s"),
        "showstats": stats,
        "series": series,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000, help="values in redis")
    ap.add_argument("--value", type=int, default=1024, help="bytes per value")
    ap.add_argument("--pressure", type=float, default=1.0, help="psi task's pressure threshold")
    ap.add_argument("--rate", type=float, default=0.1, help="psi task's reclaim_rate")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds read before etmemd")
    ap.add_argument("--duration", type=float, default=90.0, help="seconds the engine runs")
    ap.add_argument("--swap-mib", type=int, default=1024, help="zram swap size")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if os.environ.get("ETMEM_IN_VM") != "1":
        print("psi_redis: run me inside the test bed (tests/vm/run)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="psi-bench.") as tmp:
        r = measure(args, Path(tmp))
    ok = r["reclaimed_share"] >= TARGET_RECLAIMED and r["pressure_kept_under"]
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(r["showstats"])
        for key in ("cgroup_before_mib", "cgroup_after_mib", "reclaimed_share",
                    "max_some_avg10", "pressure_threshold", "baseline_reads_per_s",
                    "steady_reads_per_s"):  # fmt: skip
            print(f"{key}: {r[key]}")
    print(f"target (>= {TARGET_RECLAIMED:.0%} reclaimed, some avg10 under the threshold): "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
