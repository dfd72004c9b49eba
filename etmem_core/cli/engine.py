"""``etmem engine CMD``: run an engine's own command (e.g. cslide's ``showtaskpages``)."""

import json
from collections.abc import Sequence

from ..gnu_getopt import Getopt, GetoptError, LongOpt
from ..protocol import SHOW_JSON, Cmd, Request
from .common import (
    EXIT_EPERM,
    UsageError,
    exit_with,
    hint,
    require,
    send,
    usage_failure,
    write_out,
)

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:  # typer only serves --help: imported when a typer app is built
    import typer

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
    --json                    (showstats) print the engine's and its tasks' statistics as JSON

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
    LongOpt("json", False, "j"),
)


def register(parent: "typer.Typer") -> None:
    """Add ``engine`` to the ``etmem`` app (a command, not a group: its first word is free);
    typer is imported here, only for --help and typer's parsing, so that the getopt path never
    loads it."""
    from typing import Annotated

    import typer

    def engine(
        eng_cmd: Annotated[str, typer.Argument(help="The engine's command, e.g. showtaskpages.")],
        socket: Annotated[
            str,
            typer.Option("-s", "--socket", help="The socket name etmemd was started with (-s)."),
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
        as_json: Annotated[
            bool,
            typer.Option(
                "--json",
                help="With showstats: print the engine's statistics and its tasks' (and their "
                "processes') as JSON, from etmemd's project data, instead of the engine's text.",
            ),
        ] = False,
    ) -> None:
        """Run ENG_CMD, a command of the engine ENGINE in project PROJ_NAME; prints its output."""
        exit_with(run(eng_cmd, proj_name, engine_name, task_name, socket, as_json=as_json))

    parent.command(NAME)(engine)


def run(
    eng_cmd: str | None,
    proj_name: str | None,
    eng_name: str | None,
    task_name: str | None,
    socket: str | None,
    *,
    as_json: bool = False,
) -> int:
    """Check the arguments like the original, then send the request; return the exit status."""
    try:
        sock = require(socket, "socket name", "-s SOCKET", EXIT_EPERM)
        proj = require(proj_name, "project name", "-n PROJECT", EXIT_EPERM)
        cmd = require(eng_cmd, "engine command", "etmem engine CMD ...", EXIT_EPERM)
        eng = require(eng_name, "engine name", "-e ENGINE", EXIT_EPERM)
    except UsageError as err:
        return usage_failure(NAME, err)
    if as_json:
        if cmd != "showstats":
            return usage_failure(NAME, UsageError("--json goes with showstats only", EXIT_EPERM))
        return _stats_json(sock, proj, eng, task_name)
    request = Request(
        cmd=Cmd.ENG_CMD, proj_name=proj, eng_name=eng, eng_cmd=cmd, task_name=task_name
    )
    return send(NAME, sock, request)


def _stats_json(sock: str, proj: str, eng: str, task: str | None) -> int:
    """``showstats --json``: the engine's part of ``project show --json``."""
    buffer = bytearray()
    request = Request(cmd=Cmd.PROJ_SHOW, proj_name=proj, eng_cmd=SHOW_JSON)
    status = send(NAME, sock, request, out=buffer.extend)
    if status != 0:
        write_out(bytes(buffer))
        return status
    try:
        projects = json.loads(buffer.decode())
    except (UnicodeDecodeError, ValueError):
        hint("etmemd did not answer with JSON (an etmemd without --json support?)")
        return 1
    found = [e for p in projects if p.get("name") == proj for e in p.get("engines", [])]
    found = [e for e in found if e.get("name") == eng]
    if not found:
        hint(f"engine {eng} does not exist in project {proj}")
        return 1
    doc = found[0]
    tasks = [t for t in doc.get("tasks", []) if task is None or t.get("name") == task]
    if task is not None and not tasks:
        hint(f"task {task} does not exist in engine {eng} of project {proj}")
        return 1
    out = {"project": proj, "engine": eng, "stats": doc.get("stats", {}), "tasks": tasks}
    write_out((json.dumps(out, indent=2) + "\n").encode())
    return 0


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
    return run(
        args[0],
        values.get("n"),
        values.get("e"),
        values.get("t"),
        values.get("s"),
        as_json="j" in values,
    )
