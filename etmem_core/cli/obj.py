"""``etmem obj add|del``: hand etmemd a configuration file to add or remove its objects."""

from collections.abc import Sequence

from ..gnu_getopt import Getopt, GetoptError, LongOpt
from ..protocol import Cmd, Request
from .common import (
    EXIT_E2BIG,
    EXIT_EINVAL,
    EXIT_EPERM,
    UsageError,
    absolute,
    exit_with,
    require,
    send,
    usage_failure,
)

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:  # typer only serves --help: imported when a typer app is built
    import typer

NAME = "obj"

#: ``etmem obj help`` prints the original's text unchanged.
HELP = """
Usage:
    etmem obj add [options]
    etmem obj del [options]
    etmem obj help [options]

Options:
    -f|--file <conf_file>       Add configuration file
    -s|--socket <socket_name>   Socket name to connect

Notes:
    1. Configuration file must be given.
    2. Socket name must be given.
"""

COMMANDS = {"add": Cmd.OBJ_ADD, "del": Cmd.OBJ_DEL}
_LONGOPTS = (LongOpt("file", True, "f"), LongOpt("socket", True, "s"))


def register(parent: "typer.Typer") -> None:
    """Add ``obj`` to the ``etmem`` app; typer is imported here, only for --help and
    typer's parsing, so that the getopt path of a command never loads it."""
    from typing import Annotated

    import typer

    app = typer.Typer(
        name=NAME,
        help="Add or delete the projects, engines and tasks described in a configuration file.",
        no_args_is_help=True,
        add_completion=False,
    )

    FileOpt = Annotated[
        str,
        typer.Option(
            "-f",
            "--file",
            help="The configuration file. A relative path is made absolute before it is sent, "
            "since etmemd opens the file itself. It must be owned by root with mode 0600 or 0400.",
        ),
    ]
    SocketOpt = Annotated[
        str, typer.Option("-s", "--socket", help="The socket name etmemd was started with (-s).")
    ]

    @app.command("add")
    def add(file: FileOpt, socket: SocketOpt) -> None:
        """Add every project, engine and task of FILE (all of them, or none if one fails)."""
        exit_with(run(Cmd.OBJ_ADD, file, socket))

    @app.command("del")
    def delete(file: FileOpt, socket: SocketOpt) -> None:
        """Delete the tasks, engines and projects FILE names (stopping what is running)."""
        exit_with(run(Cmd.OBJ_DEL, file, socket))

    parent.add_typer(app)


def run(cmd: Cmd, file: str | None, socket: str | None) -> int:
    """Check the arguments like the original, then send the request; return the exit status."""
    try:
        sock = require(socket, "socket name", "-s SOCKET", EXIT_EINVAL)
        path = require(file, "configuration file", "-f FILE", EXIT_EINVAL)
    except UsageError as err:
        return usage_failure(NAME, err)
    request = Request(cmd=cmd, file_name=absolute(path))
    return send(NAME, sock, request)


def compat_main(args: Sequence[str]) -> int:
    """``etmem obj WORD [options]`` with the original's getopt rules and exit statuses."""
    word = args[0]
    if word not in COMMANDS:
        return usage_failure(
            NAME, UsageError(f"obj command {word!r} is not supported (add, del)", EXIT_EPERM)
        )
    values: dict[str, str] = {}
    scan = Getopt(args[1:], "f:s:", _LONGOPTS)
    try:
        for opt, value in scan:
            values[opt] = value or ""
    except GetoptError as exc:
        return usage_failure(NAME, UsageError(f"obj {word}: {exc}", EXIT_EINVAL))
    # the original's rule: with options given, every other word is one too many
    if scan.count and len(args) - 1 > 2 * scan.count:
        extra = " ".join(scan.positionals) or " ".join(args[1:])
        return usage_failure(NAME, UsageError(f"unexpected arguments: {extra}", EXIT_E2BIG))
    return run(COMMANDS[word], values.get("f"), values.get("s"))
