"""What every ``etmem`` noun shares: the original's help texts and exit statuses, sending a
request and printing the reply, and the one way to report a usage error."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..client import ClientError, call
from ..protocol import ProtocolError, Request

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:
    from typing import NoReturn

# Exit statuses of the original client (negative errnos truncated to a byte, as C's exit() does).
EXIT_OK = 0
EXIT_EPERM = 255  # -1 / -EPERM: unknown command word, engine argument errors, send failure
EXIT_EINVAL = 234  # -22: usage errors of etmem, obj, project
EXIT_E2BIG = 249  # -7: words left over after the options
EXIT_ECOMM = 186  # -70: the reply ended with failure, broke off, or timed out

#: ``etmem help`` prints exactly the original's text, so scripts that grep it keep working.
TOP_USAGE = """
Usage:
    etmem OBJECT COMMAND
    etmem help

Parameters:
    OBJECT  := { project | obj | engine }
    COMMAND := { add | del | start | stop | show | eng_cmd | help }
"""


class UsageError(Exception):
    """A command line the original would refuse; ``status`` is the original's exit status."""

    def __init__(self, message: str, status: int = EXIT_EINVAL) -> None:
        super().__init__(message)
        self.status = status


def write_out(data: bytes) -> None:
    """Write reply bytes to stdout unchanged and at once (engine commands stream)."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a text-only stdout (some test runners)
        sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()
        return
    sys.stdout.flush()
    out.write(data)
    out.flush()


def hint(message: str) -> None:
    """One line of our own on stderr, prefixed ``etmem:``."""
    sys.stderr.flush()
    print(f"etmem: {message}", file=sys.stderr, flush=True)


def usage_failure(noun: str, err: UsageError) -> int:
    """Report a usage error with how to get help; return its exit status."""
    hint(str(err))
    print(f"Try 'etmem {noun} help' or 'etmem {noun} --help'.", file=sys.stderr, flush=True)
    return err.status


def require(value: str | None, what: str, option: str, status: int) -> str:
    """``value`` if non-empty, else a :class:`UsageError` naming the option to give."""
    if not value:
        raise UsageError(f"{what} must be given ({option})", status)
    return value


def send(
    noun: str,
    socket_name: str,
    request: Request,
    *,
    out: Callable[[bytes], None] = write_out,
) -> int:
    """Send ``request``, print the reply as the original client does; return the exit status.

    stdout gets exactly the daemon's text (marker removed; after a failure marker, a newline),
    so it matches the original's on success and starts like it on failure. Everything of our own
    goes to stderr as one short hint, in place of the original's internal lines and help dump.
    """
    try:
        result = call(socket_name, request, out)
    except ProtocolError as exc:
        hint(str(exc))
        return EXIT_EPERM
    except ClientError as exc:
        if exc.stage == "connect":
            hint(
                f"cannot connect to etmemd at socket {socket_name!r}: {exc} "
                f"(is etmemd running with -s {socket_name}?)"
            )
            return exc.errno if exc.errno else EXIT_EPERM
        if exc.stage == "send":
            hint(f"could not send the request to etmemd: {exc}")
            return EXIT_EPERM
        if exc.errno is None:
            hint(f"etmemd did not finish its reply: {exc}; see etmemd's log")
        else:
            hint(f"receiving etmemd's reply failed: {exc}")
        return EXIT_ECOMM
    if not result.success:
        hint(f"etmemd refused the request (above); 'etmem {noun} help' shows the usage")
        return EXIT_ECOMM
    return EXIT_OK


def send_for_json(noun: str, socket_name: str, request: Request) -> int:
    """Like :func:`send` but the reply must be a JSON document, which is re-printed."""
    buffer = bytearray()
    status = send(noun, socket_name, request, out=buffer.extend)
    if status != EXIT_OK:
        write_out(bytes(buffer))
        return status
    import json  # only --json needs it: kept off every other command's start-up

    try:
        doc = json.loads(buffer.decode())
    except (UnicodeDecodeError, ValueError):
        write_out(bytes(buffer))
        hint("etmemd did not answer with JSON (an etmemd without --json support?)")
        return 1
    write_out((json.dumps(doc, indent=2) + "\n").encode())
    return EXIT_OK


def absolute(path: str) -> str:
    """``path`` made absolute against our cwd; the daemon would resolve it against its own."""
    return path if os.path.isabs(path) else os.path.abspath(path)


def exit_with(status: int) -> NoReturn:
    """End a typer command with ``status``."""
    import typer

    raise typer.Exit(status)


__all__ = [
    "EXIT_E2BIG",
    "EXIT_ECOMM",
    "EXIT_EINVAL",
    "EXIT_EPERM",
    "EXIT_OK",
    "TOP_USAGE",
    "UsageError",
    "absolute",
    "exit_with",
    "hint",
    "require",
    "send",
    "send_for_json",
    "usage_failure",
    "write_out",
]
