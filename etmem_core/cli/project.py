"""``etmem project show|start|stop``: list projects, start or stop one."""

from collections.abc import Sequence

from ..gnu_getopt import Getopt, GetoptError, LongOpt
from ..protocol import SHOW_JSON, Cmd, Request
from .common import (
    EXIT_E2BIG,
    EXIT_EINVAL,
    EXIT_EPERM,
    UsageError,
    exit_with,
    require,
    send,
    send_for_json,
    usage_failure,
)

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:  # typer only serves --help: imported when a typer app is built
    import typer

NAME = "project"

HELP = """
Usage:
    etmem project start [options]
    etmem project stop [options]
    etmem project show [options]
    etmem project help

Options:
    -n|--name <proj_name>     Project to start, stop or show
    -s|--socket <socket_name> Socket name to connect
    --json                    (show only) print the projects as JSON

Notes:
    1. Socket name must always be given.
    2. Project name must be given to start or stop; show without it lists every project.
"""

COMMANDS = {"show": Cmd.PROJ_SHOW, "start": Cmd.PROJ_START, "stop": Cmd.PROJ_STOP}
_LONGOPTS = (LongOpt("name", True, "n"), LongOpt("socket", True, "s"))
_SHOW_LONGOPTS = (*_LONGOPTS, LongOpt("json", False, "j"))


def register(parent: "typer.Typer") -> None:
    """Add ``project`` to the ``etmem`` app; typer is imported here, only for --help and
    typer's parsing, so that the getopt path of a command never loads it."""
    from typing import Annotated

    import typer

    app = typer.Typer(
        name=NAME,
        help="Show the projects etmemd holds, or start and stop one.",
        no_args_is_help=True,
        add_completion=False,
    )

    SocketOpt = Annotated[
        str, typer.Option("-s", "--socket", help="The socket name etmemd was started with (-s).")
    ]

    @app.command("show")
    def show(
        socket: SocketOpt,
        name: Annotated[
            str | None,
            typer.Option("-n", "--name", help="Show only this project (default: every project)."),
        ] = None,
        as_json: Annotated[
            bool,
            typer.Option(
                "--json",
                help="Print a JSON document (projects, engines, tasks, their settings and "
                "statistics) instead of the table.",
            ),
        ] = False,
    ) -> None:
        """Print the projects with their tasks, one row per task, newest first."""
        exit_with(run(Cmd.PROJ_SHOW, name, socket, as_json=as_json))

    @app.command("start")
    def start(
        socket: SocketOpt,
        name: Annotated[str, typer.Option("-n", "--name", help="The project to start.")],
    ) -> None:
        """Start every task of the project."""
        exit_with(run(Cmd.PROJ_START, name, socket))

    @app.command("stop")
    def stop(
        socket: SocketOpt,
        name: Annotated[str, typer.Option("-n", "--name", help="The project to stop.")],
    ) -> None:
        """Stop every task of the project (its objects stay; start it again later)."""
        exit_with(run(Cmd.PROJ_STOP, name, socket))

    parent.add_typer(app)


def run(cmd: Cmd, name: str | None, socket: str | None, *, as_json: bool = False) -> int:
    """Check the arguments like the original, then send the request; return the exit status."""
    try:
        sock = require(socket, "socket name", "-s SOCKET", EXIT_EINVAL)
        if cmd is not Cmd.PROJ_SHOW:
            require(name, "project name", "-n NAME", EXIT_EINVAL)
    except UsageError as err:
        return usage_failure(NAME, err)
    if as_json:
        request = Request(cmd=cmd, proj_name=name or None, eng_cmd=SHOW_JSON)
        return send_for_json(NAME, sock, request)
    return send(NAME, sock, Request(cmd=cmd, proj_name=name or None))


def compat_main(args: Sequence[str]) -> int:
    """``etmem project WORD [options]`` with the original's getopt rules and exit statuses."""
    word = args[0]
    if word not in COMMANDS:
        return usage_failure(
            NAME,
            UsageError(
                f"project command {word!r} is not supported (show, start, stop)", EXIT_EPERM
            ),
        )
    cmd = COMMANDS[word]
    values: dict[str, str] = {}
    scan = Getopt(args[1:], "n:s:", _SHOW_LONGOPTS if cmd is Cmd.PROJ_SHOW else _LONGOPTS)
    try:
        for opt, value in scan:
            values[opt] = value or ""
    except GetoptError as exc:
        return usage_failure(NAME, UsageError(f"project {word}: {exc}", EXIT_EINVAL))
    if scan.count and len(args) - 1 > 2 * scan.count:
        extra = " ".join(scan.positionals) or " ".join(args[1:])
        return usage_failure(NAME, UsageError(f"unexpected arguments: {extra}", EXIT_E2BIG))
    return run(cmd, values.get("n"), values.get("s"), as_json="j" in values)
