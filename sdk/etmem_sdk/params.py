"""Typed access to config keys, shared by the core and every engine.

Each helper reads one key of a :class:`~etmem_sdk.ConfigSection`, converts it the way etmemd
converts it, checks the rule, and raises :class:`~etmem_sdk.ConfigError` with a message that
names the file, the group, the key, the value and the rule::

    slide_conf.yaml: [project] loop=0: must be an integer from 1 to 120
    x.conf: [task] T: key not set

Integers are read like ``g_key_file_get_int64`` (strict decimal, optional sign, nothing else),
then — unlike C, which silently wraps them through an ``int`` cast — values outside the 32-bit
range are rejected (``bits=64`` for keys C stores in an ``unsigned long``). An engine's own
rule that no helper covers should still be reported through :func:`error` so every message
reads the same.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Literal, TypeVar, overload

from .errors import ConfigError

if TYPE_CHECKING:
    # A getter's result is the key's type when the key is required, else that type or whatever
    # ``default`` is: ``Default*`` is the default's type, ``None`` when none is given (a PEP 696
    # default, hence typing_extensions on Python 3.11), so each getter needs two overloads.
    from typing_extensions import TypeVar as DefaultVar

    DefaultInt = DefaultVar("DefaultInt", bound=int | None, default=None)
    DefaultFloat = DefaultVar("DefaultFloat", bound=float | None, default=None)
    DefaultStr = DefaultVar("DefaultStr", bound=str | None, default=None)
    DefaultBool = DefaultVar("DefaultBool", bound=bool | None, default=None)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DEC_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_HEX_FLOAT_RE = re.compile(
    r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)",
    re.ASCII,
)
_SPECIAL_FLOAT_RE = re.compile(r"([+-]?)(inf|infinity|nan(?:\([0-9A-Za-z_]*\))?)", re.I | re.A)

#: What a file's undecodable bytes became (``surrogateescape``).
_UNDECODABLE = re.compile("[\udc80-\udcff]")

T = TypeVar("T")


# --- C number syntax ----------------------------------------------------------------------------


def parse_c_int64(text: str) -> int | None:
    """``g_ascii_strtoll(text, 10)`` over the whole string, clamped to int64 as glib does.

    ``None`` unless ``text`` is an optional sign and ASCII digits (no spaces, no hex, not empty).
    """
    if not _INT_RE.fullmatch(text):
        return None
    return min(max(int(text), INT64_MIN), INT64_MAX)


def parse_c_double(text: str) -> float | None:
    """C-locale ``strtod`` over the whole string (decimal, hex float, inf, nan); else ``None``."""
    if _DEC_FLOAT_RE.fullmatch(text):
        return float(text)
    m = _HEX_FLOAT_RE.fullmatch(text)
    if m:
        body = m.group(2)
        value = float.fromhex("0x" + (body if "p" in body.lower() else body + "p0"))
        return -value if m.group(1) == "-" else value
    m = _SPECIAL_FLOAT_RE.fullmatch(text)
    if m:
        value = math.nan if m.group(2).lower().startswith("nan") else math.inf
        return -value if m.group(1) == "-" else value
    return None


# --- messages -----------------------------------------------------------------------------------


def _label(section: Mapping[str, str]) -> str:
    return f"{getattr(section, 'label', '<config>')}: [{getattr(section, 'group', '?')}]"


def error(section: Mapping[str, str], key: str, rule: str) -> ConfigError:
    """The standard error for ``key`` breaking ``rule``: ``file: [group] key=value: rule``.

    Returned, not raised, so callers write ``raise params.error(...)``.
    """
    value = section.get(key)
    if value is not None:
        # Undecodable bytes (kept as surrogates) are shown as \xNN so the message stays UTF-8.
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    shown = key if value is None else f"{key}={value}"
    return ConfigError(f"{_label(section)} {shown}: {rule}")


def missing(section: Mapping[str, str], key: str) -> ConfigError:
    """The standard error for a required key that is absent: ``file: [group] key: key not set``."""
    return ConfigError(f"{_label(section)} {key}: key not set")


def _raw(section: Mapping[str, str], key: str, required: bool) -> str | None:
    value = section.get(key)
    if value is None and required:
        raise missing(section, key)
    return value


# --- getters ------------------------------------------------------------------------------------


@overload
def get_int(
    section: Mapping[str, str],
    key: str,
    lo: int | None = ...,
    hi: int | None = ...,
    *,
    required: Literal[True] = ...,
    default: int | None = ...,
    bits: int = ...,
) -> int: ...
@overload
def get_int(
    section: Mapping[str, str],
    key: str,
    lo: int | None = ...,
    hi: int | None = ...,
    *,
    required: bool = ...,
    default: DefaultInt = ...,
    bits: int = ...,
) -> int | DefaultInt: ...


def get_int(
    section: Mapping[str, str],
    key: str,
    lo: int | None = None,
    hi: int | None = None,
    *,
    required: bool = True,
    default: int | None = None,
    bits: int = 32,
) -> int | None:
    """An integer key within ``lo..hi`` (inclusive; ``None`` = the type's limit).

    ``bits`` is 32 (C ``int``) or 64 (C ``long``/``unsigned long`` targets). An absent key is
    an error if ``required``, else ``default`` is returned.
    """
    raw = _raw(section, key, required)
    if raw is None:
        return default
    tmin, tmax = (INT32_MIN, INT32_MAX) if bits == 32 else (INT64_MIN, INT64_MAX)
    low = tmin if lo is None else lo
    high = tmax if hi is None else hi
    rule = f"must be an integer from {low} to {high}"
    if _INT_RE.fullmatch(raw) is None:
        raise error(section, key, rule)
    number = int(raw)  # not parse_c_int64: its clamping would hide an out-of-range value
    if not (tmin <= number <= tmax and low <= number <= high):
        raise error(section, key, rule)
    return number


@overload
def get_double(
    section: Mapping[str, str],
    key: str,
    *,
    above: float | None = ...,
    lo: float | None = ...,
    hi: float | None = ...,
    required: Literal[True] = ...,
    default: float | None = ...,
) -> float: ...
@overload
def get_double(
    section: Mapping[str, str],
    key: str,
    *,
    above: float | None = ...,
    lo: float | None = ...,
    hi: float | None = ...,
    required: bool = ...,
    default: DefaultFloat = ...,
) -> float | DefaultFloat: ...


def get_double(
    section: Mapping[str, str],
    key: str,
    *,
    above: float | None = None,
    lo: float | None = None,
    hi: float | None = None,
    required: bool = True,
    default: float | None = None,
) -> float | None:
    """A floating-point key (``g_key_file_get_double`` syntax); ``above`` is an exclusive lower
    bound (``> 0``), ``lo``/``hi`` inclusive bounds. NaN is refused when any bound is given.
    """
    raw = _raw(section, key, required)
    if raw is None:
        return default
    parts = []
    if above is not None:
        parts.append(f"greater than {above:g}")
    if lo is not None:
        parts.append(f"at least {lo:g}")
    if hi is not None:
        parts.append(f"at most {hi:g}")
    rule = "must be a number" + (" " + " and ".join(parts) if parts else "")
    number = parse_c_double(raw)
    if number is None:
        raise error(section, key, rule)
    bounded = above is not None or lo is not None or hi is not None
    if bounded and (
        math.isnan(number)
        or (above is not None and not number > above)
        or (lo is not None and number < lo)
        or (hi is not None and number > hi)
    ):
        raise error(section, key, rule)
    return number


@overload
def get_str(
    section: Mapping[str, str],
    key: str,
    *,
    required: Literal[True] = ...,
    default: str | None = ...,
    max_len: int | None = ...,
) -> str: ...
@overload
def get_str(
    section: Mapping[str, str],
    key: str,
    *,
    required: bool = ...,
    default: DefaultStr = ...,
    max_len: int | None = ...,
) -> str | DefaultStr: ...


def get_str(
    section: Mapping[str, str],
    key: str,
    *,
    required: bool = True,
    default: str | None = None,
    max_len: int | None = None,
) -> str | None:
    """A non-empty string key of at most ``max_len`` characters (C refuses empty strings)."""
    raw = _raw(section, key, required)
    if raw is None:
        return default
    if raw == "":
        raise error(section, key, "must not be empty")
    if not raw.isascii() and _UNDECODABLE.search(raw):
        raise error(section, key, "must be valid UTF-8")
    if max_len is not None and len(raw) > max_len:
        raise error(section, key, f"must be at most {max_len} characters (got {len(raw)})")
    return raw


@overload
def get_choice(
    section: Mapping[str, str],
    key: str,
    choices: Collection[str],
    *,
    required: Literal[True] = ...,
    default: str | None = ...,
) -> str: ...
@overload
def get_choice(
    section: Mapping[str, str],
    key: str,
    choices: Collection[str],
    *,
    required: bool = ...,
    default: DefaultStr = ...,
) -> str | DefaultStr: ...


def get_choice(
    section: Mapping[str, str],
    key: str,
    choices: Collection[str],
    *,
    required: bool = True,
    default: str | None = None,
) -> str | None:
    """A key whose value must be exactly (case-sensitively) one of ``choices``."""
    raw = _raw(section, key, required)
    if raw is None:
        return default
    if raw not in choices:
        listed = list(choices)
        if len(listed) == 2:
            rule = f"must be {listed[0]} or {listed[1]}"
        else:
            rule = "must be one of " + ", ".join(listed)
        raise error(section, key, rule)
    return raw


@overload
def get_yes_no(
    section: Mapping[str, str],
    key: str,
    *,
    required: Literal[True] = ...,
    default: bool | None = ...,
) -> bool: ...
@overload
def get_yes_no(
    section: Mapping[str, str],
    key: str,
    *,
    required: bool = ...,
    default: DefaultBool = ...,
) -> bool | DefaultBool: ...


def get_yes_no(
    section: Mapping[str, str],
    key: str,
    *,
    required: bool = True,
    default: bool | None = None,
) -> bool | None:
    """A ``yes``/``no`` key (exact, lower case, as in C) as a bool."""
    value = get_choice(section, key, ("yes", "no"), required=required)
    return default if value is None else value == "yes"


__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "error",
    "get_choice",
    "get_double",
    "get_int",
    "get_str",
    "get_yes_no",
    "missing",
    "parse_c_double",
    "parse_c_int64",
]
