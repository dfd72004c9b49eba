"""etmem_sdk.params: conversions, rules and the wording of every rejection."""

from __future__ import annotations

import math

import etmem_sdk
import pytest
from etmem_sdk import ConfigError, ConfigSection
from etmem_sdk import params as P


def sec(group: str = "project", label: str = "x.conf", **items: str) -> ConfigSection:
    return ConfigSection(group, items, path=f"/etc/etmem/{label}", label=label)


def test_exported_from_package() -> None:
    assert etmem_sdk.params is P
    assert "params" in etmem_sdk.__all__


# --- get_int ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, value", [("1", 1), ("120", 120), ("+5", 5), ("010", 10), ("-0", 0)])
def test_get_int_accepts(raw: str, value: int) -> None:
    assert P.get_int(sec(loop=raw), "loop", -10, 120) == value


@pytest.mark.parametrize("raw", ["0", "121", "abc", "", "1.0", "0x10", "1e3", " 1", "1 ", "１"])
def test_get_int_rejects_with_full_message(raw: str) -> None:
    with pytest.raises(ConfigError) as ei:
        P.get_int(sec("project", "slide_conf.yaml", loop=raw), "loop", 1, 120)
    assert (
        str(ei.value) == f"slide_conf.yaml: [project] loop={raw}: must be an integer from 1 to 120"
    )


@pytest.mark.parametrize(
    "raw",
    ["2147483648", "4294967297", "-2147483649", "9223372036854775807", "99999999999999999999"],
)
def test_get_int_rejects_what_c_would_wrap(raw: str) -> None:
    # C casts the int64 to int: 4294967297 would become 1 and pass a 1..120 check.
    with pytest.raises(ConfigError, match=r"must be an integer from -2147483648 to 2147483647"):
        P.get_int(sec(v=raw), "v")
    with pytest.raises(ConfigError, match=r"loop=.*: must be an integer from 1 to 120"):
        P.get_int(sec(loop=raw), "loop", 1, 120)


def test_get_int_limits_of_int32() -> None:
    assert P.get_int(sec(v="2147483647"), "v") == P.INT32_MAX
    assert P.get_int(sec(v="-2147483648"), "v") == P.INT32_MIN


def test_get_int_64_bits() -> None:
    assert P.get_int(sec(v="4294967295"), "v", 0, bits=64) == 4294967295
    with pytest.raises(ConfigError, match=r"from 0 to 9223372036854775807"):
        P.get_int(sec(v="-1"), "v", 0, bits=64)
    with pytest.raises(ConfigError, match=r"from 0 to 9223372036854775807"):
        P.get_int(sec(v="9223372036854775808"), "v", 0, bits=64)


def test_get_int_missing() -> None:
    with pytest.raises(ConfigError) as ei:
        P.get_int(sec(name="p"), "loop", 1, 120)
    assert str(ei.value) == "x.conf: [project] loop: key not set"
    assert P.get_int(sec(), "loop", 1, 120, required=False) is None
    assert P.get_int(sec(), "loop", 1, 120, required=False, default=7) == 7


def test_one_sided_bounds() -> None:
    assert P.get_int(sec(v="3"), "v", lo=3) == 3
    with pytest.raises(ConfigError, match="from 3 to 2147483647"):
        P.get_int(sec(v="2"), "v", lo=3)
    with pytest.raises(ConfigError, match="from -2147483648 to 5"):
        P.get_int(sec(v="6"), "v", hi=5)


# --- get_double ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, value", [("0.1", 0.1), (".5", 0.5), ("1e-2", 0.01), ("3", 3.0)])
def test_get_double_accepts(raw: str, value: float) -> None:
    assert P.get_double(sec("task", pressure=raw), "pressure", above=0) == value


@pytest.mark.parametrize("raw", ["0", "-0.1", "0,5", "", "abc", "nan", "0.1 "])
def test_get_double_rejects(raw: str) -> None:
    with pytest.raises(ConfigError) as ei:
        P.get_double(sec("task", "psi.conf", pressure=raw), "pressure", above=0)
    assert str(ei.value) == f"psi.conf: [task] pressure={raw}: must be a number greater than 0"


def test_get_double_unbounded_takes_c_syntax() -> None:
    assert P.get_double(sec(v="0x1p-2"), "v") == 0.25
    assert math.isinf(P.get_double(sec(v="inf"), "v"))
    assert math.isnan(P.get_double(sec(v="nan"), "v"))
    assert P.get_double(sec(), "v", required=False, default=0.5) == 0.5
    with pytest.raises(ConfigError, match=r"must be a number at least 1 and at most 2"):
        P.get_double(sec(v="2.5"), "v", lo=1, hi=2)


# --- get_str / get_choice / get_yes_no ----------------------------------------------------------


def test_get_str() -> None:
    assert P.get_str(sec(name="p"), "name", max_len=64) == "p"
    assert P.get_str(sec(name="a" * 64), "name", max_len=64) == "a" * 64
    with pytest.raises(ConfigError) as ei:
        P.get_str(sec(name="a" * 65), "name", max_len=64)
    assert str(ei.value) == (
        f"x.conf: [project] name={'a' * 65}: must be at most 64 characters (got 65)"
    )
    with pytest.raises(ConfigError, match=r"^x.conf: \[project\] name=: must not be empty$"):
        P.get_str(sec(name=""), "name")
    with pytest.raises(ConfigError, match=r"name: key not set"):
        P.get_str(sec(), "name")
    assert P.get_str(sec(), "name", required=False, default="d") == "d"


def test_get_str_refuses_undecodable_bytes() -> None:
    with pytest.raises(ConfigError) as ei:
        P.get_str(sec(name="a\udcff"), "name")
    assert str(ei.value) == "x.conf: [project] name=a\\xff: must be valid UTF-8"
    str(ei.value).encode()  # printable, sendable


def test_get_choice() -> None:
    s = sec(scan_type="region")
    assert P.get_choice(s, "scan_type", ("page", "region", "psi")) == "region"
    with pytest.raises(ConfigError) as ei:
        P.get_choice(sec(scan_type="Page"), "scan_type", ("page", "region", "psi"))
    assert str(ei.value) == "x.conf: [project] scan_type=Page: must be one of page, region, psi"
    assert P.get_choice(sec(), "scan_type", ("page",), required=False, default="page") == "page"


@pytest.mark.parametrize("raw, value", [("yes", True), ("no", False)])
def test_get_yes_no_accepts(raw: str, value: bool) -> None:
    assert P.get_yes_no(sec("task", swap_flag=raw), "swap_flag") is value


@pytest.mark.parametrize("raw", ["YES", "NO", "", "wrong", "Yes", "y", "1"])
def test_get_yes_no_rejects(raw: str) -> None:
    with pytest.raises(ConfigError) as ei:
        P.get_yes_no(sec("task", swap_flag=raw), "swap_flag")
    assert str(ei.value) == f"x.conf: [task] swap_flag={raw}: must be yes or no"


def test_get_yes_no_default() -> None:
    assert P.get_yes_no(sec("task"), "swap_flag", required=False, default=False) is False
    with pytest.raises(ConfigError, match=r"\[task\] anon_only: key not set"):
        P.get_yes_no(sec("task"), "anon_only")


# --- error helpers ------------------------------------------------------------------------------


def test_error_for_engine_rules() -> None:
    e = P.error(sec("task", "s.conf", T="10"), "T", "must be at most 3 * loop (3)")
    assert isinstance(e, ConfigError)
    assert str(e) == "s.conf: [task] T=10: must be at most 3 * loop (3)"
    assert str(P.missing(sec("engine", "e.conf"), "node_pair")) == (
        "e.conf: [engine] node_pair: key not set"
    )


def test_plain_mapping_still_gives_a_message() -> None:
    with pytest.raises(ConfigError, match=r"^<config>: \[\?\] v=x: must be an integer"):
        P.get_int({"v": "x"}, "v")


# --- C number syntax ----------------------------------------------------------------------------


def test_parse_c_int64_clamps_like_glib() -> None:
    assert P.parse_c_int64("9223372036854775808") == P.INT64_MAX
    assert P.parse_c_int64("-9223372036854775809") == P.INT64_MIN
    assert P.parse_c_int64("12abc") is None


def test_parse_c_double() -> None:
    assert P.parse_c_double("0x10") == 16.0
    assert P.parse_c_double("1e3") == 1000.0
    assert P.parse_c_double("0,5") is None
