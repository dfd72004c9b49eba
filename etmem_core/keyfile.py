"""A reader for etmem's object files with the semantics of glib's ``GKeyFile``.

etmemd loads every object file with ``g_key_file_load_from_file(..., G_KEY_FILE_NONE)``, so what
a file means is whatever GKeyFile makes of it. This module reproduces that behaviour (recorded
from glib 2.74 in ``tests/golden/config/cases.json``):

* ``[group]`` headers (leading whitespace allowed, spaces/tabs after ``]`` ignored); a repeated
  header re-opens the earlier group, so groups merge and their order is first appearance;
* ``key=value`` lines: whitespace around the key and before the value is dropped, only the first
  ``=`` separates; a repeated key keeps its last value;
* lines starting with ``#`` (after whitespace) and blank lines are comments; ``;`` is not;
* a key line before any group, a line that is neither, an empty/invalid key or group name fail
  the whole load with glib's error code and message;
* ``key[locale]=...`` translations are dropped (only the ``C`` locale is "interesting");
* string getters process the escapes ``\\s \\n \\t \\r \\\\``; the int64 getter is strict decimal
  (optional sign, no spaces, clamps at the int64 limits as ``g_ascii_strtoll`` does); the double
  getter accepts exactly what C's ``strtod`` accepts, whole string.

**One deliberate difference**: GKeyFile keeps trailing whitespace of a value, so ``loop=1 `` is
not an integer and ``value=mysql `` is not a valid process name although nothing shows on screen.
We strip trailing ASCII whitespace (space, tab, CR, VT, FF) from values unless
``strip_trailing=False`` is passed. An escaped trailing space (``\\s``) is still kept.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from etmem_sdk import ConfigError
from etmem_sdk.params import parse_c_double, parse_c_int64

# g_ascii_isspace: what GKeyFile skips around keys and before values.
_ASCII_SPACE = " \t\n\r\v\f"

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class KeyFileErrorCode(enum.IntEnum):
    """glib's ``GKeyFileError`` codes (the numbers are part of the recorded golden data)."""

    UNKNOWN_ENCODING = 0
    PARSE = 1
    NOT_FOUND = 2
    KEY_NOT_FOUND = 3
    GROUP_NOT_FOUND = 4
    INVALID_VALUE = 5


class KeyFileError(ConfigError):
    """A load or getter failure; ``code`` and ``str(error)`` match glib's error code and message."""

    def __init__(self, code: KeyFileErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.lineno: int | None = None  # set for load errors: the 1-based line at fault

    def summary(self) -> str:
        """The message without the offending text, which may come from a file not meant to be
        shown (a root-only key passed by mistake): fit for replies and logs."""
        what = re.sub(r"“[^”]*”", "…", self.message).split(":", 1)[0]
        return f"line {self.lineno}: {what}" if self.lineno else what


def _shown(text: str) -> str:
    """Text as glib puts it in a message (``g_utf8_make_valid``: bad bytes become U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _raw(text: str) -> str:
    """Text glib copies into a message unchecked; invalid bytes are shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class _Group:
    name: str
    keys: list[str] = field(default_factory=list)  # every key line, duplicates included
    values: dict[str, str] = field(default_factory=dict)  # last value wins


class KeyFile:
    """A loaded key file: ordered groups, each with ordered keys and raw values.

    Use :func:`parse_keyfile` to build one. Getters raise :class:`KeyFileError` like their
    ``g_key_file_get_*`` counterparts.
    """

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self.start_group: str | None = None

    # --- structure -------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Group names in order of first appearance (``g_key_file_get_groups``)."""
        return list(self._groups)

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def has_key(self, group: str, key: str) -> bool:
        g = self._groups.get(group)
        return g is not None and key in g.values

    def keys(self, group: str) -> list[str]:
        """Key lines of ``group`` in file order, **including repeats** (``g_key_file_get_keys``).

        A key written twice is listed twice; both entries read the last value.
        """
        return list(self._group(group).keys)

    def items(self, group: str) -> dict[str, str]:
        """Distinct keys of ``group`` (first-appearance order) mapped to their raw last value."""
        return dict(self._group(group).values)

    # --- getters ---------------------------------------------------------------------------

    def get_value(self, group: str, key: str) -> str:
        """The raw value, no escape processing (``g_key_file_get_value``)."""
        g = self._group(group)
        try:
            return g.values[key]
        except KeyError:
            raise KeyFileError(
                KeyFileErrorCode.KEY_NOT_FOUND,
                f"Key file does not have key “{key}” in group “{group}”",
            ) from None

    def get_string(self, group: str, key: str) -> str:
        """The value with escapes processed (``g_key_file_get_string``)."""
        raw = self.get_value(group, key)
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise KeyFileError(
                KeyFileErrorCode.UNKNOWN_ENCODING,
                f"Key file contains key “{key}” with value “{_shown(raw)}” which is not UTF-8",
            ) from None
        value = unescape(raw)
        if value is None:
            raise KeyFileError(
                KeyFileErrorCode.INVALID_VALUE,
                f"Key file contains key “{key}” which has a value that cannot be interpreted.",
            )
        return value

    def get_int64(self, group: str, key: str) -> int:
        """Strict decimal integer (``g_key_file_get_int64``), clamped to the int64 range."""
        raw = self.get_value(group, key)
        number = parse_int64(raw)
        if number is None:
            raise KeyFileError(
                KeyFileErrorCode.INVALID_VALUE,
                f"Key “{key}” in group “{group}” has value “{_raw(raw)}” where int64 was expected",
            )
        return number

    def get_double(self, group: str, key: str) -> float:
        """A C ``strtod`` number spanning the whole value (``g_key_file_get_double``)."""
        raw = self.get_value(group, key)
        number = parse_double(raw)
        if number is None:
            raise KeyFileError(
                KeyFileErrorCode.INVALID_VALUE,
                f"Key file contains key “{key}” in group “{group}” which has a value that "
                "cannot be interpreted.",
            )
        return number

    def _group(self, group: str) -> _Group:
        try:
            return self._groups[group]
        except KeyError:
            raise KeyFileError(
                KeyFileErrorCode.GROUP_NOT_FOUND, f"Key file does not have group “{group}”"
            ) from None


def unescape(raw: str) -> str | None:
    """Process GKeyFile string escapes; ``None`` for an unknown escape or a trailing ``\\``."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 >= len(raw):
                return None
            repl = _ESCAPES.get(raw[i + 1])
            if repl is None:
                return None
            out.append(repl)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


parse_int64 = parse_c_int64  # g_ascii_strtoll over the whole value, clamped to int64
parse_double = parse_c_double  # C-locale strtod over the whole value


_NOT_IN_GROUP_NAME = re.compile(r"[\[\]\x00-\x1f\x7f]")


def _is_group_name(name: str) -> bool:
    return bool(name) and _NOT_IN_GROUP_NAME.search(name) is None


def _split_key(key: str) -> tuple[bool, str | None]:
    """(valid, locale) for a key name as ``g_key_file_is_key_name`` judges it."""
    end = len(key)
    q = 0
    while q < end and key[q] not in "=[]":
        q += 1
    if q == 0 or key[0] == " " or key[q - 1] == " ":
        return False, None
    locale = None
    if q < end and key[q] == "[":
        start = q + 1
        q = start
        while q < end and (key[q].isalnum() or key[q] in "-_.@"):
            q += 1
        if q >= end or key[q] != "]":
            return False, None
        locale = key[start:q]
        q += 1
    return q == end, locale


def _parse_line(
    kf: KeyFile,
    line: str,
    current: list[_Group | None],
    strip: bool,
    keys: dict[str, str | None],
) -> None:
    """Parse one line into ``kf``; ``keys`` maps the key names already found valid in this
    file to their locale (a 10 MiB file may repeat a few names 10^6 times)."""
    stripped = line.lstrip(_ASCII_SPACE)
    if not stripped or stripped.startswith("#"):
        return
    if stripped.startswith("["):
        close = stripped.find("]")
        if close > 0 and not stripped[close + 1 :].strip(" \t"):
            name = stripped[1 : stripped.rfind("]")]
            group = kf._groups.get(name)  # a group already there has a valid name
            if group is None:
                if not _is_group_name(name):
                    raise KeyFileError(KeyFileErrorCode.PARSE, f"Invalid group name: {_raw(name)}")
                group = kf._groups[name] = _Group(name)
                if kf.start_group is None:
                    kf.start_group = name
            current[0] = group
            return
    eq = stripped.find("=")
    if eq <= 0:
        raise KeyFileError(
            KeyFileErrorCode.PARSE,
            f"Key file contains line “{_shown(line)}” which is not a key-value pair, group, "
            "or comment",
        )
    group = current[0]
    if group is None:
        raise KeyFileError(KeyFileErrorCode.GROUP_NOT_FOUND, "Key file does not start with a group")
    key = stripped[:eq].rstrip(_ASCII_SPACE)
    if key in keys:
        locale = keys[key]
    else:
        valid, locale = _split_key(key)
        if not valid:
            raise KeyFileError(KeyFileErrorCode.PARSE, f"Invalid key name: {_raw(key)}")
        keys[key] = locale
    value = stripped[eq + 1 :].lstrip(_ASCII_SPACE)
    if strip:
        value = value.rstrip(_ASCII_SPACE)
    if group.name == kf.start_group and key == "Encoding" and value.upper() != "UTF-8":
        raise KeyFileError(
            KeyFileErrorCode.UNKNOWN_ENCODING,
            f"Key file contains unsupported encoding “{_shown(value)}”",
        )
    if locale is not None and locale.upper() != "C":
        return  # a translation for a locale etmemd does not run in: glib drops it
    group.keys.append(key)
    group.values[key] = value


def parse_keyfile(data: str | bytes, *, strip_trailing: bool = True) -> KeyFile:
    """Parse an object file's text as ``g_key_file_load_from_data`` would.

    ``data`` may be bytes (invalid UTF-8 is carried through; :meth:`KeyFile.get_string` then
    refuses it, as glib does). Trailing whitespace of values is stripped (our deliberate
    difference from glib, see the module docstring) unless ``strip_trailing`` is false.
    Raises :class:`KeyFileError` (``code`` ``PARSE``, ``GROUP_NOT_FOUND`` or
    ``UNKNOWN_ENCODING``) when glib's load would fail.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    kf = KeyFile()
    current: list[_Group | None] = [None]
    keys: dict[str, str | None] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        # glib drops a CR only when it precedes a newline.
        if i < len(lines) - 1 and line.endswith("\r"):
            line = line[:-1]
        try:
            _parse_line(kf, line, current, strip_trailing, keys)
        except KeyFileError as e:
            e.lineno = i + 1
            raise
    return kf
