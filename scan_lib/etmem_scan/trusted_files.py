"""The rules by which etmem trusts a file it reads or loads: what only root (or we) can write.

Two rules, each written once here; every caller names the rule it applies and words its own
messages from the :class:`Untrusted` verdict, because their texts are part of the interface:

* :func:`owned_by_root_with_mode` -- the original's rule for object files and vendor policy
  libraries: a regular file owned by root:root whose permission bits are exactly one of a
  short list;
* :func:`writable_only_by` -- the looser rule for the daemon's own files (etmemd.toml,
  libetmemd_scan.so, DAMON records): owned by one of a few uids and writable by nobody else.

:func:`untrusted_directory` applies the looser rule to the directories above a file, as the
object-file check does. Nothing here raises: the verdicts are facts, the errors the callers'.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass

#: Write permission for group or others.
GROUP_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


class Flaw(enum.Enum):
    """Which part of a rule a file fails, in the order the rules check them."""

    TYPE = "type"  #: not a regular file (or not a directory, where one is wanted)
    OWNER = "owner"  #: owned by a uid (or gid) the rule does not accept
    MODE = "mode"  #: permission bits the rule does not accept


@dataclass(frozen=True)
class Untrusted:
    """Why a file is not trusted: the first :class:`Flaw` found, and the stat it was found in."""

    flaw: Flaw
    st: os.stat_result
    #: the permission bits as the rule compared them
    mode: int


def owned_by_root_with_mode(
    st: os.stat_result, modes: Collection[int], *, mask: int = 0o7777
) -> Untrusted | None:
    """``None`` if ``st`` is a regular file owned by uid 0 and gid 0 whose permission bits
    (``S_IMODE`` under ``mask``) are one of ``modes``; else the first flaw found."""
    mode = stat.S_IMODE(st.st_mode) & mask
    if not stat.S_ISREG(st.st_mode):
        return Untrusted(Flaw.TYPE, st, mode)
    if st.st_uid != 0 or st.st_gid != 0:
        return Untrusted(Flaw.OWNER, st, mode)
    if mode not in modes:
        return Untrusted(Flaw.MODE, st, mode)
    return None


def writable_only_by(
    st: os.stat_result,
    owners: Collection[int],
    *,
    kind: Callable[[int], bool] | None = stat.S_ISREG,
    sticky_ok: bool = False,
) -> Untrusted | None:
    """``None`` if ``st`` is of ``kind`` (a regular file unless told; ``None``: any), owned by
    a uid in ``owners`` and not writable by group or others; else the first flaw found.

    ``sticky_ok``: a sticky directory may be writable by others (only root and the owner of a
    file can rename or remove it there).
    """
    mode = stat.S_IMODE(st.st_mode)
    if kind is not None and not kind(st.st_mode):
        return Untrusted(Flaw.TYPE, st, mode)
    if st.st_uid not in owners:
        return Untrusted(Flaw.OWNER, st, mode)
    if mode & GROUP_OTHER_WRITE and not (sticky_ok and mode & stat.S_ISVTX):
        return Untrusted(Flaw.MODE, st, mode)
    return None


def untrusted_directory(path: str | os.PathLike[str]) -> tuple[str, Untrusted | OSError] | None:
    """The first directory above ``path`` (its real location, up to ``/``) that root does not
    own alone -- not owned by root, or writable by group or others and not sticky -- with the
    verdict, or the error that stopped its ``stat``; ``None`` if every one passes."""
    directory = os.path.dirname(os.path.realpath(os.fspath(path)))
    while True:
        try:
            st = os.stat(directory)
        except OSError as e:
            return directory, e
        verdict = writable_only_by(st, (0,), kind=None, sticky_ok=True)
        if verdict is not None:
            return directory, verdict
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
