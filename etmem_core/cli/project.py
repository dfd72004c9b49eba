"""``etmem project show|start|stop``: list projects, start or stop one."""

from collections.abc import Sequence
from functools import partial

from ..protocol import SHOW_JSON, Cmd, Request
from .common import (
    EXIT_E2BIG,
    EXIT_EINVAL,
    EXIT_EPERM,
    UsageError,
    require,
    send,
    send_for_json,
    usage_failure,
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

NAME = "project"

NAME_OPTION = Option(
    "n",
    "name",
    "proj_name",
    "Project to start, stop or show",
    "The project to start or stop, or the only one to show (show without it: every project).",
)
SOCKET = socket_option("Socket name to connect")
JSON = Option(
    "j",
    "json",
    None,
    "(show only) print the projects as JSON",
    "Print a JSON document (projects, engines, tasks, their settings and statistics) instead "
    "of the table.",
    short=False,
)
OPTIONS = (NAME_OPTION, SOCKET, JSON)

HELP = help_text(
    (
        "etmem project start [options]",
        "etmem project stop [options]",
        "etmem project show [options]",
        "etmem project help",
    ),
    OPTIONS,
    25,
    "    1. Socket name must always be given.\n"
    "    2. Project name must be given to start or stop; show without it lists every project.\n",
)

COMMANDS = {"show": Cmd.PROJ_SHOW, "start": Cmd.PROJ_START, "stop": Cmd.PROJ_STOP}
#: the options each command takes (--json is show's only)
_COMMAND_OPTIONS = {
    "show": OPTIONS,
    "start": (NAME_OPTION, SOCKET),
    "stop": (NAME_OPTION, SOCKET),
}
_GETOPT_TABLES = {word: getopt_table(opts) for word, opts in _COMMAND_OPTIONS.items()}
_DOCS = {
    "show": "Print the projects with their tasks, one row per task, newest first.",
    "start": "Start every task of the project.",
    "stop": "Stop every task of the project (its objects stay; start it again later).",
}


def register(parent: "typer.Typer") -> None:
    """Add ``project`` to the ``etmem`` app; typer is imported here, only for --help, so that
    the getopt path of a command never loads it."""
    import typer

    app = typer.Typer(
        name=NAME,
        help="Show the projects etmemd holds, or start and stop one.",
        no_args_is_help=True,
        add_completion=False,
    )
    for word, cmd in COMMANDS.items():
        required = ("s",) if cmd is Cmd.PROJ_SHOW else ("n", "s")
        command = typer_command(
            _COMMAND_OPTIONS[word], partial(run_values, cmd), _DOCS[word], required=required
        )
        app.command(word)(command)
    parent.add_typer(app)


def run_values(cmd: Cmd, values: dict[str, str]) -> int:
    """:func:`run` with the options as getopt reports them (``{letter: value}``)."""
    return run(cmd, values.get("n"), values.get("s"), as_json="j" in values)


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
    try:
        values = scan_options(
            args[1:],
            _GETOPT_TABLES[word],
            f"project {word}",
            error_status=EXIT_EINVAL,
            extra_status=EXIT_E2BIG,
        )
    except UsageError as err:
        return usage_failure(NAME, err)
    return run_values(cmd, values)
