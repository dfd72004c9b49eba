"""A real ``etmemd`` child on a unique abstract socket, driven with the ``etmem`` client.

For the end-to-end tests of daemon settings and plugin distributions; ``bindir`` picks which
environment's ``etmemd``/``etmem`` run (a fresh virtual environment in the ecosystem test).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


def wait_for(cond, timeout: float, step: float = 0.2) -> bool:
    """Poll ``cond()`` every ``step`` seconds until it is true or ``timeout`` passed; its last
    value (tests assert on it, so a slow machine fails with the condition, not a timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class EtmemdProc:
    """``etmemd -s UNIQUE -l LEVEL [extra args]``; ``etmem(...)`` runs the client against it.

    ``log_level`` is 0 (debug, every request logged) unless a caller needs the default's cost.
    """

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        bindir: Path | None = None,
        env: dict[str, str] | None = None,
        log_level: int = 0,
    ) -> None:
        self.bindir = bindir or Path(sys.executable).parent
        self.workdir = workdir
        self.env = env
        self.sock = f"etmem-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = open(workdir / f"etmemd-{self.sock}.log", "w+b")  # noqa: SIM115 - in stop()
        self.proc = subprocess.Popen(
            [str(self.bindir / "etmemd"), "-s", self.sock, "-l", str(log_level), *extra],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        # under TCG (the test bed) the interpreter alone needs tens of seconds to start
        deadline = time.monotonic() + (120 if os.environ.get("ETMEM_IN_VM") == "1" else 30)
        while self.etmem("project", "show", check=False).returncode != 0:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"etmemd exited ({self.proc.returncode}): {self.logtext()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etmemd does not answer: {self.logtext()}")
            time.sleep(0.2)

    def logtext(self) -> str:
        """The last part of etmemd's log (stderr, level debug)."""
        path = self.workdir / f"etmemd-{self.sock}.log"
        return path.read_bytes().decode(errors="replace")[-6000:]

    def etmem(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``etmem ARGS -s SOCKET``; with ``check`` a failure raises with the daemon's log."""
        res = subprocess.run(
            [str(self.bindir / "etmem"), *args, "-s", self.sock],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"etmem {' '.join(args)} -> {res.returncode}\nstdout: {res.stdout}\n"
                f"stderr: {res.stderr}\netmemd: {self.logtext()}"
            )
        return res

    def add(self, name: str, text: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Write an object file (0600) and ``etmem obj add`` it."""
        path = self.workdir / f"{name}.conf"
        path.write_text(text)
        path.chmod(0o600)
        return self.etmem("obj", "add", "-f", str(path), check=check)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()


def project_config(project: str, engine: str, pid: int, task_keys: str = "") -> str:
    """One project (loop/interval/sleep 1), one engine, one task on ``pid``."""
    return (
        f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n"
        f"[engine]\nname={engine}\nproject={project}\n"
        f"[task]\nproject={project}\nengine={engine}\nname=t\ntype=pid\nvalue={pid}\n{task_keys}"
    )


def throwaway_dist(
    site: Path, dist: str, version: str, module: str, source: str, entry_point: str
) -> None:
    """A module plus a minimal ``*.dist-info`` registering it as engine ``entry_point`` -- an
    installed distribution as far as entry points go, for a directory put on PYTHONPATH."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[etmem.engines]\n{entry_point} = {module}\n")
