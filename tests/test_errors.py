"""OptCode values and wire texts match the C daemon's table (etmemd_rpc.c)."""

from __future__ import annotations

import pytest

from etmem_core.errors import OptCode, OptError

C_TABLE = {
    1: ("OPT_INVAL", "error: invalid parameters"),
    2: ("OPT_PRO_EXISTED", "error: project has been existed"),
    3: ("OPT_PRO_STARTED", "error: project has been started"),
    4: ("OPT_PRO_STOPPED", "error: project has been stopped"),
    5: ("OPT_PRO_NOEXIST", "error: project is not exist"),
    6: ("OPT_ENG_EXISTED", "error: engine has been existed"),
    7: ("OPT_ENG_NOEXIST", "error: engine is not exist"),
    8: ("OPT_TASK_EXISTED", "error: task has been existed"),
    9: ("OPT_TASK_NOEXIST", "error: task is not exist"),
    10: (
        "OPT_INTER_ERR",
        "error: etmemd has internal error, see reason details in messages",
    ),
}


@pytest.mark.parametrize("value", sorted(C_TABLE))
def test_codes_and_texts_match_c(value: int) -> None:
    name, text = C_TABLE[value]
    code = OptCode(value)
    assert code.name == name
    assert code.text == text
    assert not code.text.endswith("\n")


def test_success_is_zero_without_text() -> None:
    assert OptCode.OPT_SUCCESS == 0
    assert OptCode.OPT_SUCCESS.text == ""
    assert len(OptCode) == 11


def test_opt_error_carries_code_and_reason() -> None:
    err = OptError(OptCode.OPT_PRO_EXISTED, "project p already added")
    assert err.code is OptCode.OPT_PRO_EXISTED
    assert err.reason == "project p already added"
    assert str(err) == "project p already added"
    assert err.text == "error: project has been existed"


def test_opt_error_accepts_int_and_defaults_reason() -> None:
    err = OptError(5)  # type: ignore[arg-type]
    assert err.code is OptCode.OPT_PRO_NOEXIST
    assert err.reason == "error: project is not exist"


def test_opt_error_refuses_success() -> None:
    with pytest.raises(ValueError):
        OptError(OptCode.OPT_SUCCESS, "nothing failed")
