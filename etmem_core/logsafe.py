"""Log records that cannot forge lines or flood the log with what a client sent.

Messages quote object-file values and request words; a newline or an ANSI escape in one would
start a fake log line or repaint a terminal, and a 10 MiB value would be written whole. The
formatter escapes control characters and cuts each message (not the traceback, which is ours).
"""

from __future__ import annotations

import logging

from .protocol import safe_text

#: Longest message part of a log line.
LOG_MESSAGE_MAX = 4096


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message part is passed through ``safe_text``."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The line for ``record``, its message escaped and cut to :data:`LOG_MESSAGE_MAX`.

        ``format`` sets ``record.message`` afresh for every handler before calling this, so
        replacing it here changes no one else's view of the record (and costs no copy).
        """
        record.message = safe_text(record.message, LOG_MESSAGE_MAX)
        return super().formatMessage(record)
