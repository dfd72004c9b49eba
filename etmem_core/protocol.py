"""The etmem wire protocol between ``etmem`` and ``etmemd``: pure encode/decode, no sockets.

A request is one ASCII line without terminator::

    proj_name <P> file_name <F> cmd <N> eng_name <E> eng_cmd <C> task_name <T>

with ``-`` standing for an absent value. The reply is a byte stream: the command's text output,
on failure the error text (no newline), then one marker byte, 0xFF for success or 0xFE for
failure. These formats are the original etmem's, byte for byte, so either side can talk to the
C original.
"""

from __future__ import annotations

from collections import namedtuple
from enum import IntEnum

#: Longest request either side accepts (the C client's send buffer; 512 itself is allowed).
REQUEST_MAX = 512
#: Longest socket name: sun_path holds 108 bytes, minus the leading NUL and C's own terminator.
SOCKET_NAME_MAX = 106
#: The C client reads the reply in chunks of this size; the chunk-end rule depends on it.
RECV_CHUNK = 511
#: Seconds either side waits for the other before giving up (the C client's SO_RCVTIMEO).
TIMEOUT = 10.0

SUCCESS_MARK = 0xFF
FAILURE_MARK = 0xFE

#: Field names in the only order the original daemon accepts.
FIELDS = ("proj_name", "file_name", "cmd", "eng_name", "eng_cmd", "task_name")
ABSENT = "-"

#: ``eng_cmd`` value that turns ``project show`` (cmd 4) into a JSON listing. The original client
#: always sends ``-`` there and the original daemon ignores it, so this extension is invisible to
#: both and an original daemon simply answers with its table.
SHOW_JSON = "json"


class Cmd(IntEnum):
    """Request codes (C ``enum etmem_cmd``)."""

    OBJ_ADD = 0
    OBJ_DEL = 1
    PROJ_START = 2
    PROJ_STOP = 3
    PROJ_SHOW = 4
    ENG_CMD = 5


class ProtocolError(ValueError):
    """A request or socket name that cannot go on (or came off) the wire; the text says why."""


# A named tuple, not a dataclass: the client imports this module, and dataclasses (with the
# inspect module it loads) would be a fifth of its start-up.
class Request(
    namedtuple(
        "Request",
        ("cmd", "proj_name", "file_name", "eng_name", "eng_cmd", "task_name"),
        defaults=(None, None, None, None, None),
    )
):
    """One decoded request: ``cmd`` (a :class:`Cmd`) and the names, each a ``str`` or ``None``
    where the field was absent (``-`` on the wire)."""

    __slots__ = ()


def check_socket_name(name: str) -> None:
    """Raise :class:`ProtocolError` unless ``name`` fits an abstract unix address (1..106)."""
    if not name:
        raise ProtocolError("socket name must not be empty")
    size = len(name.encode())
    if size > SOCKET_NAME_MAX:
        raise ProtocolError(
            f"socket name is {size} bytes long, at most {SOCKET_NAME_MAX} are allowed"
        )
    if "\0" in name:
        raise ProtocolError("socket name must not contain a NUL byte")


def socket_address(name: str) -> str:
    """The abstract-namespace address for ``name`` (the kernel sees ``\\0`` + name, no NUL)."""
    check_socket_name(name)
    return "\0" + name


def encode_request(req: Request) -> bytes:
    """The request line exactly as the C client sends it; raises if longer than 512 bytes."""

    def show(value: str | None) -> str:
        return ABSENT if value is None else value

    # A space would shift every later field (etmemd would then refuse the request with a
    # confusing word count); say which value cannot go on the wire instead.
    for field in FIELDS:
        value = getattr(req, field, None)
        if isinstance(value, str) and any(c.isspace() or not c.isprintable() for c in value):
            raise ProtocolError(
                f"{field} {value!r} cannot be sent: etmem requests cannot carry spaces or "
                "control characters"
            )

    text = (
        f"proj_name {show(req.proj_name)} file_name {show(req.file_name)} cmd {int(req.cmd)} "
        f"eng_name {show(req.eng_name)} eng_cmd {show(req.eng_cmd)} task_name {show(req.task_name)}"
    )
    data = text.encode()
    if len(data) > REQUEST_MAX:
        raise ProtocolError(f"request is {len(data)} bytes long, at most {REQUEST_MAX} are allowed")
    return data


#: Seconds a server waits for more bytes once a request could be whole (twelve words seen).
#: The request has no terminator: its last value may still be arriving ("task_name t" + "1").
#: Our client half-closes after sending, so the end of stream says "complete" at once; the C
#: client does not, and pays this wait.
SPLIT_GRACE = 0.05


def request_complete(data: bytes) -> bool:
    """Whether ``data`` holds all twelve words of a request, so it *may* be complete.

    The request has no terminator; the original daemon decodes whatever its single ``recv``
    returned. Its last value can still be growing when this turns true, so a server decodes
    only at the end of stream, at :data:`REQUEST_MAX`, or after :data:`SPLIT_GRACE` seconds
    without more bytes; a server that reads again while this is false copes with a request
    split anywhere earlier.
    """
    return data.count(b" ") >= 2 * len(FIELDS) - 1 or len(data) > REQUEST_MAX


def _is_decimal(text: str) -> bool:
    """1 to 9 ASCII digits (str methods, not a regular expression: the client imports this
    module and ``re`` would be a good part of its start-up)."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


#: what a request may not contain: C0 controls and DEL, deleted in one C-level pass to test for
#: them (not a step per character: this runs for every request, a flood of them included; and
#: not a regular expression, which the client would have to import)
_REQUEST_CONTROL = bytes(range(0x20)) + b"\x7f"


def decode_request(untrusted: bytes) -> Request:
    """Parse a request; raise :class:`ProtocolError` naming what is wrong.

    Stricter about layout than the original (exactly single spaces, nothing trailing) but not
    about values: a value may start with ``-`` (the C parser loses its place on those); only a
    lone ``-`` means absent.
    """
    if len(untrusted) > REQUEST_MAX:
        raise ProtocolError(
            f"request is {len(untrusted)} bytes long, at most {REQUEST_MAX} are allowed"
        )
    try:
        text = untrusted.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"request is not valid UTF-8 (byte {exc.start})") from None
    if not text:
        raise ProtocolError("empty request")
    if len(untrusted.translate(None, _REQUEST_CONTROL)) != len(untrusted):
        raise ProtocolError("request contains control characters")
    words = text.split(" ")
    if len(words) != 2 * len(FIELDS):
        raise ProtocolError(
            f"request has {len(words)} space-separated words, expected {2 * len(FIELDS)} "
            f"({' '.join(f + ' <value>' for f in FIELDS)}); values cannot contain spaces"
        )
    values: dict[str, str | None] = {}
    for i, field in enumerate(FIELDS):
        key, value = words[2 * i], words[2 * i + 1]
        if key != field:
            raise ProtocolError(f"word {2 * i + 1} is {key[:32]!r}, expected {field!r}")
        if value == "":
            raise ProtocolError(f"{field} has an empty value (use '-' for none)")
        values[field] = None if value == ABSENT else value
    raw_cmd = values.pop("cmd")
    if raw_cmd is None or not _is_decimal(raw_cmd):
        raise ProtocolError(f"cmd must be a decimal number, got {raw_cmd or ABSENT!r}")
    cmd = int(raw_cmd)
    if cmd not in Cmd._value2member_map_:
        raise ProtocolError(f"unknown cmd {cmd} (known: 0 to {max(Cmd)})")
    return Request(cmd=cmd, **values)


def reply_end(error: str | None) -> bytes:
    """What ends a reply: nothing + 0xFF on success, the error text + 0xFE on failure."""
    if error is None:
        return bytes([SUCCESS_MARK])
    return clean_output(error.encode()) + bytes([FAILURE_MARK])


#: Longest reason text a failure reply or a log message carries; longer ones are cut, marked.
TEXT_MAX = 1024

#: C0, DEL and C1 control characters, each to its ``\xNN`` (for ``str.translate``).
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def safe_text(text: str, limit: int = TEXT_MAX) -> str:
    """``text`` fit for one line of a reply or a log: control characters (newlines, ANSI
    escapes, C1) shown as ``\\xNN``, and at most ``limit`` characters, the cut marked, so a
    value can neither forge a line nor be echoed back megabytes long."""
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = text.translate(_CONTROL_ESCAPES)
    if cut > 0:
        text += f"... [{cut} more characters]"
    return text


def clean_output(data: bytes) -> bytes:
    """Drop the two marker bytes from command output so they cannot end a reply early."""
    return data.replace(b"\xff", b"").replace(b"\xfe", b"")


class ReplyDecoder:
    """Client side of the reply stream, with the C client's chunk-end rule.

    The C client looks only at the last byte of each ``recv`` chunk: 0xFF ends the reply with
    success (the byte is dropped), 0xFE ends it with failure (the byte becomes a newline);
    anything else is output and reading goes on. Feed it chunks read with :data:`RECV_CHUNK`.
    """

    def __init__(self) -> None:
        self.done = False
        self.success = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume one received chunk (non-empty) and return the bytes to print."""
        if self.done:
            raise ProtocolError("reply already ended")
        if not chunk:
            raise ValueError("an empty chunk means the peer closed; handle that before feeding")
        last = chunk[-1]
        if last == SUCCESS_MARK:
            self.done = self.success = True
            return chunk[:-1]
        if last == FAILURE_MARK:
            self.done = True
            return chunk[:-1] + b"\n"
        return chunk
