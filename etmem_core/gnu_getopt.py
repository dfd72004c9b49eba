"""GNU ``getopt_long`` argument scanning, for the command forms inherited from the C tools.

The original ``etmem`` and ``etmemd`` parse with glibc's getopt_long in its default (permuting)
mode, and their exit statuses depend on exactly what it accepts: attached values (``-fFILE``,
``--file=FILE``), unique prefixes of long options (``--so``), non-options anywhere, ``--`` ending
the options. Python's ``getopt.gnu_getopt`` scans the same way, prefix rule included; this module
exists for what it does not share: glibc's error texts (``unrecognized option '--x'``, ...), which
the client prints as the original did, and glibc's ambiguity rule (a prefix matching several
long options that all stand for the same short option and argument kind is not ambiguous; the
stdlib refuses every prefix with more than one match). Used by the client's commands and by
etmemd's command line, so it lives beside both rather than in the client.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Sequence


class GetoptError(Exception):
    """An option getopt would answer with ``'?'``; the message says which and why."""


class LongOpt(namedtuple("LongOpt", ("name", "has_arg", "short"))):
    """One ``struct option``: ``--name`` (str) that stands for the short option ``short`` (a
    letter), taking a value if ``has_arg``.  A named tuple: the client's start-up does without
    dataclasses."""

    __slots__ = ()


class Getopt:
    """Scan ``args`` (the words after the program name / command word) one option at a time.

    Iterate to get ``(short_letter, value_or_None)`` in command-line order; non-option words are
    collected in :attr:`positionals` as the scan passes them (the caller may stop early, as the
    C code does after ``-h``). ``count`` is the number of options returned so far.
    """

    def __init__(self, args: Sequence[str], shortopts: str, longopts: Sequence[LongOpt]) -> None:
        self.args = list(args)
        self.longopts = list(longopts)
        self.positionals: list[str] = []
        self.count = 0
        self._short: dict[str, bool] = {}
        i = 0
        while i < len(shortopts):
            letter = shortopts[i]
            takes = i + 1 < len(shortopts) and shortopts[i + 1] == ":"
            self._short[letter] = takes
            i += 2 if takes else 1

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        args = self.args
        i = 0
        while i < len(args):
            word = args[i]
            i += 1
            if word == "--":
                self.positionals.extend(args[i:])
                return
            if word.startswith("--"):
                opt, value, i = self._long(word[2:], args, i)
                self.count += 1
                yield opt, value
            elif word.startswith("-") and word != "-":
                j = 1
                while j < len(word):
                    letter = word[j]
                    j += 1
                    if letter not in self._short:
                        raise GetoptError(f"invalid option -- '{letter}'")
                    if not self._short[letter]:
                        self.count += 1
                        yield letter, None
                        continue
                    if j < len(word):
                        value = word[j:]
                    elif i < len(args):
                        value = args[i]
                        i += 1
                    else:
                        raise GetoptError(f"option requires an argument -- '{letter}'")
                    self.count += 1
                    yield letter, value
                    break
            else:
                self.positionals.append(word)

    def _long(self, body: str, args: list[str], i: int) -> tuple[str, str | None, int]:
        name, eq, attached = body.partition("=")
        exact = [o for o in self.longopts if o.name == name]
        matches = exact or [o for o in self.longopts if o.name.startswith(name)]
        if not matches:
            raise GetoptError(f"unrecognized option '--{name}'")
        if len({(o.short, o.has_arg) for o in matches}) > 1:
            raise GetoptError(f"option '--{name}' is ambiguous")
        opt = matches[0]
        if not opt.has_arg:
            if eq:
                raise GetoptError(f"option '--{opt.name}' doesn't allow an argument")
            return opt.short, None, i
        if eq:
            return opt.short, attached, i
        if i < len(args):
            return opt.short, args[i], i + 1
        raise GetoptError(f"option '--{opt.name}' requires an argument")
