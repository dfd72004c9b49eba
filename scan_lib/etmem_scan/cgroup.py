"""Memory cgroups and pressure stall information (PSI): readers and the ``memory.reclaim`` writer.

Two layouts carry what proactive reclaim needs:

* cgroup v2 (stock kernels >= 5.19): one tree, ``memory.pressure``, ``memory.current``,
  ``memory.stat`` and ``memory.reclaim`` side by side in every cgroup below a root that has the
  memory controller; mounted at ``<sys>/fs/cgroup`` (or ``<sys>/fs/cgroup/unified`` on hybrid
  systems);
* openEuler's cgroup v1: the pressure file lives in the ``cpuacct`` hierarchy, the memory
  files (``memory.usage_in_bytes``, ``memory.reclaim`` ...) under the same relative path in
  the ``memory`` hierarchy -- the layout the original etmem's psi engine reads.

Every reader takes ``sys_root`` / ``proc_root`` so tests run on fake trees. PSI values are the
kernel's: ``avg10``/``avg60``/``avg300`` in percent of wall time, ``total`` in microseconds.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from dataclasses import dataclass

from .errors import EngineError

__all__ = [
    "CGROUP_V1",
    "CGROUP_V2",
    "PSI_WINDOWS",
    "CgroupGone",
    "CgroupLayout",
    "CgroupUnavailable",
    "MemoryState",
    "Pressure",
    "detect_layout",
    "expand_braces",
    "parse_psi",
    "pid_pressure_path",
    "read_psi",
    "system_pressure_path",
]

CGROUP_V2, CGROUP_V1 = "v2", "v1"
#: The averaging windows a PSI line has (the ``total`` counter is not a window).
PSI_WINDOWS = ("avg10", "avg60", "avg300")
#: A v1 limit above this means "no limit" (the kernel reports PAGE_COUNTER_MAX in bytes).
_V1_UNLIMITED = (2**63 - 1) // 2

_PSI_LINE = re.compile(
    r"(some|full) avg10=([0-9.]+) avg60=([0-9.]+) avg300=([0-9.]+) total=([0-9]+)", re.ASCII
)


class CgroupUnavailable(EngineError):
    """This machine cannot do cgroup proactive reclaim; the message says what is missing."""


class CgroupGone(EngineError):
    """A cgroup vanished (removed) while it was read or written."""


@dataclass(frozen=True, slots=True)
class Pressure:
    """One line (``some`` or ``full``) of a PSI file."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int

    def window(self, name: str) -> float:
        """The average over window ``name`` (one of :data:`PSI_WINDOWS`), in percent."""
        if name not in PSI_WINDOWS:
            raise ValueError(f"unknown PSI window {name!r}")
        return float(getattr(self, name))


def parse_psi(text: str) -> dict[str, Pressure]:
    """``{"some": Pressure, "full": Pressure}`` from a PSI file's text (``full`` may be absent:
    the system-wide CPU file had none before 5.13). Raises ``ValueError`` without a ``some``."""
    found: dict[str, Pressure] = {}
    for m in _PSI_LINE.finditer(text):
        found[m.group(1)] = Pressure(
            float(m.group(2)), float(m.group(3)), float(m.group(4)), int(m.group(5))
        )
    if "some" not in found:
        raise ValueError(f"not a PSI file: {text[:80]!r}")
    return found


def read_psi(path: str) -> dict[str, Pressure]:
    """Parse the PSI file at ``path``; ``CgroupGone`` if it does not exist (any more)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError) as e:
        raise CgroupGone(f"{path}: {e.strerror}") from e
    return parse_psi(text)


def system_pressure_path(proc_root: str = "/proc") -> str:
    """The system-wide memory PSI file, ``<proc>/pressure/memory``."""
    return os.path.join(proc_root, "pressure", "memory")


def expand_braces(pattern: str) -> list[str]:
    """Expand shell braces the way ``glob(GLOB_BRACE)`` does: ``a{b,c}d`` -> ``abd``, ``acd``
    (nested braces too); an unmatched brace is kept literally."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                body, parts, level, last = pattern[start + 1 : i], [], 0, 0
                for j, c in enumerate(body):
                    level += c == "{"
                    level -= c == "}"
                    if c == "," and level == 0:
                        parts.append(body[last:j])
                        last = j + 1
                parts.append(body[last:])
                if len(parts) == 1:  # "{x}" has no alternatives: glob keeps it as it is
                    continue
                head, tail = pattern[:start], pattern[i + 1 :]
                return [out for p in parts for out in expand_braces(head + p + tail)]
    return [pattern]


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What the reclaim controller needs to know about one cgroup, in bytes.

    ``limit`` is ``None`` for "no limit"; ``swap_room`` is how much anonymous memory could go
    to swap now (the cgroup's own swap limit and the system's free swap, whichever is less).
    """

    usage: int
    limit: int | None
    min: int
    low: int
    anon_lru: int
    file_lru: int
    swap_room: int


def _read_int(path: str, *, missing: int | None = None) -> int | None:
    """An integer file (``max`` -> ``None``); ``missing`` if the file does not exist."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return missing
    return None if text == "max" else int(text)


def _read_stat(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    return out


def _swap_free(proc_root: str) -> int:
    try:
        with open(os.path.join(proc_root, "meminfo"), encoding="ascii") as f:
            for line in f:
                if line.startswith("SwapFree:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


@dataclass(frozen=True)
class CgroupLayout:
    """Where the memory cgroups of this machine are, and how to read and reclaim them.

    A cgroup is named by its path relative to the roots (``""`` is the root itself).
    ``pressure_root`` is the tree a task's ``cg_dir`` is matched in and ``memory.pressure`` read
    from; ``memory_root`` holds the memory controller's files (the same tree on v2).
    """

    version: str
    pressure_root: str
    memory_root: str
    proc_root: str = "/proc"

    def describe(self) -> str:
        """``cgroup v2 at /sys/fs/cgroup`` style text for logs and showstats."""
        if self.version == CGROUP_V2:
            return f"cgroup v2 at {self.memory_root}"
        return f"cgroup v1 (memory at {self.memory_root}, pressure at {self.pressure_root})"

    def find(self, pattern: str) -> list[str]:
        """The cgroups (relative paths, sorted) matched by the glob ``pattern`` (braces
        allowed) below the pressure root; on v1 only those that exist in the memory tree too.
        A pattern with a ``..`` component is refused (``ValueError``): it would leave the tree.
        """
        rel = pattern.strip("/")
        if ".." in rel.split("/"):
            raise ValueError("must not contain a '..' component")
        found: set[str] = set()
        for alt in expand_braces(rel):
            for path in glob.glob(os.path.join(glob.escape(self.pressure_root), alt)):
                if os.path.isdir(path):
                    rel_path = os.path.relpath(path, self.pressure_root)
                    found.add("" if rel_path == "." else rel_path)
        if self.version == CGROUP_V1:
            found = {r for r in found if os.path.isdir(self._mem(r))}
        return sorted(found)

    def _mem(self, rel: str, name: str = "") -> str:
        return os.path.join(self.memory_root, rel, name)

    def pressure_path(self, rel: str) -> str:
        """The ``memory.pressure`` file of cgroup ``rel``."""
        return os.path.join(self.pressure_root, rel, "memory.pressure")

    def pressure(self, rel: str) -> dict[str, Pressure]:
        """The memory PSI of cgroup ``rel`` (``CgroupGone`` when it has none / is gone)."""
        return read_psi(self.pressure_path(rel))

    def can_reclaim(self, rel: str) -> str | None:
        """``None`` if cgroup ``rel`` can be read and reclaimed, else the reason it cannot."""
        for path in (self.pressure_path(rel), self._mem(rel, "memory.reclaim")):
            if not os.path.exists(path):
                if not os.path.isdir(os.path.dirname(path)):
                    return f"{os.path.dirname(path)} is gone"
                hint = (
                    " (is the memory controller enabled in the parent's cgroup.subtree_control?)"
                    if self.version == CGROUP_V2
                    else ""
                )
                return f"{path} does not exist{hint}"
        return None

    def memory(self, rel: str) -> MemoryState:
        """Usage, limits, LRU sizes and swap room of cgroup ``rel``."""
        try:
            if self.version == CGROUP_V2:
                return self._memory_v2(rel)
            return self._memory_v1(rel)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise CgroupGone(f"cgroup {rel or '/'}: {e.filename}: {e.strerror}") from e

    def _memory_v2(self, rel: str) -> MemoryState:
        stat = _read_stat(self._mem(rel, "memory.stat"))
        usage = _read_int(self._mem(rel, "memory.current"))
        assert usage is not None
        swap_max = _read_int(self._mem(rel, "memory.swap.max"))
        swap_cur = _read_int(self._mem(rel, "memory.swap.current"), missing=0) or 0
        room = _swap_free(self.proc_root)
        if swap_max is not None:
            room = min(room, max(0, swap_max - swap_cur))
        return MemoryState(
            usage=usage,
            limit=_read_int(self._mem(rel, "memory.max")),
            min=_read_int(self._mem(rel, "memory.min"), missing=0) or 0,
            low=_read_int(self._mem(rel, "memory.low"), missing=0) or 0,
            anon_lru=stat.get("active_anon", 0) + stat.get("inactive_anon", 0),
            file_lru=stat.get("active_file", 0) + stat.get("inactive_file", 0),
            swap_room=room,
        )

    def _memory_v1(self, rel: str) -> MemoryState:
        stat = _read_stat(self._mem(rel, "memory.stat"))
        usage = _read_int(self._mem(rel, "memory.usage_in_bytes"))
        limit = _read_int(self._mem(rel, "memory.limit_in_bytes"))
        assert usage is not None
        room = _swap_free(self.proc_root)
        memsw_limit = _read_int(self._mem(rel, "memory.memsw.limit_in_bytes"))
        memsw_usage = _read_int(self._mem(rel, "memory.memsw.usage_in_bytes"))
        if memsw_limit is not None and memsw_usage is not None and memsw_limit <= _V1_UNLIMITED:
            room = min(room, max(0, memsw_limit - memsw_usage))
        return MemoryState(
            usage=usage,
            limit=None if limit is None or limit > _V1_UNLIMITED else limit,
            min=_read_int(self._mem(rel, "memory.min"), missing=0) or 0,
            low=_read_int(self._mem(rel, "memory.low"), missing=0) or 0,
            anon_lru=stat.get("total_active_anon", 0) + stat.get("total_inactive_anon", 0),
            file_lru=stat.get("total_active_file", 0) + stat.get("total_inactive_file", 0),
            swap_room=room,
        )

    def reclaim(self, rel: str, nbytes: int) -> bool:
        """Ask the kernel to reclaim ``nbytes`` from cgroup ``rel`` (decimal to
        ``memory.reclaim``). True if it reclaimed all of it; False when it gave up early
        (``EAGAIN``: v2 says so when it could not reach the amount), which is not an error.
        """
        path = self._mem(rel, "memory.reclaim")
        try:
            fd = os.open(path, os.O_WRONLY)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise CgroupGone(f"{path}: {e.strerror}") from e
        try:
            os.write(fd, str(int(nbytes)).encode())
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return False
            raise EngineError(f"{path}: writing {nbytes}: {e.strerror}") from e
        finally:
            os.close(fd)
        return True


def _v2_root(cgroup_fs: str) -> str | None:
    for root in (cgroup_fs, os.path.join(cgroup_fs, "unified")):
        if os.path.isfile(os.path.join(root, "cgroup.controllers")):
            return root
    return None


def detect_layout(sys_root: str = "/sys", proc_root: str = "/proc") -> CgroupLayout:
    """The layout proactive reclaim can use here: cgroup v2 with the memory controller, else
    openEuler's v1 (``memory.reclaim`` in the v1 memory hierarchy). Raises
    :class:`CgroupUnavailable` naming what is missing."""
    psi = system_pressure_path(proc_root)
    if not os.path.isfile(psi):
        raise CgroupUnavailable(
            f"{psi} does not exist: the kernel has no PSI (CONFIG_PSI off, or booted with psi=0)"
        )
    fs = os.path.join(sys_root, "fs", "cgroup")
    v2 = _v2_root(fs)
    reasons = []
    if v2 is not None:
        with open(os.path.join(v2, "cgroup.controllers"), encoding="ascii") as f:
            controllers = f.read().split()
        if "memory" in controllers:
            return CgroupLayout(CGROUP_V2, v2, v2, proc_root)
        reasons.append(f"cgroup v2 at {v2} has no memory controller")
    else:
        reasons.append(f"no cgroup v2 under {fs}")
    v1_mem, v1_cpuacct = os.path.join(fs, "memory"), os.path.join(fs, "cpuacct")
    if os.path.isfile(os.path.join(v1_mem, "memory.reclaim")) and os.path.isdir(v1_cpuacct):
        return CgroupLayout(CGROUP_V1, v1_cpuacct, v1_mem, proc_root)
    if os.path.isdir(v1_mem):
        reasons.append(f"cgroup v1's {v1_mem} has no memory.reclaim (an openEuler extension)")
    else:
        reasons.append("no cgroup v1 memory hierarchy")
    raise CgroupUnavailable("no memory cgroup with memory.reclaim: " + "; ".join(reasons))


def pid_pressure_path(pid: int, sys_root: str = "/sys", proc_root: str = "/proc") -> str | None:
    """The ``memory.pressure`` file of the cgroup ``pid`` is in (cgroup v2, or the v1 ``cpuacct``
    hierarchy where openEuler keeps it), from ``/proc/PID/cgroup``; ``None`` when the process is
    gone or its cgroup has no such file (PSI per cgroup is off, or the cgroup is the root)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fs = os.path.join(sys_root, "fs", "cgroup")
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if line.startswith("0::"):
            v2 = _v2_root(fs)
            if v2 is not None:
                candidates.append(os.path.join(v2, path.strip("/"), "memory.pressure"))
        elif "cpuacct" in controllers.split(","):
            root = os.path.join(fs, "cpuacct")
            candidates.append(os.path.join(root, path.strip("/"), "memory.pressure"))
    return next((c for c in candidates if os.path.isfile(c)), None)
