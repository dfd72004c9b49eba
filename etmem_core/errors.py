"""Result codes of etmemd requests (C ``enum opt_result``) and the exception that carries them.

The codes and their texts are what the client prints after a failed request, so they are kept
byte-exact; the detailed reason travels separately (logs, our own client's hint).
"""

from __future__ import annotations

from enum import IntEnum


class OptCode(IntEnum):
    """C's ``OPT_*`` results, with the value they have on the C side."""

    OPT_SUCCESS = 0
    OPT_INVAL = 1
    OPT_PRO_EXISTED = 2
    OPT_PRO_STARTED = 3
    OPT_PRO_STOPPED = 4
    OPT_PRO_NOEXIST = 5
    OPT_ENG_EXISTED = 6
    OPT_ENG_NOEXIST = 7
    OPT_TASK_EXISTED = 8
    OPT_TASK_NOEXIST = 9
    OPT_INTER_ERR = 10

    @property
    def text(self) -> str:
        """The error line the daemon sends for this code (no newline); empty for success."""
        return _TEXTS[self]


_TEXTS = {
    OptCode.OPT_SUCCESS: "",
    OptCode.OPT_INVAL: "error: invalid parameters",
    OptCode.OPT_PRO_EXISTED: "error: project has been existed",
    OptCode.OPT_PRO_STARTED: "error: project has been started",
    OptCode.OPT_PRO_STOPPED: "error: project has been stopped",
    OptCode.OPT_PRO_NOEXIST: "error: project is not exist",
    OptCode.OPT_ENG_EXISTED: "error: engine has been existed",
    OptCode.OPT_ENG_NOEXIST: "error: engine is not exist",
    OptCode.OPT_TASK_EXISTED: "error: task has been existed",
    OptCode.OPT_TASK_NOEXIST: "error: task is not exist",
    OptCode.OPT_INTER_ERR: "error: etmemd has internal error, see reason details in messages",
}


class OptError(Exception):
    """A request failed with ``code``; ``reason`` says why in detail (for logs and hints).

    ``str(err)`` is the reason, so logging the exception logs something useful; the wire text
    is ``err.code.text``.
    """

    def __init__(self, code: OptCode, reason: str = "") -> None:
        if code == OptCode.OPT_SUCCESS:
            raise ValueError("OptError needs a failure code")
        self.code = OptCode(code)
        self.reason = reason or self.code.text
        super().__init__(self.reason)

    @property
    def text(self) -> str:
        """The wire text of the code."""
        return self.code.text

    def __repr__(self) -> str:
        return f"OptError({self.code.name}, {self.reason!r})"
