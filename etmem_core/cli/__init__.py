"""The ``etmem`` command line.

Two layers. The original's command forms (``etmem obj add -f F -s S``, ``etmem engine CMD ...``,
``etmem help``) are parsed with getopt rules by each noun's ``compat_main`` so that they behave
— exit statuses included — as the C client did. Everything else (``--help`` anywhere, new
commands, new nouns) goes to the typer app.

To add a noun, write ``cli/<noun>.py`` with either ``app = typer.Typer(name="<noun>", ...)`` or
``register(parent)``, and add its module name to :data:`NOUNS` — one word. A noun with a
``compat_main`` builds its typer app in ``register`` so that its getopt path never imports typer
(a third of the client's start-up, docs/performance.md). Such a noun declares its options once,
as :class:`~etmem_core.cli.options.Option` rows: getopt's tables, the ``help`` page and the
typer command (whose body calls what the getopt path calls) are made from them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .common import EXIT_EINVAL, TOP_USAGE, hint, write_out

#: cli/<name>.py modules, in the order ``etmem --help`` lists them.
NOUNS: tuple[str, ...] = ("obj", "project", "engine", "plugins", "sysinfo", "scan")

TYPE_CHECKING = False  # typing's constant without importing typing: the client starts faster
if TYPE_CHECKING:
    import typer

_modules: dict[str, ModuleType] = {}
_app: typer.Typer | None = None


def _module(name: str) -> ModuleType:
    """Import one noun's module (only what a command needs: some nouns pull in numpy)."""
    if name not in _modules:
        _modules[name] = importlib.import_module(f"{__name__}.{name}")
    return _modules[name]


def _load() -> typer.Typer:
    """The typer app with every noun registered (for --help and the typer-only commands)."""
    global _app
    if _app is None:
        import typer

        app = typer.Typer(
            name="etmem",
            help="Control etmemd, the memory-tiering daemon: add configuration files, start and "
            "stop projects, run engine commands (these take -s SOCKET, the name etmemd listens "
            "on), and look at this machine and its processes. 'etmem help' prints the original "
            "etmem's usage.",
            add_completion=False,
            no_args_is_help=True,
        )
        for name in NOUNS:
            module = _module(name)
            if hasattr(module, "register"):
                module.register(app)
            else:
                app.add_typer(module.app)
        _app = app
    return _app


def _run_typer(args: list[str]) -> int:
    try:
        _load()(args=args, prog_name="etmem", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def _wants_typer(args: Sequence[str]) -> bool:
    return any(a == "--help" for a in args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``etmem`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `etmem project show | head -1`: the reader left; not our error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except KeyboardInterrupt:
        return 130


def _main(args: list[str]) -> int:
    if args in (["--version"], ["-V"]):  # needs no daemon, and no engine imported
        from ..version import version

        print(f"etmem {version()}", flush=True)
        return 0
    if args == ["help"]:
        write_out(TOP_USAGE.encode())
        return 0
    if not args or args[0] not in NOUNS:
        if args and args[0] == "--help":
            return _run_typer(args)
        what = f"unknown object {args[0]!r}" if args else "an object is needed"
        hint(f"{what}; objects: {', '.join(NOUNS)}")
        print("Try 'etmem help' or 'etmem --help'.", file=sys.stderr, flush=True)
        return EXIT_EINVAL
    noun, rest = args[0], args[1:]
    module = _module(noun)
    compat = getattr(module, "compat_main", None)
    if compat is None or _wants_typer(rest):
        return _run_typer(args)
    if not rest:
        hint(f"{noun}: a command is needed")
        print(f"Try 'etmem {noun} help' or 'etmem {noun} --help'.", file=sys.stderr, flush=True)
        return EXIT_EINVAL
    if rest[0] == "help":  # the original ignores whatever follows
        write_out(module.HELP.encode())
        return 0
    return compat(rest)
