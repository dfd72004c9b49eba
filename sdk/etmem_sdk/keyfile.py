"""Key-file (GKeyFile) text from groups of keys: the form of :attr:`ConfigSection.text`.

The one writer, for the core (a TOML object file's sections rendered for policies that read the
file as a key file) and for the thirdparty engine (a section built by hand, given to glib).
Values are escaped so that both etmem's reader and ``g_key_file_get_string`` give them back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["escape_value", "keyfile_text"]

_PLAIN = re.compile(r"[^ \\\n\t\r](?:[^\\\n\t\r]*[^ \\\n\t\r])?")


def escape_value(value: str) -> str:
    """``value`` as the right-hand side of a ``key=value`` line."""
    if _PLAIN.fullmatch(value):  # the common case, and a file may hold 10^6 values
        return value
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if out.startswith(" "):  # readers strip a value's leading spaces
        out = "\\s" + out[1:]
    if out.endswith(" "):  # and etmem's reader its trailing ones
        out = out[:-1] + "\\s"
    return out


def keyfile_text(groups: Iterable[tuple[str, Mapping[str, str]]]) -> str:
    """Key-file text for ``(group, keys)`` pairs, in that order, each group followed by an
    empty line."""
    lines = []
    for group, items in groups:
        lines.append(f"[{group}]")
        lines.extend(f"{k}={escape_value(v)}" for k, v in items.items())
        lines.append("")
    return "\n".join(lines)
