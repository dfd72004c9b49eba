"""``etmem obj add|del``: hand etmemd a configuration file to add or remove its objects."""

from collections.abc import Sequence
from functools import partial

from ..protocol import Cmd, Request
from .common import (
    EXIT_E2BIG,
    EXIT_EINVAL,
    EXIT_EPERM,
    UsageError,
    absolute,
    require,
    send,
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

NAME = "obj"

FILE = Option(
    "f",
    "file",
    "conf_file",
    "Add configuration file",
    "The configuration file. A relative path is made absolute before it is sent, since etmemd "
    "opens the file itself. It must be owned by root with mode 0600 or 0400.",
)
OPTIONS = (FILE, socket_option("Socket name to connect"))

#: ``etmem obj help`` prints the original's text unchanged.
HELP = help_text(
    ("etmem obj add [options]", "etmem obj del [options]", "etmem obj help [options]"),
    OPTIONS,
    27,
    "    1. Configuration file must be given.\n    2. Socket name must be given.\n",
)

COMMANDS = {"add": Cmd.OBJ_ADD, "del": Cmd.OBJ_DEL}
_GETOPT_TABLE = getopt_table(OPTIONS)
_DOCS = {
    "add": "Add every project, engine and task of FILE (all of them, or none if one fails).",
    "del": "Delete the tasks, engines and projects FILE names (stopping what is running).",
}


def register(parent: "typer.Typer") -> None:
    """Add ``obj`` to the ``etmem`` app; typer is imported here, only for --help, so that the
    getopt path of a command never loads it."""
    import typer

    app = typer.Typer(
        name=NAME,
        help="Add or delete the projects, engines and tasks described in a configuration file.",
        no_args_is_help=True,
        add_completion=False,
    )
    for word, cmd in COMMANDS.items():
        forward = partial(run_values, cmd)
        app.command(word)(typer_command(OPTIONS, forward, _DOCS[word], required=("f", "s")))
    parent.add_typer(app)


def run_values(cmd: Cmd, values: dict[str, str]) -> int:
    """:func:`run` with the options as getopt reports them (``{letter: value}``)."""
    return run(cmd, values.get("f"), values.get("s"))


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
    try:
        values = scan_options(
            args[1:],
            _GETOPT_TABLE,
            f"obj {word}",
            error_status=EXIT_EINVAL,
            extra_status=EXIT_E2BIG,
        )
    except UsageError as err:
        return usage_failure(NAME, err)
    return run_values(COMMANDS[word], values)
