"""``etmem scan PID``: how much of a running process is cold — a per-VMA summary for people.

A priming pass starts the clock (trackers report accesses since their previous pass, and for
the first pass that means "ever"), then ``loop`` passes follow, each after ``sleep`` seconds.
A page is hot when it was accessed in at least ``cold_threshold`` of those passes, cold
otherwise — the slide engine's ``T``.  ``etmem scan --decode`` (captured idle_pages streams)
lives in :mod:`etmem_core.cli.scan`, which dispatches here for a live pid.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TextIO

import numpy as np
from etmem_sdk import scan
from etmem_sdk.errors import EtmemError
from etmem_sdk.scan import PageRefs, ScanError, accumulate, read_vmas

__all__ = ["VmaSummary", "format_summary", "live_scan", "main", "scan_process", "summarize"]

EXIT_FAIL = 1


@dataclass(frozen=True)
class VmaSummary:
    """One VMA's bytes: ``size`` (mapped), ``resident`` (seen by the tracker), ``hot``, ``cold``
    (resident split by the threshold)."""

    start: int
    end: int
    perms: str
    path: str
    size: int
    resident: int
    hot: int
    cold: int


def summarize(vmas, refs: PageRefs, cold_threshold: int, page_size: int) -> list[VmaSummary]:
    """Split ``refs`` (address-sorted) over ``vmas`` into per-VMA byte counts."""
    sizes = scan.page_bytes(refs.type) if len(refs) else np.zeros(0)
    hot_bytes = np.where(refs.count >= cold_threshold, sizes, 0).astype(np.uint64)
    csum_all = np.concatenate(([0], np.cumsum(sizes, dtype=np.uint64)))
    csum_hot = np.concatenate(([0], np.cumsum(hot_bytes, dtype=np.uint64)))
    out = []
    addr = refs.addr  # built from the page runs on each access: once here
    for v in vmas:
        lo = int(np.searchsorted(addr, np.uint64(v.start), side="left"))
        hi = int(np.searchsorted(addr, np.uint64(v.end), side="left"))
        resident = int(csum_all[hi] - csum_all[lo])
        hot = int(csum_hot[hi] - csum_hot[lo])
        out.append(
            VmaSummary(
                v.start, v.end, v.perms, v.path, v.end - v.start, resident, hot, resident - hot
            )  # fmt: skip
        )
    return out


def scan_process(
    pid: int,
    *,
    loop: int = 1,
    sleep: float = 1.0,
    tracker: str = "auto",
    cold_threshold: int = 1,
    vmflags: list[str] | None = None,
    anon_only: bool = True,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
) -> tuple[str, list[VmaSummary]]:
    """Scan ``pid`` (see module docs); returns the tracker used and the per-VMA summary.

    Raises ``TargetGone``, ``TrackerUnavailable``, ``NothingUsable`` (all ``EtmemError``).
    """
    # The one choice every engine uses: etmem scan swaps nothing itself, but it reports what
    # slide would swap, so it asks with slide's purpose (the probe pages a sample out).
    caps = scan.capabilities(proc_root, sys_root)
    tracker = scan.choose_tracker(None if tracker == "auto" else tracker, caps=caps)
    vmas = read_vmas(pid, vmflags, anon_only, proc_root)
    passes = []
    with scan.open_tracker(tracker, pid, proc_root=proc_root, sys_root=sys_root) as t:
        t.scan_pass(vmas)  # priming: clears what was accessed before the scan
        for _ in range(loop):
            time.sleep(sleep)
            passes.append(t.scan_pass(vmas))
    refs = accumulate(passes)
    return tracker, summarize(vmas, refs, cold_threshold, scan.PAGE_SIZE)


def _human(n: int) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def format_summary(
    pid: int, tracker: str, rows: list[VmaSummary], loop: int, sleep: float, threshold: int
) -> str:
    """The table ``etmem scan PID`` prints."""
    lines = [
        f"pid {pid}: tracker {tracker}, {loop} pass(es) {sleep:g} s apart; "
        f"cold = accessed in fewer than {threshold} of {loop} passes",
        f"{'start':>12}-{'end':<12} {'perms':5} {'size':>8} {'resident':>8} {'hot':>8} "
        f"{'cold':>8}  path",
    ]
    for r in rows:
        lines.append(
            f"{r.start:>12x}-{r.end:<12x} {r.perms:5} {_human(r.size):>8} "
            f"{_human(r.resident):>8} {_human(r.hot):>8} {_human(r.cold):>8}  {r.path}".rstrip()
        )
    tot = [sum(getattr(r, k) for r in rows) for k in ("size", "resident", "hot", "cold")]
    lines.append(
        f"{'total':<25} {'':5} {_human(tot[0]):>8} {_human(tot[1]):>8} {_human(tot[2]):>8} "
        f"{_human(tot[3]):>8}"
    )
    note = tracker_note(tracker)
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def tracker_note(tracker: str) -> str:
    """What a reader of the summary must know about ``tracker`` (empty when nothing)."""
    if tracker == "refs":
        return scan.MAPPING_ONLY
    if tracker == "probe":
        return (
            "the probe tracker pages out a sample (at most "
            f"{scan.PROBE_RATE_MIB} MiB/s) and watches which pages come back: the pages it "
            "judged cold are now in swap, and pages not yet probed count as hot"
        )
    return ""


def main(
    pid: int,
    *,
    loop: int = 1,
    sleep: float = 1.0,
    tracker: str = "auto",
    cold_threshold: int = 1,
    as_json: bool = False,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the live scan and print it; returns the exit status (0, or 1 with a message)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if loop < 1 or sleep < 0 or cold_threshold < 0:
        print("etmem: scan: --loop must be >= 1, --sleep and the threshold >= 0", file=err)
        return EXIT_FAIL
    try:
        used, rows = scan_process(
            pid,
            loop=loop,
            sleep=sleep,
            tracker=tracker,
            cold_threshold=cold_threshold,
            proc_root=proc_root,
            sys_root=sys_root,
        )
    except (EtmemError, ScanError, ValueError) as e:  # gone, unavailable, bad name ...
        print(f"etmem: scan: {e}", file=err)
        return EXIT_FAIL
    if as_json:
        doc = {
            "pid": pid,
            "tracker": used,
            "granularity": scan.GRANULARITY.get(used, "unknown"),
            "note": tracker_note(used),
            "loop": loop,
            "sleep": sleep,
            "cold_threshold": cold_threshold,
            "vmas": [asdict(r) for r in rows],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(format_summary(pid, used, rows, loop, sleep, cold_threshold))
    return 0


def live_scan(
    pid: int,
    *,
    loop: int = 1,
    sleep: float = 1.0,
    tracker: str | None = None,
    threshold: int | None = None,
    as_json: bool = False,
) -> int:
    """What ``etmem scan PID`` runs (called by :mod:`.scan`): print the summary, return the
    exit status.  ``tracker=None`` picks the best one here; ``threshold=None`` means 1 (a page
    is cold when no pass saw it accessed). Without ``--tracker``, ``[scan] tracker`` of
    etmemd.toml is the default, as in the daemon."""
    if tracker is None:
        from etmem_core import daemon_settings

        try:
            settings = daemon_settings.load()
        except EtmemError as e:  # a broken etmemd.toml: say so, as etmemd would
            print(f"etmem: scan: {e}", file=sys.stderr)
            return EXIT_FAIL
        if settings.tracker is not None:
            tracker = settings.tracker
    return main(
        pid,
        loop=loop,
        sleep=sleep,
        tracker=tracker or "auto",
        cold_threshold=1 if threshold is None else threshold,
        as_json=as_json,
    )
