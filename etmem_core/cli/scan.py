"""``etmem scan``: how much of a process is cold, and decoding captured idle_pages streams.

``etmem scan --decode PASS1 [PASS2 ...] [--cold T]`` decodes streams read from openEuler's
``/proc/PID/idle_pages`` (each file one pass over the same memory), adds up the passes and prints
the page list (``0x<addr> <count> <type>``, by address) or, with ``--cold T``, exactly the
``swap_pages`` text the slide engine would write (``0x%lx`` lines, highest address first).

``etmem scan PID`` (live scan of a running process) is implemented in :mod:`.scan_live`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import hint

HELP = (
    "Scan a process's memory (etmem scan PID), or decode captured idle_pages streams "
    "(etmem scan --decode PASS1 [PASS2 ...]) into the page list or the cold list."
)

EXIT_DATA = 1  # the input was read but rejected (a stream the original refuses, a bad file)
EXIT_USAGE = 2  # click's status for usage errors


def _write_out(chunks) -> None:
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def decode_command(files: list[Path], threshold: int | None, page_size: int) -> int:
    """Decode ``files`` (one pass each) and print the page list or the cold list."""
    from etmem_sdk.scan import ScanError, cold_text_chunks, refs_text_chunks

    try:
        streams = [f.read_bytes() for f in files]
    except OSError as e:
        hint(f"scan: {e.filename}: {e.strerror}")
        return EXIT_DATA
    try:
        if threshold is not None:
            _write_out(cold_text_chunks(streams, threshold, page_size))
        else:
            _write_out(refs_text_chunks(streams, page_size))
    except ScanError as e:
        which = getattr(e, "pass_index", None)
        where = f"{files[which]}: " if which is not None else ""
        hint(f"scan: {where}{e}")
        return EXIT_DATA
    except BrokenPipeError:  # `etmem scan ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def scan(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PID | PASS...",
            help="The process to scan, or with --decode the captured stream files, one per pass.",
            show_default=False,
        ),
    ] = None,
    decode: Annotated[
        bool,
        typer.Option(
            "--decode",
            help="Decode captured /proc/PID/idle_pages streams instead of scanning a process.",
        ),
    ] = False,
    cold: Annotated[
        int | None,
        typer.Option(
            "--cold",
            metavar="T",
            min=0,
            help="Print only the cold pages (accumulated count below T) as the slide engine "
            "writes them to swap_pages: one 0x<hex> line each, highest address first.",
        ),
    ] = None,
    loop: Annotated[
        int, typer.Option("--loop", min=1, max=120, help="Live scan: how many passes to add up.")
    ] = 1,
    sleep: Annotated[
        int,
        typer.Option(
            "--sleep",
            min=0,
            help="Live scan: seconds to wait after each pass; accesses are counted over that "
            "time, so 0 measures almost nothing.",
        ),
    ] = 1,
    tracker: Annotated[
        str | None,
        typer.Option(
            "--tracker",
            help="Live scan: idle_pages, page_idle, damon, probe or refs (default: the most "
            "precise one here). probe pages out a sample of the process to watch which pages "
            "come back (they are read back from swap when touched).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Live scan: print the summary as JSON.")
    ] = False,
    page_size: Annotated[
        int | None,
        typer.Option(
            "--page-size",
            help="Decode: base page size of the machine the streams came from (4096, 16384, "
            "65536; default: this machine's); it fixes the PMD and PUD sizes.",
            show_default=False,
        ),
    ] = None,
    heatmap: Annotated[
        Path | None,
        typer.Option(
            "--heatmap",
            metavar="FILE.png",
            help="Live scan: write an access heatmap (time across, address down) as a PNG.",
        ),
    ] = None,
    wss: Annotated[
        bool,
        typer.Option("--wss", help="Live scan: print the working-set size of each pass."),
    ] = False,
) -> None:
    """Scan a process, or decode captured idle_pages streams."""
    targets = targets or []
    if decode:
        if not targets:
            hint("scan --decode: give at least one stream file (one per pass)")
            raise typer.Exit(EXIT_USAGE)
        if page_size is None:  # the SDK's, read here: the facade loads numpy, --help need not
            from etmem_sdk import scan as sdk_scan

            page_size = sdk_scan.PAGE_SIZE
        if page_size < 4096 or page_size & (page_size - 1):
            hint(f"scan: --page-size {page_size} is not a power of two of at least 4096")
            raise typer.Exit(EXIT_USAGE)
        raise typer.Exit(decode_command([Path(t) for t in targets], cold, page_size))
    if len(targets) != 1 or not targets[0].isdigit():
        hint("scan: give one PID, or --decode with stream files")
        raise typer.Exit(EXIT_USAGE)
    if heatmap is not None or wss:
        from .heatmap import main as pictures

        raise typer.Exit(pictures(int(targets[0]), loop=loop, sleep=sleep, tracker=tracker,
                                  heatmap=heatmap, wss=wss))  # fmt: skip
    raise typer.Exit(_live_scan(int(targets[0]), loop=loop, sleep=sleep, tracker=tracker,
                                threshold=cold, as_json=as_json))  # fmt: skip


def _live_scan(
    pid: int, *, loop: int, sleep: int, tracker: str | None, threshold: int | None, as_json: bool
) -> int:
    """``etmem scan PID``: delegated to :mod:`.scan_live` (``live_scan`` with these keywords)."""
    try:
        from .scan_live import live_scan
    except ImportError:
        hint("scan: scanning a live process is not available in this build")
        return EXIT_DATA
    return live_scan(
        pid, loop=loop, sleep=sleep, tracker=tracker, threshold=threshold, as_json=as_json
    )


def register(parent: typer.Typer) -> None:
    """Add ``etmem scan`` to the root app (one command, not a group)."""
    parent.command(name="scan", help=HELP)(scan)
