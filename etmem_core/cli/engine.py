"""``etmem engine CMD``: run an engine's own command (e.g. cslide's ``showtaskpages``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from ..protocol import Cmd, Request
from .common import EXIT_EPERM, UsageError, exit_with, require, send, usage_failure
from .gnu_getopt import Getopt, GetoptError, LongOpt

NAME = "engine"

HELP = """
Usage:
    etmem engine eng_cmd [options]
    etmem engine help

Options:
    -n|--proj_name <proj_name> project the engine belongs to
    -s|--socket <socket_name> socket name to connect
    -e|--engine <engine_name> engine that runs the command
    -t|--task_name <task_name> task the command is about (optional)

Notes:
    1. Project, socket and engine names and the command must be given.
    2. The project must be started.
    3. Each engine defines its own commands; cslide has showtaskpages and showhostpages.
"""

_LONGOPTS = (
    LongOpt("proj_name", True, "n"),
    LongOpt("socket", True, "s"),
    LongOpt("engine", True, "e"),
    LongOpt("task_name", True, "t"),
)


def engine(
    eng_cmd: Annotated[str, typer.Argument(help="The engine's command, e.g. showtaskpages.")],
    socket: Annotated[
        str, typer.Option("-s", "--socket", help="The socket name etmemd was started with (-s).")
    ],
    proj_name: Annotated[
        str, typer.Option("-n", "--proj_name", help="The (started) project of the engine.")
    ],
    engine_name: Annotated[
        str, typer.Option("-e", "--engine", help="The engine's name in that project.")
    ],
    task_name: Annotated[
        str | None,
        typer.Option("-t", "--task_name", help="A task of that engine the command is about."),
    ] = None,
) -> None:
    """Run ENG_CMD, a command of the engine ENGINE in project PROJ_NAME; prints its output."""
    exit_with(run(eng_cmd, proj_name, engine_name, task_name, socket))


def register(parent: typer.Typer) -> None:
    """Add ``engine`` to the ``etmem`` app (a command, not a group: its first word is free)."""
    parent.command(NAME)(engine)


def run(
    eng_cmd: str | None,
    proj_name: str | None,
    eng_name: str | None,
    task_name: str | None,
    socket: str | None,
) -> int:
    """Check the arguments like the original, then send the request; return the exit status."""
    try:
        sock = require(socket, "socket name", "-s SOCKET", EXIT_EPERM)
        proj = require(proj_name, "project name", "-n PROJECT", EXIT_EPERM)
        cmd = require(eng_cmd, "engine command", "etmem engine CMD ...", EXIT_EPERM)
        eng = require(eng_name, "engine name", "-e ENGINE", EXIT_EPERM)
    except UsageError as err:
        return usage_failure(NAME, err)
    request = Request(
        cmd=Cmd.ENG_CMD, proj_name=proj, eng_name=eng, eng_cmd=cmd, task_name=task_name
    )
    return send(NAME, sock, request)


def compat_main(args: Sequence[str]) -> int:
    """``etmem engine CMD [options]``: CMD is taken verbatim (even ``-s``), as the original does."""
    values: dict[str, str] = {}
    scan = Getopt(args[1:], "n:s:e:t:", _LONGOPTS)
    try:
        for opt, value in scan:
            values[opt] = value or ""
    except GetoptError as exc:
        return usage_failure(NAME, UsageError(f"engine: {exc}", EXIT_EPERM))
    if scan.count and len(args) - 1 > 2 * scan.count:
        extra = " ".join(scan.positionals) or " ".join(args[1:])
        return usage_failure(NAME, UsageError(f"unexpected arguments: {extra}", EXIT_EPERM))
    return run(args[0], values.get("n"), values.get("e"), values.get("t"), values.get("s"))
