"""Checks an object file must pass before etmemd reads it.

An object file tells a root daemon which processes to act on, so, as in the original, only a
file that only root can have written is accepted: a regular file owned by uid 0 and gid 0 with
permission bits exactly ``0600`` or ``0400``, no larger than 10 MiB.

Two checks go beyond the original, as trusted daemons check their config paths: the name must
not be a symbolic link (the original resolves links, so anyone could point one at a root file
that is not an object file), and every directory from the file's up to ``/`` must be owned by
root and writable by nobody else (otherwise its owner could swap the file between the check
and the read). A root-owned sticky directory such as ``/tmp`` is accepted: there only root
can rename or remove root's files.

The rules live in :mod:`etmem_sdk.trusted_files`; this module words each refusal.
"""

from __future__ import annotations

import errno
import os
import stat

from etmem_sdk import ConfigError
from etmem_sdk.trusted_files import Flaw, owned_by_root_with_mode, untrusted_directory

#: Largest object file accepted (C ``MAX_CONFIG_FILE_SIZE``).
MAX_OBJECT_FILE_SIZE = 10 * 1024 * 1024
#: Permission bits accepted (C ``file_permission_check``).
ALLOWED_MODES = (0o600, 0o400)
_MODES_TEXT = " or ".join(f"{mode:04o}" for mode in ALLOWED_MODES)  # 0600 or 0400


def check_stat(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Raise :class:`ConfigError` unless ``st`` describes an acceptable object file.

    The message names the file, the check that failed and the actual type, owner, mode or size.
    """
    name = os.fspath(path)
    # setuid, setgid and sticky bits are not compared: 04600 passes as 0600
    verdict = owned_by_root_with_mode(st, ALLOWED_MODES, mask=0o777)
    if verdict is not None and verdict.flaw is Flaw.TYPE:
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"{name}: is {kind}; an object file must be a regular file")
    if verdict is not None and verdict.flaw is Flaw.OWNER:
        raise ConfigError(
            f"{name}: owned by {st.st_uid}:{st.st_gid}; an object file must be owned by root:root"
            " (uid 0, gid 0)"
        )
    if verdict is not None:
        raise ConfigError(
            f"{name}: mode {verdict.mode:04o}; an object file must have mode {_MODES_TEXT}"
        )
    if st.st_size > MAX_OBJECT_FILE_SIZE:
        raise ConfigError(
            f"{name}: size {st.st_size} bytes; an object file must be at most "
            f"{MAX_OBJECT_FILE_SIZE} bytes (10 MiB)"
        )


def check_parents(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ConfigError` unless every directory above ``path`` (its real location,
    up to ``/``) is owned by root and not writable by group or others (sticky excepted)."""
    name = os.fspath(path)
    found = untrusted_directory(name)
    if found is None:
        return
    directory, verdict = found
    if isinstance(verdict, OSError):
        raise ConfigError(f"{name}: directory {directory} cannot be read: {verdict.strerror}")
    if verdict.flaw is Flaw.OWNER:
        raise ConfigError(
            f"{name}: in directory {directory}, owned by uid {verdict.st.st_uid}; every "
            "directory above an object file must be owned by root"
        )
    raise ConfigError(
        f"{name}: in directory {directory}, mode {verdict.mode:04o}; every directory above an "
        "object file must be writable by root only"
    )


def _symlink(name: str) -> ConfigError:
    return ConfigError(f"{name}: is a symbolic link; an object file must be named by its own path")


def check_object_file(path: str | os.PathLike[str]) -> None:
    """Check the file at ``path`` (not a symlink, its directories root's only).

    Raises :class:`ConfigError` if it does not exist or fails a check; see :func:`check_stat`.
    """
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except OSError as e:
        raise ConfigError(f"{name}: cannot be read: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _symlink(name)
    check_stat(name, st)
    check_parents(name)


def read_object_file(path: str | os.PathLike[str]) -> bytes:
    """Open ``path``, check the opened file (not the name, so it cannot be swapped in between)
    and its directories, and return its bytes. Raises :class:`ConfigError` like
    :func:`check_object_file`.
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the daemon before the type check refuses it.
        # O_NOFOLLOW: a symlink fails with ELOOP instead of being followed.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _symlink(name) from None
        raise ConfigError(f"{name}: cannot be read: {e.strerror}") from None
    except ValueError:  # a NUL byte: no file is called that
        raise ConfigError(f"{name!r}: cannot be read: the name holds a NUL byte") from None
    try:
        st = os.fstat(fd)
        check_stat(name, st)
        check_parents(name)
        try:  # the directories checked are those of the file opened
            named = os.stat(os.path.realpath(name))
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            raise ConfigError(f"{name}: was replaced while it was being checked")
        chunks = []
        left = MAX_OBJECT_FILE_SIZE + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_OBJECT_FILE_SIZE:  # grew after the check
        raise ConfigError(f"{name}: larger than {MAX_OBJECT_FILE_SIZE} bytes (10 MiB)")
    return data
