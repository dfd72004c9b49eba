"""etmem_sdk.keyfile: the one key-file writer gives every value back, to etmem's reader and to
glib's (where the machine has libglib)."""

from __future__ import annotations

import ctypes.util

import pytest
from etmem_sdk.keyfile import keyfile_text

from etmem_core.keyfile import parse_keyfile

AWKWARD = {"a": " lead", "b": "trail ", "c": "tab\there", "d": "line\nbreak", "e": "back\\"}


def test_values_round_trip_through_etmems_reader() -> None:
    kf = parse_keyfile(keyfile_text([("g", AWKWARD)]))
    assert {k: kf.get_string("g", k) for k in AWKWARD} == AWKWARD


def test_values_round_trip_through_glib() -> None:
    if ctypes.util.find_library("glib-2.0") is None:
        pytest.skip("libglib-2.0 is not installed")
    from etmem_thirdparty_so import glib

    with glib.keyfile(keyfile_text([("g", AWKWARD), ("h", {"x": "1"})])) as kf:
        assert {k: glib.get_string(kf, "g", k) for k in AWKWARD} == AWKWARD
        assert glib.get_string(kf, "h", "x") == "1"


def test_groups_keep_their_order_each_followed_by_an_empty_line() -> None:
    assert keyfile_text([("b", {"k": "v"}), ("a", {})]) == "[b]\nk=v\n\n[a]\n"
