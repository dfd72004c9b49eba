"""A fake cgroup v2 (or openEuler v1) tree with PSI files, for the psi engine and slide's
pressure guard; the engines find it through the scan defaults' /sys and /proc roots."""

from __future__ import annotations

from pathlib import Path


def psi_text(avg10: float = 0.0, avg60: float = 0.0, avg300: float = 0.0, total: int = 0) -> str:
    line = f"avg10={avg10:.2f} avg60={avg60:.2f} avg300={avg300:.2f} total={total}\n"
    return f"some {line}full {line}"


class FakeCgroups:
    """``sys_root/fs/cgroup`` as cgroup v2 with the memory controller (``version="v2"``), as
    openEuler's v1 (``"v1"``: memory files under ``memory/``, pressure under ``cpuacct/``), or
    as this development VM (``"hybrid"``: v2 without memory at ``unified/``, v1 without
    memory.reclaim)."""

    def __init__(self, sys_root: Path, proc_root: Path, version: str = "v2") -> None:
        self.version = version
        self.proc_root = proc_root
        self.fs = sys_root / "fs" / "cgroup"
        (proc_root / "pressure").mkdir(parents=True, exist_ok=True)
        self.set_system_pressure()
        if version == "v2":
            self.fs.mkdir(parents=True, exist_ok=True)
            (self.fs / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        elif version == "v1":
            for d in ("memory", "cpuacct"):
                (self.fs / d).mkdir(parents=True, exist_ok=True)
            (self.fs / "memory" / "memory.reclaim").write_text("")
        else:
            (self.fs / "unified").mkdir(parents=True, exist_ok=True)
            (self.fs / "unified" / "cgroup.controllers").write_text("")
            for d in ("memory", "cpuacct"):
                (self.fs / d).mkdir(parents=True, exist_ok=True)

    def set_system_pressure(self, avg10: float = 0.0, avg60: float = 0.0) -> None:
        (self.proc_root / "pressure" / "memory").write_text(psi_text(avg10, avg60))

    def memory_dir(self, rel: str) -> Path:
        return self.fs / rel if self.version == "v2" else self.fs / "memory" / rel

    def pressure_dir(self, rel: str) -> Path:
        return self.fs / rel if self.version == "v2" else self.fs / "cpuacct" / rel

    def add(
        self,
        rel: str,
        *,
        usage: int,
        anon: int = 0,
        file: int = 0,
        limit: int | None = None,
        min: int = 0,
        low: int = 0,
    ) -> None:
        """A cgroup ``rel`` using ``usage`` bytes, ``anon``/``file`` of them on the LRUs."""
        mem, psi = self.memory_dir(rel), self.pressure_dir(rel)
        mem.mkdir(parents=True, exist_ok=True)
        psi.mkdir(parents=True, exist_ok=True)
        self.set_pressure(rel)
        (mem / "memory.reclaim").write_text("")
        (mem / "memory.min").write_text(f"{min}\n")
        (mem / "memory.low").write_text(f"{low}\n")
        half_a, half_f = anon // 2, file // 2
        if self.version == "v2":
            (mem / "memory.current").write_text(f"{usage}\n")
            (mem / "memory.max").write_text("max\n" if limit is None else f"{limit}\n")
            stat = (
                f"anon {anon}\nfile {file}\nactive_anon {half_a}\ninactive_anon {anon - half_a}\n"
                f"active_file {half_f}\ninactive_file {file - half_f}\n"
            )
        else:
            (mem / "memory.usage_in_bytes").write_text(f"{usage}\n")
            lim = (2**63 - 4096) if limit is None else limit
            (mem / "memory.limit_in_bytes").write_text(f"{lim}\n")
            stat = (
                f"cache {file}\nrss {anon}\ntotal_active_anon {half_a}\n"
                f"total_inactive_anon {anon - half_a}\ntotal_active_file {half_f}\n"
                f"total_inactive_file {file - half_f}\n"
            )
        (mem / "memory.stat").write_text(stat)

    def set_usage(self, rel: str, usage: int) -> None:
        name = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        (self.memory_dir(rel) / name).write_text(f"{usage}\n")

    def usage(self, rel: str) -> int:
        name = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        return int((self.memory_dir(rel) / name).read_text())

    def set_pressure(self, rel: str, avg10: float = 0.0, avg60: float = 0.0) -> None:
        (self.pressure_dir(rel) / "memory.pressure").write_text(psi_text(avg10, avg60))

    def reclaim_written(self, rel: str) -> str:
        """What was last written to the cgroup's ``memory.reclaim`` ("" = nothing); cleared."""
        path = self.memory_dir(rel) / "memory.reclaim"
        text = path.read_text()
        path.write_text("")
        return text

    def put_pid(self, pid: int, rel: str) -> None:
        """``/proc/PID/cgroup`` saying ``pid`` is in ``rel``."""
        d = self.proc_root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        if self.version == "v2":
            (d / "cgroup").write_text(f"0::/{rel}\n")
        else:
            (d / "cgroup").write_text(f"4:memory:/{rel}\n3:cpu,cpuacct:/{rel}\n0::/\n")
