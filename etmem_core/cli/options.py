"""The one declaration of a command's options, and what is derived from it.

Each noun lists its options once as :class:`Option` rows; the getopt tables, the ``Options:``
block of the original's help text and the typer options of ``--help`` are all made from those
rows, so a new option cannot be parsed without being documented (or the other way round).
Building the typer command imports typer, so it happens only in :func:`typer_command`; the rest
of this module stays on the light start-up path.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence

from ..gnu_getopt import Getopt, GetoptError, LongOpt
from .common import UsageError


class Option(
    namedtuple(
        "Option", ("letter", "long", "metavar", "summary", "help", "short"), defaults=(True,)
    )
):
    """One option of a command.

    ``letter`` is what getopt reports for it; ``short`` (default True) says whether ``-letter``
    is accepted too (a long-only option still needs a letter to stand for). ``metavar`` names
    the value in the original's help text, or is None for a flag. ``summary`` is the original's
    terse help line, ``help`` the full sentence ``--help`` shows. A named tuple: start-up does
    without dataclasses.
    """

    __slots__ = ()


def socket_option(summary: str) -> Option:
    """``-s|--socket``, which every command sending a request takes (each original help page
    words its line differently)."""
    return Option(
        "s", "socket", "socket_name", summary, "The socket name etmemd was started with (-s)."
    )


def getopt_table(options: Sequence[Option]) -> tuple[str, tuple[LongOpt, ...]]:
    """The ``shortopts`` string and ``longopts`` table that :class:`Getopt` takes."""
    shortopts = "".join(o.letter + (":" if o.metavar else "") for o in options if o.short)
    longopts = tuple(LongOpt(o.long, o.metavar is not None, o.letter) for o in options)
    return shortopts, longopts


def scan_options(
    args: Sequence[str],
    table: tuple[str, Sequence[LongOpt]],
    context: str,
    *,
    error_status: int,
    extra_status: int,
) -> dict[str, str]:
    """Scan ``args`` with getopt as the original does; return ``{letter: value}`` (``""`` for a
    flag). A getopt error, or any word besides the options once one option is given (the
    original's rule), is a :class:`UsageError` with the original's exit status."""
    values: dict[str, str] = {}
    scan = Getopt(args, *table)
    try:
        for letter, value in scan:
            values[letter] = value or ""
    except GetoptError as exc:
        raise UsageError(f"{context}: {exc}", error_status) from None
    if scan.count and len(args) > 2 * scan.count:
        extra = " ".join(scan.positionals) or " ".join(args)
        raise UsageError(f"unexpected arguments: {extra}", extra_status)
    return values


def options_block(options: Sequence[Option], width: int) -> str:
    """The ``Options:`` lines of the original's help text; ``width`` is the column the summary
    follows (each original help page has its own, kept so the text stays byte for byte)."""
    lines = []
    for o in options:
        left = f"-{o.letter}|--{o.long}" if o.short else f"--{o.long}"
        if o.metavar:
            left += f" <{o.metavar}>"
        lines.append(f"    {left.ljust(width)} {o.summary}\n")
    return "".join(lines)


def help_text(usage: Sequence[str], options: Sequence[Option], width: int, notes: str) -> str:
    """A whole help page in the original's layout: usage lines, options, numbered notes."""
    usage_lines = "".join(f"    {line}\n" for line in usage)
    return f"\nUsage:\n{usage_lines}\nOptions:\n{options_block(options, width)}\nNotes:\n{notes}"


def parsed(options: Sequence[Option], values: dict[str, object]) -> dict[str, str]:
    """typer's keyword arguments (named after the long options) as getopt's ``{letter: value}``:
    a flag that is set maps to ``""``, an absent option is left out."""
    out: dict[str, str] = {}
    for o in options:
        value = values.get(o.long)
        if value is None or value is False:
            continue
        out[o.letter] = "" if value is True else str(value)
    return out


def typer_command(
    options: Sequence[Option],
    run: Callable[..., int],
    doc: str,
    *,
    required: Sequence[str] = (),
    argument: tuple[str, str] | None = None,
) -> Callable[..., None]:
    """A function typer can register, whose parameters are ``options``.

    Its body calls ``run(values)`` (``run(values, word)`` with ``argument``) with the values in
    getopt's form, so typer and getopt reach the same code. ``required`` lists the letters typer
    marks as required; ``argument`` is ``(name, help)`` of a leading positional word (the
    engine's command).
    """
    import inspect
    from typing import Annotated

    import typer

    from .common import exit_with

    params = []
    if argument is not None:
        params.append(
            inspect.Parameter(
                argument[0],
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[str, typer.Argument(help=argument[1])],
            )
        )
    for o in options:
        decls = (f"-{o.letter}", f"--{o.long}") if o.short else (f"--{o.long}",)
        if o.metavar is None:
            annotation: object = Annotated[bool, typer.Option(*decls, help=o.help)]
            default: object = False
        else:
            annotation = Annotated[str, typer.Option(*decls, help=o.help)]
            default = inspect.Parameter.empty if o.letter in required else None
            if default is None:
                annotation = Annotated[str | None, typer.Option(*decls, help=o.help)]
        params.append(
            inspect.Parameter(
                o.long, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )

    def command(**values: object) -> None:
        found = parsed(options, values)
        if argument is None:
            exit_with(run(found))
        exit_with(run(found, str(values[argument[0]])))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command
