"""``etmem engine CMD``: run an engine's own command (e.g. cslide's ``showtaskpages``)."""

import json
from collections.abc import Sequence

from ..protocol import SHOW_JSON, Cmd, Request
from .common import (
    EXIT_EPERM,
    UsageError,
    hint,
    require,
    send,
    usage_failure,
    write_out,
)
from .options import (
    Option,
    getopt_table,
    help_text,
    scan_options,
    socket_option,
    typer_command,
)

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:  # typer only serves --help: imported when a typer app is built
    import typer

NAME = "engine"

OPTIONS = (
    Option(
        "n", "proj_name", "proj_name", "project the engine belongs to",
        "The (started) project of the engine.",
    ),
    socket_option("socket name to connect"),
    Option(
        "e", "engine", "engine_name", "engine that runs the command",
        "The engine's name in that project.",
    ),
    Option(
        "t", "task_name", "task_name", "task the command is about (optional)",
        "A task of that engine the command is about.",
    ),
    Option(
        "j", "json", None,
        "(showstats) print the engine's and its tasks' statistics as JSON",
        "With showstats: print the engine's statistics and its tasks' (and their processes') as "
        "JSON, from etmemd's project data, instead of the engine's text.",
        short=False,
    ),
)  # fmt: skip

HELP = help_text(
    ("etmem engine eng_cmd [options]", "etmem engine help"),
    OPTIONS,
    25,
    "    1. Project, socket and engine names and the command must be given.\n"
    "    2. The project must be started.\n"
    "    3. Each engine defines its own commands; cslide has showtaskpages and showhostpages.\n",
)

_GETOPT_TABLE = getopt_table(OPTIONS)


def register(parent: "typer.Typer") -> None:
    """Add ``engine`` to the ``etmem`` app (a command, not a group: its first word is free);
    typer is imported here, only for --help, so that the getopt path never loads it."""
    command = typer_command(
        OPTIONS,
        run_values,
        "Run ENG_CMD, a command of the engine ENGINE in project PROJ_NAME; prints its output.",
        required=("n", "s", "e"),
        argument=("eng_cmd", "The engine's command, e.g. showtaskpages."),
    )
    parent.command(NAME)(command)


def run_values(values: dict[str, str], eng_cmd: str) -> int:
    """:func:`run` with the options as getopt reports them (``{letter: value}``)."""
    return run(
        eng_cmd,
        values.get("n"),
        values.get("e"),
        values.get("t"),
        values.get("s"),
        as_json="j" in values,
    )


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
    try:
        values = scan_options(
            args[1:], _GETOPT_TABLE, "engine", error_status=EXIT_EPERM, extra_status=EXIT_EPERM
        )
    except UsageError as err:
        return usage_failure(NAME, err)
    return run_values(values, args[0])
