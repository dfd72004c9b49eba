"""What the ``etmem_sdk.params`` getters return, checked by mypy (``scripts/test``), not run.

A getter gives the key's type when the key is required or a default is given, and ``| None``
otherwise; a default of another type is refused. Each ``type: ignore`` marks a call that must
not type-check: with ``warn_unused_ignores`` mypy fails if it ever does.
"""

from __future__ import annotations

from typing import assert_type

from etmem_sdk import params


def _results(s: dict[str, str], flag: bool) -> None:
    assert_type(params.get_int(s, "k"), int)
    assert_type(params.get_int(s, "k", 1, 2, required=False), int | None)
    assert_type(params.get_int(s, "k", required=False, default=3), int)
    assert_type(params.get_int(s, "k", required=flag), int | None)
    assert_type(params.get_int(s, "k", required=flag, default=3), int)
    assert_type(params.get_double(s, "k"), float)
    assert_type(params.get_double(s, "k", required=False), float | None)
    assert_type(params.get_double(s, "k", required=False, default=1.0), float)
    assert_type(params.get_str(s, "k"), str)
    assert_type(params.get_str(s, "k", required=False), str | None)
    assert_type(params.get_str(s, "k", required=False, default="x"), str)
    assert_type(params.get_choice(s, "k", ("a",)), str)
    assert_type(params.get_choice(s, "k", ("a",), required=False), str | None)
    assert_type(params.get_choice(s, "k", ("a",), required=flag, default="a"), str)
    assert_type(params.get_yes_no(s, "k"), bool)
    assert_type(params.get_yes_no(s, "k", required=flag), bool | None)
    assert_type(params.get_yes_no(s, "k", required=False, default=True), bool)


def _refused(s: dict[str, str]) -> None:
    params.get_int(s, "k", required=False, default="3")  # type: ignore[call-overload]
    params.get_str(s, "k", default=3)  # type: ignore[call-overload]
    params.get_yes_no(s, "k", required=False, default=1)  # type: ignore[call-overload]
