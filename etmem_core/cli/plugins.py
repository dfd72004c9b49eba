"""``etmem plugins [--check] [--json]``: every engine installed here, and whether it loads.

Engines are found exactly as etmemd finds them, through the ``etmem.engines`` entry points, so
this answers "will ``[engine] name=X`` work?" without a daemon: the name, the distribution that
registered it and its version, the ops (C ``engine_ops`` fields) it implements, and -- with
``--check``, which imports each one -- whether it loads and if not, why. The allow and block
lists of the daemon settings (``/etc/etmem/etmemd.toml``, or ``--config``) are applied too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Annotated

import typer
from etmem_sdk import ENGINE_OPS, ConfigError

from .. import daemon_settings
from ..registry import EngineInfo

NAME = "plugins"
#: Exit status when ``--check`` found an engine that does not load (or may not be loaded).
EXIT_BROKEN = 1
#: Exit status when the daemon settings file cannot be used.
EXIT_SETTINGS = 2


def _loads(info: EngineInfo) -> str:
    return {True: "yes", False: "no", None: "?"}[info.loads]


def format_text(rows: list[EngineInfo], checked: bool) -> str:
    """A table: name, distribution, version, loads, ops ("all 9" when every op has a hookimpl);
    each failure on its own line under its engine."""
    if not rows:
        return "no engines installed (nothing in the etmem.engines entry-point group)\n"
    table = [("name", "distribution", "version", "loads", "ops")]
    for r in rows:
        if len(r.ops) == len(ENGINE_OPS):
            ops = f"all {len(ENGINE_OPS)}"
        elif r.ops:
            ops = ",".join(r.ops)
        else:
            ops = "-" if checked or r.loads is False else "(--check to load and list)"
        table.append((r.name, r.distribution or "?", r.version or "?", _loads(r), ops))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for n, row in enumerate(table):
        cells = [cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
        info = rows[n - 1] if n else None
        if info is not None and info.error:
            lines.append(f"  error: {info.error}")
    return "\n".join(lines) + "\n"


def plugins(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Import every engine and validate it against the hookspecs, reporting the ops "
            "it implements or why it fails; the exit status is 1 if any engine does not load.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON list of {name, distribution, version, ops, loads, error}.",
        ),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="PATH",
            help="Apply the allow/block lists of these daemon settings instead of "
            f"{daemon_settings.DEFAULT_PATH} (read when it exists).",
        ),
    ] = None,
) -> None:
    """List every engine installed for etmemd: name, distribution, version, implemented ops, and
    (with --check) whether it loads.

    Nothing talks to a running etmemd: this looks at the Python environment etmem is installed in.
    """
    try:
        settings = daemon_settings.load(config)
    except ConfigError as exc:
        typer.echo(f"etmem: {exc}", err=True)
        raise typer.Exit(EXIT_SETTINGS) from None
    # The registry logs each failure for the daemon's log; here the table says it already.
    logging.getLogger("etmem_core.registry").addHandler(logging.NullHandler())
    logging.getLogger("etmem_core.registry").propagate = False
    rows = settings.registry().list_engines(check=check)
    if as_json:
        typer.echo(json.dumps([{**asdict(r), "ops": list(r.ops)} for r in rows], indent=2))
    else:
        typer.echo(format_text(rows, check), nl=False)
    if check and any(r.loads is False for r in rows):
        raise typer.Exit(EXIT_BROKEN)


def register(parent: typer.Typer) -> None:
    """Add ``plugins`` as a top-level command of the ``etmem`` app."""
    parent.command(NAME)(plugins)
