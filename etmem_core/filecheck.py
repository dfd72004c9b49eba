"""Checks an object file must pass before etmemd reads it.

An object file tells a root daemon which processes to act on, so, as in the original, only a
file that only root can have written is accepted: a regular file owned by uid 0 and gid 0 with
permission bits exactly ``0600`` or ``0400``, no larger than 10 MiB.
"""

from __future__ import annotations

import os
import stat

from etmem_sdk import ConfigError

#: Largest object file accepted (C ``MAX_CONFIG_FILE_SIZE``).
MAX_OBJECT_FILE_SIZE = 10 * 1024 * 1024
#: Permission bits accepted (C ``file_permission_check``).
ALLOWED_MODES = (0o600, 0o400)


def check_stat(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Raise :class:`ConfigError` unless ``st`` describes an acceptable object file.

    The message names the file, the check that failed and the actual type, owner, mode or size.
    """
    name = os.fspath(path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"{name}: is {kind}; an object file must be a regular file")
    if st.st_uid != 0 or st.st_gid != 0:
        raise ConfigError(
            f"{name}: owned by {st.st_uid}:{st.st_gid}; an object file must be owned by root:root"
            " (uid 0, gid 0)"
        )
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if mode not in ALLOWED_MODES:
        raise ConfigError(f"{name}: mode {mode:04o}; an object file must have mode 0600 or 0400")
    if st.st_size > MAX_OBJECT_FILE_SIZE:
        raise ConfigError(
            f"{name}: size {st.st_size} bytes; an object file must be at most "
            f"{MAX_OBJECT_FILE_SIZE} bytes (10 MiB)"
        )


def check_object_file(path: str | os.PathLike[str]) -> None:
    """Check the file at ``path`` (symlinks followed, as the original resolves the path first).

    Raises :class:`ConfigError` if it does not exist or fails a check; see :func:`check_stat`.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{os.fspath(path)}: cannot be read: {e.strerror}") from None
    check_stat(path, st)


def read_object_file(path: str | os.PathLike[str]) -> bytes:
    """Open ``path``, check the opened file (not the name, so it cannot be swapped in between)
    and return its bytes. Raises :class:`ConfigError` like :func:`check_object_file`.
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not hang the daemon before the type check refuses it.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{name}: cannot be read: {e.strerror}") from None
    try:
        check_stat(name, os.fstat(fd))
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
