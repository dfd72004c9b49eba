"""Log records that cannot forge lines or flood the log with what a client sent.

Messages quote object-file values and request words; a newline or an ANSI escape in one would
start a fake log line or repaint a terminal, and a 10 MiB value would be written whole. The
formatter escapes control characters and cuts each message (not the traceback, which is ours).
"""

from __future__ import annotations

import copy
import logging

from .protocol import safe_text

#: Longest message part of a log line.
LOG_MESSAGE_MAX = 4096


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message part is passed through ``safe_text``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` with its message escaped and cut to :data:`LOG_MESSAGE_MAX`."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the stock path report it
            return super().format(record)
        safe = copy.copy(record)
        safe.msg, safe.args = safe_text(message, LOG_MESSAGE_MAX), None
        return super().format(safe)
