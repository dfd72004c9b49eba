"""Process views from /proc: VMAs (the original's maps/smaps rules), status and meminfo.

Every reader takes ``proc_root`` so tests can point it at a fake tree.  A process that is gone
(no /proc/PID, or it vanished while being read) raises :class:`etmem_scan.errors.TargetGone`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .errors import ConfigError, TargetGone

__all__ = [
    "Vma",
    "check_vmflags",
    "parse_maps",
    "proc_path",
    "read_meminfo",
    "read_smaps_fields",
    "read_status",
    "read_vmas",
]


@dataclass(frozen=True, slots=True)
class Vma:
    """One mapping of a process, as a line of /proc/PID/maps describes it.

    ``perms`` is the four-character field (``rw-p``); ``major``/``minor`` are the hex device
    numbers as printed; ``path`` is the rest of the line (empty for anonymous memory, never with
    a trailing newline, spaces kept); ``vmflags`` is the smaps ``VmFlags`` tokens when the VMA
    came from smaps, else ``None``.
    """

    start: int
    end: int
    perms: str
    offset: int
    major: str
    minor: str
    inode: int
    path: str = ""
    vmflags: tuple[str, ...] | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def readable(self) -> bool:
        return self.perms[0:1] == "r"

    @property
    def writable(self) -> bool:
        return self.perms[1:2] == "w"

    @property
    def exec(self) -> bool:
        return self.perms[2:3] == "x"

    @property
    def may_share(self) -> bool:
        # The kernel prints 'p' for private and 's' for shared; anything but 'p' may share.
        return self.perms[3:4] != "p"

    @property
    def is_anonymous(self) -> bool:
        """The original's rule: private, not executable, and either no file or writable.

        So a private writable file mapping (a data segment, a MAP_PRIVATE file copy) counts.
        """
        if self.may_share or self.exec:
            return False
        return self.inode == 0 or self.writable


def proc_path(pid: int | str, name: str, proc_root: str | os.PathLike[str] = "/proc") -> str:
    """``<proc_root>/<pid>/<name>``."""
    return os.path.join(os.fspath(proc_root), str(pid), name)


def _read_text(path: str, pid: int | str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError) as e:
        raise TargetGone(f"process {pid} is gone ({path}: {e.strerror})") from e


def check_vmflags(vmflags: Iterable[str]) -> tuple[str, ...]:
    """Validate requested VmFlags tokens the way the original does: exactly two characters, no
    space.  Raises :class:`ConfigError` naming the bad flag."""
    flags = tuple(vmflags)
    for flag in flags:
        if not isinstance(flag, str) or len(flag) != 2 or " " in flag:
            raise ConfigError(f"vm flag {flag!r}: must be exactly 2 characters without spaces")
    return flags


def _parse_header(line: str) -> Vma | None:
    # start-end perms offset major:minor inode [path]; the path is what follows the inode's
    # padding, kept whole (the original cut it at the first space and kept the newline).
    parts = line.split(None, 5)
    if len(parts) < 5 or "-" not in parts[0] or ":" not in parts[3]:
        return None
    try:
        lo, hi = parts[0].split("-", 1)
        major, minor = parts[3].split(":", 1)
        return Vma(
            start=int(lo, 16),
            end=int(hi, 16),
            perms=parts[1],
            offset=int(parts[2], 16),
            major=major,
            minor=minor,
            inode=int(parts[4]),
            path=parts[5].rstrip("\n") if len(parts) > 5 else "",
        )
    except ValueError:
        return None


def parse_maps(
    text: str, vmflags: Sequence[str] | None = None, anon_only: bool = True
) -> list[Vma]:
    """Parse maps text (or smaps text when ``vmflags`` is given) into VMAs, in file order.

    With ``vmflags`` a VMA is kept only if every requested flag occurs in its ``VmFlags`` line
    (as a substring of the text after the colon, as the original matches).  With ``anon_only``
    only VMAs passing :attr:`Vma.is_anonymous` are kept.
    """
    want = check_vmflags(vmflags) if vmflags else ()
    smaps = vmflags is not None
    out: list[Vma] = []
    current: Vma | None = None

    def keep(vma: Vma | None, flags_text: str | None) -> None:
        if vma is None:
            return
        if smaps:
            if flags_text is None:
                return  # header without a VmFlags line: cannot prove the flags
            if any(f not in flags_text for f in want):
                return
            vma = replace(vma, vmflags=tuple(flags_text.split()))
        if anon_only and not vma.is_anonymous:
            return
        out.append(vma)

    flags_text: str | None = None
    for line in text.splitlines():
        if not line:
            continue
        if smaps and line.startswith("VmFlags:"):
            flags_text = line.split(":", 1)[1]
            continue
        head = line.split(None, 1)[0]
        if "-" in head and not head.endswith(":"):
            vma = _parse_header(line)
            if vma is not None:
                keep(current, flags_text)
                current, flags_text = vma, None
    keep(current, flags_text)
    return out


def read_vmas(
    pid: int | str,
    vmflags: Sequence[str] | None = None,
    anon_only: bool = True,
    proc_root: str | os.PathLike[str] = "/proc",
) -> list[Vma]:
    """The VMAs of ``pid``: from ``maps``, or from ``smaps`` when ``vmflags`` are requested.

    See :func:`parse_maps` for the filters.  Raises :class:`TargetGone` if the process is gone,
    :class:`ConfigError` for a malformed flag.
    """
    if vmflags is not None:
        check_vmflags(vmflags)
    name = "maps" if vmflags is None else "smaps"
    return parse_maps(_read_text(proc_path(pid, name, proc_root), pid), vmflags, anon_only)


def read_smaps_fields(
    pid: int | str, keys: Sequence[str], proc_root: str | os.PathLike[str] = "/proc"
) -> dict[str, np.ndarray]:
    """Per-VMA numbers from /proc/PID/smaps, every VMA in file order.

    Returns ``{"start": uint64[], "end": uint64[], key: int64[] ...}`` with each requested
    ``key`` (``Rss``, ``Referenced``, ``Swap`` … in kB; 0 where a VMA lacks the line).
    """
    text = _read_text(proc_path(pid, "smaps", proc_root), pid)
    starts: list[int] = []
    ends: list[int] = []
    cols: dict[str, list[int]] = {k: [] for k in keys}
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        if sep and head in cols:
            words = rest.split()
            if words and words[0].isdigit() and starts:
                cols[head][-1] = int(words[0])
            continue
        first = line.split(" ", 1)[0]
        if "-" in first and not first.endswith(":"):  # a VMA header line
            lo, _, hi = first.partition("-")
            try:
                starts.append(int(lo, 16))
                ends.append(int(hi, 16))
            except ValueError:
                continue
            for col in cols.values():
                col.append(0)
    out = {"start": np.array(starts, dtype=np.uint64), "end": np.array(ends, dtype=np.uint64)}
    for k, col in cols.items():
        out[k] = np.array(col, dtype=np.int64)
    return out


def _parse_kb_lines(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        words = rest.split()
        if words and words[0].isdigit() and (len(words) == 1 or words[1] == "kB"):
            out.setdefault(key.strip(), int(words[0]))
    return out


def read_status(pid: int | str, proc_root: str | os.PathLike[str] = "/proc") -> dict[str, int]:
    """Numeric fields of /proc/PID/status (``VmRSS``, ``VmSwap`` … in kB; counts as numbers).

    Kernel threads have no ``Vm*`` lines; callers use ``.get(key, 0)``.
    """
    return _parse_kb_lines(_read_text(proc_path(pid, "status", proc_root), pid))


def read_meminfo(proc_root: str | os.PathLike[str] = "/proc") -> dict[str, int]:
    """/proc/meminfo as ``{"MemTotal": kB, "MemFree": kB, "SwapTotal": kB, ...}``."""
    with open(os.path.join(os.fspath(proc_root), "meminfo"), encoding="ascii") as f:
        return _parse_kb_lines(f.read())
