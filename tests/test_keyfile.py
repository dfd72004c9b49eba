"""etmem_core.keyfile against every GKeyFile behaviour recorded in golden/config/cases.json.

Each case is checked twice: with ``strip_trailing=False`` it must match glib exactly; with the
default (trailing whitespace of values stripped, our deliberate difference) it must match glib
everywhere except the few values that end in whitespace, whose expected results are listed in
``STRIPPED`` below.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from etmem_sdk import ConfigError

from etmem_core.keyfile import (
    KeyFile,
    KeyFileError,
    KeyFileErrorCode,
    parse_double,
    parse_int64,
    parse_keyfile,
    unescape,
)


def _load_cases() -> list[dict[str, Any]]:
    # Collection happens before fixtures exist, so look where the golden fixture looks.
    from conftest import GOLDEN

    return json.loads((GOLDEN / "config" / "cases.json").read_text())["cases"]


CASES = _load_cases()

# (case, group, key) -> what the stripped value reads as; every value in cases.json that ends in
# whitespace must be listed here (test_stripped_table_is_complete).
STRIPPED: dict[tuple[str, str, str], dict[str, Any]] = {
    ("trailing_spaces_value", "project", "loop"): {"value": "1", "int64": 1, "double": 1.0},
    ("trailing_spaces_value", "project", "name"): {"value": "mysql", "int64": None, "double": None},
    ("trailing_spaces_value", "project", "interval"): {"value": "2", "int64": 2, "double": 2.0},
    ("int_formats", "project", "f"): {"value": "5", "int64": 5, "double": 5.0},
    ("double_formats", "task", "h"): {"value": "0.1", "int64": None, "double": 0.1},
}


def _shown(text: str) -> str:
    """Our strings as the golden file writes them (invalid bytes as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _as_float(x: Any) -> float:
    return float(x) if isinstance(x, str) else x


def _same_float(a: float, b: Any) -> bool:
    b = _as_float(b)
    if math.isnan(b):
        return math.isnan(a)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def _check_error(err: KeyFileError, golden: dict[str, Any]) -> None:
    assert golden["domain"] == "g-key-file-error-quark"
    assert int(err.code) == golden["code"]
    assert str(err) == golden["message"]


def _check_getters(kf: KeyFile, group: str, key: str, exp: dict[str, Any]) -> None:
    """Compare value/string/int64/double (or their errors) of one key with a golden record."""
    assert _shown(kf.get_value(group, key)) == exp["value"]
    if "string" in exp:
        assert kf.get_string(group, key) == exp["string"]
    else:
        with pytest.raises(KeyFileError) as ei:
            kf.get_string(group, key)
        _check_error(ei.value, exp["string_error"])
    if "int64" in exp:
        assert kf.get_int64(group, key) == exp["int64"]
        wrapped = (exp["int64"] + 2**31) % 2**32 - 2**31
        assert wrapped == exp["int64_as_c_int"]  # what C's (int) cast would make of it
    else:
        with pytest.raises(KeyFileError) as ei:
            kf.get_int64(group, key)
        _check_error(ei.value, exp["int64_error"])
    if "double" in exp:
        assert _same_float(kf.get_double(group, key), exp["double"])
    else:
        with pytest.raises(KeyFileError) as ei:
            kf.get_double(group, key)
        _check_error(ei.value, exp["double_error"])


def _check_missing(kf: KeyFile, probe: dict[str, Any]) -> None:
    group, key = probe["group"], probe["key"]
    for getter, field in (
        (kf.get_value, "value_error"),
        (kf.get_string, "string_error"),
        (kf.get_int64, "int64_error"),
        (kf.get_double, "double_error"),
    ):
        with pytest.raises(KeyFileError) as ei:
            getter(group, key)
        _check_error(ei.value, probe[field])


def _data(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["text_hex"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_glib_exactly_without_stripping(case: dict[str, Any]) -> None:
    data = _data(case)
    if not case["loaded"]:
        with pytest.raises(KeyFileError) as ei:
            parse_keyfile(data, strip_trailing=False)
        _check_error(ei.value, case["load_error"])
        return
    kf = parse_keyfile(data, strip_trailing=False)
    assert kf.start_group == case["start_group"]
    assert kf.groups() == [g["name"] for g in case["groups"]]
    for g in case["groups"]:
        assert kf.keys(g["name"]) == [k["key"] for k in g["keys"]]
        for k in g["keys"]:
            _check_getters(kf, g["name"], k["key"], k)
    for probe in case.get("probes", []):
        if "has_group" in probe:
            assert kf.has_group(probe["group"]) is probe["has_group"]
        if "has_key" in probe:
            assert kf.has_key(probe["group"], probe["key"]) is probe["has_key"]
            if probe["has_key"]:
                _check_getters(kf, probe["group"], probe["key"], probe)
            else:
                _check_missing(kf, probe)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_glib_with_trailing_whitespace_stripped(case: dict[str, Any]) -> None:
    data = _data(case)
    if not case["loaded"]:
        with pytest.raises(KeyFileError) as ei:
            parse_keyfile(data)
        _check_error(ei.value, case["load_error"])
        return
    kf = parse_keyfile(data)
    assert kf.groups() == [g["name"] for g in case["groups"]]
    for g in case["groups"]:
        assert kf.keys(g["name"]) == [k["key"] for k in g["keys"]]
        for k in g["keys"]:
            override = STRIPPED.get((case["name"], g["name"], k["key"]))
            if override is None:
                _check_getters(kf, g["name"], k["key"], k)
                continue
            assert kf.get_value(g["name"], k["key"]) == override["value"]
            assert kf.get_string(g["name"], k["key"]) == override["value"]
            for getter, field in ((kf.get_int64, "int64"), (kf.get_double, "double")):
                if override[field] is None:
                    with pytest.raises(KeyFileError):
                        getter(g["name"], k["key"])
                else:
                    assert getter(g["name"], k["key"]) == override[field]


def test_stripped_table_is_complete() -> None:
    ending_in_space = {
        (c["name"], g["name"], k["key"])
        for c in CASES
        for g in c.get("groups", [])
        for k in g["keys"]
        if k["value"] != k["value"].rstrip(" \t\r\n\v\f")
    }
    assert ending_in_space == set(STRIPPED)


def test_items_give_last_value_once_per_key() -> None:
    kf = parse_keyfile(
        "[task]\nname=t1\ntype=pid\n[engine]\nname=slide\n[task]\nvalue=1\nname=t2\n"
    )
    assert kf.items("task") == {"name": "t2", "type": "pid", "value": "1"}
    assert list(kf.items("task")) == ["name", "type", "value"]
    assert kf.items("engine") == {"name": "slide"}


def test_missing_group_is_group_not_found() -> None:
    kf = parse_keyfile("[project]\nname=p\n")
    with pytest.raises(KeyFileError) as ei:
        kf.get_value("task", "name")
    assert ei.value.code is KeyFileErrorCode.GROUP_NOT_FOUND
    assert not kf.has_key("task", "name")


def test_load_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        parse_keyfile("name=p\n")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[a[b]\nk=v\n", "Invalid group name: a[b"),
        ("[a\tb]\nk=v\n", "Invalid group name: a\tb"),
        ("[p]\n[x]y=1\n", "Invalid key name: [x]y"),
        ("[p]\nname[zh=1\n", "Invalid key name: name[zh"),
    ],
)
def test_more_parse_errors(text: str, message: str) -> None:
    with pytest.raises(KeyFileError) as ei:
        parse_keyfile(text)
    assert ei.value.code is KeyFileErrorCode.PARSE
    assert str(ei.value) == message


def test_encoding_key_in_first_group() -> None:
    assert parse_keyfile("[p]\nEncoding=utf-8\n").get_value("p", "Encoding") == "utf-8"
    with pytest.raises(KeyFileError) as ei:
        parse_keyfile("[p]\nEncoding=latin1\n")
    assert ei.value.code is KeyFileErrorCode.UNKNOWN_ENCODING
    # Only the first group is checked, as in glib.
    assert parse_keyfile("[p]\n[q]\nEncoding=latin1\n").has_key("q", "Encoding")


def test_c_locale_translation_is_kept() -> None:
    kf = parse_keyfile("[p]\nname[C]=x\nname[de]=y\n")
    assert kf.keys("p") == ["name[C]"]


def test_cr_only_dropped_before_newline() -> None:
    assert parse_keyfile("[p]\nk=a\r", strip_trailing=False).get_value("p", "k") == "a\r"
    assert parse_keyfile("[p]\nk=a\r").get_value("p", "k") == "a"
    assert parse_keyfile("[p]\r\nk=a\rb\r\n").get_value("p", "k") == "a\rb"


def test_escaped_trailing_space_survives_stripping() -> None:
    kf = parse_keyfile("[p]\nk=a\\s \n")
    assert kf.get_value("p", "k") == "a\\s"
    assert kf.get_string("p", "k") == "a "


@pytest.mark.parametrize(
    "text, expected",
    [("0", 0), ("-5", -5), ("+7", 7), ("0012", 12), ("99999999999999999999", 2**63 - 1)]
    + [("-99999999999999999999", -(2**63))],
)
def test_parse_int64_accepts(text: str, expected: int) -> None:
    assert parse_int64(text) == expected


@pytest.mark.parametrize("text", ["", "+", "-", " 1", "1 ", "0x1", "1e3", "1.0", "1_000", "١"])
def test_parse_int64_rejects(text: str) -> None:
    assert parse_int64(text) is None


@pytest.mark.parametrize(
    "text, expected",
    [("5.", 5.0), ("0x.8", 0.5), ("0X1P3", 8.0), ("-inf", -math.inf), ("Infinity", math.inf)]
    + [("1e400", math.inf), ("-0x10", -16.0)],
)
def test_parse_double_accepts(text: str, expected: float) -> None:
    assert parse_double(text) == expected


@pytest.mark.parametrize("text", ["", ".", "e5", "1e", "0x", "1_0", "infx", " 1", "0,5"])
def test_parse_double_rejects(text: str) -> None:
    assert parse_double(text) is None


def test_parse_double_nan_with_payload() -> None:
    assert math.isnan(parse_double("nan(123)"))


def test_unescape() -> None:
    assert unescape("a\\\\s") == "a\\s"
    assert unescape("x\\") is None
    assert unescape("plain") == "plain"
