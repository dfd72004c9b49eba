"""Who made the kdamond: a record that lets a restarted etmemd take back its predecessor's.

DAMON's sysfs says nothing about who configured a kdamond, so the monitor never touches one it
did not create.  An etmemd killed with SIGKILL (or by the OOM killer) cannot remove its kdamond,
and without a record the next etmemd would refuse DAMON for good ("configured by someone
else").  So the monitor keeps, for as long as its kdamond exists, a record of it: the creating
process (pid, start time and boot, so a reused pid is not taken for it), the kdamond's thread
pid and the target pids it wrote.  A later process may remove a kdamond only when the record's
maker is dead and the kdamond is still exactly as recorded; anything else is left alone.

The record lives in ``$ETMEM_RUN_DIR/damon/`` (default ``/run/etmem``, a tmpfs: a reboot
forgets it together with the kdamond), one file per DAMON sysfs tree.  It is trusted only as a
regular file owned by the effective user in a directory of that user that nobody else may
write to (the looser rule of :mod:`etmem_scan.trusted_files`, with the effective user as owner).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from .trusted_files import writable_only_by

DEFAULT_RUN_DIR = "/run/etmem"


@dataclass(frozen=True)
class KdamondRecord:
    """What the maker of a kdamond wrote down about it."""

    maker_pid: int
    maker_start: str  # field 22 of /proc/PID/stat: tells a reused pid apart
    boot_id: str
    kdamond_pid: str  # the kdamond's thread pid ("" while it is off)
    targets: tuple[int, ...]  # pid_target of each target, in order


def run_dir() -> Path:
    return Path(os.environ.get("ETMEM_RUN_DIR") or DEFAULT_RUN_DIR)


def record_path(kdamonds: Path) -> Path:
    """The record of the kdamonds under the sysfs directory ``kdamonds``."""
    digest = hashlib.sha1(os.path.realpath(kdamonds).encode()).hexdigest()[:16]
    # in a folder of our own: the run dir itself may be shared (an emptyDir is mode 0777)
    return run_dir() / "damon" / f"{digest}.json"


def _start_time(pid: int, proc_root: str | os.PathLike[str]) -> str | None:
    try:
        with open(os.path.join(os.fspath(proc_root), str(pid), "stat"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _boot_id(proc_root: str | os.PathLike[str]) -> str:
    try:
        return Path(proc_root, "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_process(
    kdamond_pid: str, targets: list[int], proc_root: str | os.PathLike[str]
) -> KdamondRecord:
    pid = os.getpid()
    return KdamondRecord(
        pid, _start_time(pid, proc_root) or "", _boot_id(proc_root), kdamond_pid, tuple(targets)
    )


def maker_alive(rec: KdamondRecord, proc_root: str | os.PathLike[str]) -> bool:
    """Whether the process that wrote ``rec`` still runs (a record from before a reboot: no)."""
    if rec.boot_id != _boot_id(proc_root):
        return False
    return _start_time(rec.maker_pid, proc_root) == rec.maker_start


def _safe_dir(d: Path) -> bool:
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return writable_only_by(st, (os.geteuid(),), kind=stat.S_ISDIR) is None


def write(path: Path, rec: KdamondRecord) -> None:
    """Replace the record at ``path`` (atomically; the directory is made private if missing).
    Raises ``OSError`` when the directory is missing and cannot be made, or is not safe."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _safe_dir(path.parent):
        raise PermissionError(f"{path.parent}: not a private directory of this user")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(rec), f)
    os.replace(tmp, path)


def read(path: Path) -> KdamondRecord | None:
    """The record at ``path``, or ``None`` when there is none or it cannot be trusted."""
    if not _safe_dir(path.parent):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if writable_only_by(st, (os.geteuid(),)) is not None:
            return None
        try:
            doc = json.load(f)
            return KdamondRecord(
                int(doc["maker_pid"]),
                str(doc["maker_start"]),
                str(doc["boot_id"]),
                str(doc["kdamond_pid"]),
                tuple(int(p) for p in doc["targets"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
