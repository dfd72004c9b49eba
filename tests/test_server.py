"""etmemd's server: replies, error mapping, peer check, concurrency, signals, ``-m``.

The first part drives ``Server`` in-process with a fake object store; the second runs the real
``etmemd`` executable on a unique socket with a throw-away engine installed through a dist-info
directory on PYTHONPATH, and talks to it with the real ``etmem`` executable.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from platform import machine

import pytest
from conftest import run_as
from etmemd_proc import wait_for
from fuzzing import well_formed

from etmem_core import client
from etmem_core.errors import OptCode, OptError
from etmem_core.protocol import Cmd, Request, encode_request
from etmem_core.server import Server

BIN = Path(sys.executable).parent
ETMEMD = BIN / "etmemd"
ETMEM = BIN / "etmem"
HEADER = "number   type     value            name             engine           started \n"


TGKILL = {"x86_64": 234, "aarch64": 131}  # tgkill(2): not in os or signal


def unique_name() -> str:
    return f"etmemd-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def listening(name: str) -> bool:
    """Whether someone listens on the abstract socket ``name`` (read-only probe)."""
    with open("/proc/net/unix") as f:
        return any(line.rstrip("\n").endswith(" @" + name) for line in f)


def raw_exchange(name: str, data: bytes, timeout: float = 15.0) -> bytes:
    """Send ``data``, read until the daemon closes; the whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect("\0" + name)
        if data:
            sock.sendall(data)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


# ------------------------------------------------------------------------------------------------
# in-process: Server with a fake object store


class FakeStore:
    """Records calls; raises what ``self.raise_next`` holds."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.raise_next: BaseException | None = None

    def _maybe_raise(self) -> None:
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc

    def obj_add(self, path):
        self.calls.append(("obj_add", path))
        self._maybe_raise()

    def obj_del(self, path):
        self.calls.append(("obj_del", path))
        self._maybe_raise()

    def project_start(self, name):
        self.calls.append(("project_start", name))
        self._maybe_raise()

    def project_stop(self, name):
        self.calls.append(("project_stop", name))
        self._maybe_raise()

    def project_show(self, name, reply):
        self.calls.append(("project_show", name))
        reply.write(f"shown {name}\n")
        self._maybe_raise()

    def project_show_json(self, name):
        self.calls.append(("project_show_json", name))
        return [{"name": name}]

    def engine_cmd(self, project, engine, task, cmd, reply):
        self.calls.append(("engine_cmd", project, engine, task, cmd))
        reply.write(b"out\xff\xfe put\n")
        self._maybe_raise()


@pytest.fixture
def served():
    store = FakeStore()
    name = unique_name()
    server = Server(store, name, timeout=0.5)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, name, server
    server.stop()
    thread.join(5)
    server.wait_clients(time.monotonic() + 5)
    server.close()
    assert not listening(name)


def test_requests_reach_the_store(served):
    store, name, _ = served
    assert raw_exchange(name, encode_request(Request(Cmd.OBJ_ADD, file_name="rel.conf"))) == b"\xff"
    assert raw_exchange(name, encode_request(Request(Cmd.PROJ_SHOW, proj_name="p"))) == (
        b"shown p\n\xff"
    )
    reply = raw_exchange(name, encode_request(Request(Cmd.PROJ_SHOW, eng_cmd="json")))
    assert json.loads(reply[:-1]) == [{"name": None}] and reply[-1] == 0xFF
    reply = raw_exchange(
        name,
        encode_request(Request(Cmd.ENG_CMD, proj_name="p", eng_name="e", eng_cmd="c")),
    )
    assert reply == b"out put\n\xff"  # marker bytes never leave an engine's output
    assert store.calls == [
        ("obj_add", "rel.conf"),  # relative: resolved by the store, in etmemd's cwd
        ("project_show", "p"),
        ("project_show_json", None),
        ("engine_cmd", "p", "e", None, "c"),
    ]


@pytest.mark.parametrize("code", [c for c in OptCode if c != OptCode.OPT_SUCCESS])
def test_every_opt_error_maps_to_its_wire_text(served, code):
    store, name, _ = served
    store.raise_next = OptError(code)
    reply = raw_exchange(name, encode_request(Request(Cmd.PROJ_START, proj_name="p")))
    assert reply == code.text.encode() + b"\xfe"


def test_reason_line_precedes_the_error_text_and_output_is_kept(served):
    store, name, _ = served
    store.raise_next = OptError(OptCode.OPT_INVAL, "a.conf: [project] loop=0: must be 1 to 120")
    reply = raw_exchange(
        name, encode_request(Request(Cmd.ENG_CMD, proj_name="p", eng_name="e", eng_cmd="c"))
    )
    assert reply == (
        b"out put\netmemd: a.conf: [project] loop=0: must be 1 to 120\n"
        b"error: invalid parameters\xfe"
    )


def test_unexpected_exception_is_an_internal_error_and_the_server_survives(served):
    store, name, _ = served
    store.raise_next = RuntimeError("boom")
    reply = raw_exchange(name, encode_request(Request(Cmd.OBJ_DEL, file_name="/x")))
    assert reply.endswith(OptCode.OPT_INTER_ERR.text.encode() + b"\xfe")
    assert b"boom" in reply
    assert raw_exchange(name, encode_request(Request(Cmd.PROJ_SHOW))) == b"shown None\n\xff"


def test_a_client_thread_that_cannot_start_costs_that_client_only(served, monkeypatch):
    # Out of threads: the client is dropped (no reply), the server keeps accepting.
    store, name, server = served
    real_start = threading.Thread.start

    def refuse_once(self):
        monkeypatch.setattr(threading.Thread, "start", real_start)
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse_once)
    assert raw_exchange(name, b"") == b""
    assert raw_exchange(name, encode_request(Request(Cmd.PROJ_SHOW))) == b"shown None\n\xff"
    assert server.wait_clients(time.monotonic() + 5)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"hello",
        b"proj_name - file_name - cmd 9 eng_name - eng_cmd - task_name -",
        b"proj_name a b file_name - cmd 4 eng_name - eng_cmd - task_name -",
        b"x" * 600,
        encode_request(Request(Cmd.PROJ_START)),  # no project name
        encode_request(Request(Cmd.OBJ_ADD)),  # no file
        encode_request(Request(Cmd.ENG_CMD, proj_name="p")),  # no engine, no command
    ],
)
def test_malformed_requests_get_a_failure_reply_with_the_reason(served, request_bytes):
    store, name, _ = served
    reply = raw_exchange(name, request_bytes)
    assert well_formed(reply) and reply[-1] == 0xFE
    assert reply.startswith(b"etmemd: ")
    assert reply.endswith(b"error: invalid parameters\xfe")
    assert store.calls == []


def test_split_request_is_reassembled(served):
    store, name, _ = served
    data = encode_request(Request(Cmd.PROJ_SHOW, proj_name="p"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect("\0" + name)
        sock.sendall(data[:10])
        time.sleep(0.1)
        sock.sendall(data[10:])
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply == b"shown p\n\xff"


def test_silent_client_times_out_with_a_reply(served):
    _, name, _ = served  # server timeout 0.5 s
    reply = raw_exchange(name, b"")
    assert reply.startswith(b"etmemd: no request received in time")
    assert reply.endswith(b"\xfe")


def test_name_in_use_is_refused(served):
    from etmem_core.server import AddressInUse

    _, name, _ = served
    other = Server(FakeStore(), name)
    with pytest.raises(AddressInUse, match="already in use"):
        other.bind()
    other.close()


# ------------------------------------------------------------------------------------------------
# the real etmemd executable with a throw-away engine

ENGINE_MODULE = textwrap.dedent(
    """
    import os
    from etmem_sdk import EngineError, hookimpl

    def _log(line):
        with open(os.environ["THROWAWAY_LOG"], "a") as f:
            f.write(line + "\\n")

    @hookimpl
    def fill_eng_params(engine, config):
        engine.params = {}

    @hookimpl
    def start_task(engine, task):
        _log(f"start {engine.project.name} {task.name}")

    @hookimpl
    def stop_task(engine, task):
        _log(f"stop {engine.project.name} {task.name}")

    @hookimpl
    def eng_mgt_func(engine, task, cmd, reply):
        if cmd == "echo":
            reply.write(f"echo {task.name if task else '-'}\\n")
        elif cmd == "marks":
            reply.write(b"a\\xffb\\xfec\\n")
        else:
            raise EngineError(f"unknown command {cmd}")
    """
)


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("throwaway")
    (root / "etmem_throwaway_engine.py").write_text(ENGINE_MODULE)
    info = root / "etmem_throwaway_engine-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: etmem-throwaway-engine\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[etmem.engines]\nthrowaway = etmem_throwaway_engine\n")
    return root


class EtmemdProcess:
    """A running etmemd process; always killed in teardown."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str], *extra: str) -> None:
        self.name = name
        self.log = cwd / "etmemd.log"
        self.stderr = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(ETMEMD), "-s", name, "-l", "1", *extra],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )

    def wait_listening(self) -> None:
        if not wait_for(lambda: listening(self.name) or self.proc.poll() is not None, 15, 0.05):
            raise AssertionError("etmemd did not start listening")
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stderr.close()


@pytest.fixture
def env(engine_dir, tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(engine_dir), env.get("PYTHONPATH")]))
    env["THROWAWAY_LOG"] = str(tmp_path / "engine.log")
    env["ETMEMD_PID_FILE"] = str(tmp_path / "etmemd.pid")
    env.pop("NOTIFY_SOCKET", None)
    return env


@pytest.fixture
def etmemd(tmp_path, env):
    daemon = EtmemdProcess(unique_name(), tmp_path, env)
    try:
        daemon.wait_listening()
        yield daemon
    finally:
        daemon.stop()


def write_conf(tmp_path: Path, project: str = "p", task_value: str | None = None) -> Path:
    conf = tmp_path / f"{project}.conf"
    conf.write_text(
        f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n\n"
        f"[engine]\nname=throwaway\nproject={project}\n\n"
        f"[task]\nproject={project}\nengine=throwaway\nname=t1\ntype=pid\n"
        f"value={task_value or os.getpid()}\n"
    )
    conf.chmod(0o600)
    return conf


def etmem(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ETMEM), *args], cwd=cwd, capture_output=True, timeout=60)


def engine_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "engine.log"
    return path.read_text().splitlines() if path.exists() else []


def test_each_recorded_request_gets_a_well_formed_reply(etmemd, golden):
    files = sorted((golden / "wire" / "requests").glob("*.bin"))
    assert files
    for path in files:
        reply = raw_exchange(etmemd.name, path.read_bytes())
        assert well_formed(reply), (path.name, reply)
    # a project show with no projects is the original's success text
    show = (golden / "wire" / "requests" / "project_show.bin").read_bytes()
    assert raw_exchange(etmemd.name, show) == b"no project exists\n\n\xff"


def test_lifecycle_through_the_etmem_executable(etmemd, tmp_path):
    write_conf(tmp_path)
    s = etmemd.name
    pid = os.getpid()

    added = etmem(tmp_path, "obj", "add", "-f", "p.conf", "-s", s)  # relative: made absolute
    assert added.returncode == 0, added
    assert added.stdout == b""

    shown = etmem(tmp_path, "project", "show", "-s", s)
    row = f"{1:<8d} {'pid':<8s} {pid!s:<16s} {'t1':<16s} {'throwaway':<16s} {'false':<8s}\n"
    assert shown.returncode == 0 and shown.stdout.decode() == "project: p\n" + HEADER + row

    as_json = etmem(tmp_path, "project", "show", "--json", "-n", "p", "-s", s)
    assert as_json.returncode == 0, as_json
    doc = json.loads(as_json.stdout)
    assert [p["name"] for p in doc] == ["p"]

    assert etmem(tmp_path, "project", "start", "-n", "p", "-s", s).returncode == 0
    assert engine_log(tmp_path) == ["start p t1"]
    shown = etmem(tmp_path, "project", "show", "-n", "p", "-s", s)
    assert shown.stdout.decode().endswith(f"{'true':<8s}\n")

    echo = etmem(tmp_path, "engine", "echo", "-n", "p", "-e", "throwaway", "-t", "t1", "-s", s)
    assert (echo.returncode, echo.stdout) == (0, b"echo t1\n")
    marks = etmem(tmp_path, "engine", "marks", "-n", "p", "-e", "throwaway", "-s", s)
    assert (marks.returncode, marks.stdout) == (0, b"abc\n")
    bad = etmem(tmp_path, "engine", "nope", "-n", "p", "-e", "throwaway", "-s", s)
    assert bad.returncode == 186
    assert bad.stdout.endswith(b"error: invalid parameters\n")
    assert b"unknown command nope" in bad.stdout  # the reason line from etmemd

    again = etmem(tmp_path, "project", "start", "-n", "p", "-s", s)
    assert (again.returncode, again.stdout.splitlines()[-1]) == (
        186,
        b"error: project has been started",
    )
    assert b"etmem: " in again.stderr and b"Usage" not in again.stdout

    assert etmem(tmp_path, "project", "stop", "-n", "p", "-s", s).returncode == 0
    assert engine_log(tmp_path) == ["start p t1", "stop p t1"]

    assert etmem(tmp_path, "obj", "del", "-f", str(tmp_path / "p.conf"), "-s", s).returncode == 0
    shown = etmem(tmp_path, "project", "show", "-s", s)
    assert (shown.returncode, shown.stdout) == (0, b"no project exists\n\n")
    missing = etmem(tmp_path, "project", "show", "-n", "p", "-s", s)
    assert missing.stdout == b"project: project p is not existed\n\n"
    gone = etmem(tmp_path, "project", "start", "-n", "p", "-s", s)
    assert gone.returncode == 186 and gone.stdout.endswith(b"error: project is not exist\n")


def _peer_probe(name: str, user: int | None, group: int) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect("\\0" + {name!r})
        try:
            s.sendall(b"proj_name - file_name - cmd 4 eng_name - eng_cmd - task_name -")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            data = b""
        sys.stdout.write(repr(data))
        """
    )
    kwargs: dict = {"group": group, "extra_groups": []}
    if user is not None:
        kwargs["user"] = user
    return subprocess.run(
        ["/usr/bin/python3", "-c", code], cwd="/", capture_output=True, timeout=30, **kwargs
    )


def test_non_root_peers_are_refused(etmemd):
    for user, group in ((65534, 65534), (None, 65534)):  # non-root uid; root uid but gid != 0
        probe = _peer_probe(etmemd.name, user, group)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout == b"b''", (user, group)  # closed without any reply
    root = _peer_probe(etmemd.name, None, 0)
    assert root.stdout == repr(b"no project exists\n\n\xff").encode()
    assert "permission denied" in etmemd.log.read_text()


def test_fifty_concurrent_clients_all_get_correct_replies(etmemd, tmp_path):
    write_conf(tmp_path)
    assert etmem(tmp_path, "obj", "add", "-f", "p.conf", "-s", etmemd.name).returncode == 0
    expected = "project: p\n" + HEADER
    results: list[tuple[bool, bytes]] = [(False, b"")] * 50
    barrier = threading.Barrier(50)

    def one(i: int) -> None:
        out = bytearray()
        barrier.wait(10)
        name = "p" if i % 2 else None
        res = client.call(etmemd.name, Request(Cmd.PROJ_SHOW, proj_name=name), out.extend)
        results[i] = (res.success, bytes(out))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for ok, out in results:
        assert ok and out.decode().startswith(expected), out


def test_a_silent_client_does_not_block_another(etmemd):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect("\0" + etmemd.name)  # says nothing; etmemd waits up to 10 s for it
        out = bytearray()
        res = client.call(etmemd.name, Request(Cmd.PROJ_SHOW), out.extend, timeout=5)
        assert res.success and out == b"no project exists\n\n"


def test_sigterm_stops_started_projects_and_exits_0(etmemd, tmp_path):
    write_conf(tmp_path)
    s = etmemd.name
    assert etmem(tmp_path, "obj", "add", "-f", "p.conf", "-s", s).returncode == 0
    assert etmem(tmp_path, "project", "start", "-n", "p", "-s", s).returncode == 0
    etmemd.proc.send_signal(signal.SIGTERM)
    assert etmemd.proc.wait(30) == 0
    assert engine_log(tmp_path) == ["start p t1", "stop p t1"]
    assert not listening(s)


def test_sigint_exits_0_too(etmemd):
    etmemd.proc.send_signal(signal.SIGINT)
    assert etmemd.proc.wait(30) == 0


def test_sigterm_taken_by_another_thread_still_stops_the_daemon(etmemd):
    # A process-directed signal may land on any thread; Python runs its handler in the main
    # thread only, which sleeps in select() with no timer due. Aim it at a non-main thread
    # (tgkill) to make that case certain rather than one run in a few.
    pid = etmemd.proc.pid
    assert wait_for(lambda: len(os.listdir(f"/proc/{pid}/task")) > 1, 10)
    tid = next(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(TGKILL[machine()], pid, tid, signal.SIGTERM) == 0, ctypes.get_errno()
    assert etmemd.proc.wait(10) == 0


def test_socket_name_in_use_exits_non_zero(etmemd, tmp_path, env):
    second = subprocess.run(
        [str(ETMEMD), "-s", etmemd.name], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert second.returncode != 0
    assert b"already in use" in second.stderr
    assert etmemd.proc.poll() is None  # the first one is untouched


def _wait_gone(pid: int) -> bool:
    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ", 1)[1].startswith("Z")
        except FileNotFoundError:
            return True

    return wait_for(gone, 30, 0.05)


def test_mode_systemctl_forks_writes_pid_and_notifies(tmp_path, env):
    name = unique_name()
    notify_path = str(tmp_path / "notify")
    env = dict(env, NOTIFY_SOCKET=notify_path)
    pid_file = Path(env["ETMEMD_PID_FILE"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(10)
        parent = subprocess.run(
            [str(ETMEMD), "-m", "-s", name],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        child = int(pid_file.read_text()) if pid_file.exists() else None
        try:
            assert parent.returncode == 0
            assert child is not None and os.path.exists(f"/proc/{child}")
            assert listening(name)  # the parent returned only once the child listened
            message = notify.recv(4096).decode()
            assert message == f"READY=1\nMAINPID={child}"
            out = bytearray()
            assert client.call(name, Request(Cmd.PROJ_SHOW), out.extend).success
        finally:
            if child is not None:
                os.kill(child, signal.SIGTERM)
                assert _wait_gone(child)
    assert not listening(name)
    assert not pid_file.exists()  # removed by the daemon on a clean exit

    # -m with the name taken: the parent reports the failure
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        holder.bind("\0" + name)
        holder.listen(1)
        failed = subprocess.run(
            [str(ETMEMD), "-m", "-s", name],
            cwd=tmp_path,
            env=dict(env, NOTIFY_SOCKET=""),
            capture_output=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert failed.returncode != 0
    assert b"already in use" in failed.stderr
    assert not pid_file.exists()


def test_foreground_daemon_notifies_systemd_ready_and_stopping(tmp_path, env):
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(15)
        daemon = EtmemdProcess(unique_name(), tmp_path, dict(env, NOTIFY_SOCKET=notify_path))
        try:
            assert notify.recv(4096) == b"READY=1"
            assert listening(daemon.name)
            daemon.proc.send_signal(signal.SIGTERM)
            assert notify.recv(4096) == b"STOPPING=1"
            assert daemon.proc.wait(30) == 0
        finally:
            daemon.stop()


# ------------------------------------------------------------------------------------------------
# hardening: floods, descriptor exhaustion, bounded clients (in-process)


def _flood_as_nobody(name: str, count: int) -> int:
    """As uid/gid 65534, connect and close ``count`` times; the number of connects that
    succeeded."""

    def flood() -> str:
        done = 0
        for _ in range(count):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                try:
                    s.connect("\0" + name)
                    done += 1
                except OSError:
                    pass
        return str(done)

    return int(run_as(65534, 65534, flood) or 0)


@pytest.mark.root
def test_a_connect_flood_by_a_non_root_user_is_counted_not_logged_per_connect(served, caplog):
    store, name, server = served
    caplog.set_level("INFO", logger="etmemd")
    done = _flood_as_nobody(name, 2000)
    assert done > 1000
    assert wait_for(lambda: server.counters["refused_peers"] >= done, 5), server.counters
    denied = [r for r in caplog.records if "permission denied" in r.getMessage()]
    assert 1 <= len(denied) <= 2, len(denied)
    # and root is still served
    assert raw_exchange(name, encode_request(Request(Cmd.PROJ_SHOW))) == b"shown None\n\xff"


class _FailingListener:
    """The listening socket, whose accept fails as if the fd limit had been reached."""

    def __init__(self, sock: socket.socket, err: int) -> None:
        self.sock, self.err, self.calls = sock, err, 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        self.calls += 1
        raise OSError(self.err, os.strerror(self.err))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("err", ["EMFILE", "ENFILE"])
def test_descriptor_exhaustion_on_accept_backs_off(err, caplog):
    import errno

    server = Server(FakeStore(), unique_name(), timeout=0.5)
    server.bind()
    failing = _FailingListener(server._sock, getattr(errno, err))
    server._sock = failing
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pending = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pending.connect("\0" + server.socket_name)  # the listener stays readable
        time.sleep(1.0)
    finally:
        server.stop()
        thread.join(5)
        pending.close()
        server.close()
    assert not thread.is_alive()
    assert 1 <= failing.calls <= 30, failing.calls  # a busy loop makes ~10^5 calls a second
    lines = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert 1 <= len(lines) <= 2


def test_concurrent_clients_are_bounded_and_all_served():
    server = Server(FakeStore(), unique_name(), timeout=0.3, max_clients=2)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    silent = []
    try:
        for _ in range(6):  # each holds a client slot until its 0.3 s timeout
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("\0" + server.socket_name)
            silent.append(s)
        peak = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            peak = max(peak, server._active())
            time.sleep(0.01)
        assert 1 <= peak <= 2
        out = bytearray()
        assert client.call(server.socket_name, Request(Cmd.PROJ_SHOW), out.extend, timeout=5)
        assert bytes(out) == b"shown None\n"
        for s in silent:  # every silent client got its "no request" failure in the end
            s.settimeout(5)
            assert s.recv(4096).endswith(b"\xfe")
    finally:
        for s in silent:
            s.close()
        server.stop()
        thread.join(5)
        server.wait_clients(time.monotonic() + 5)
        server.close()


def test_a_request_split_inside_its_last_value_is_not_decoded_early():
    store = FakeStore()
    server = Server(store, unique_name(), timeout=5, split_grace=1.0)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        data = encode_request(
            Request(Cmd.ENG_CMD, proj_name="p", eng_name="e", eng_cmd="c", task_name="t1")
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect("\0" + server.socket_name)
            sock.sendall(data[:-1])  # "... task_name t"
            time.sleep(0.05)
            sock.sendall(data[-1:])  # "1"
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert store.calls == [("engine_cmd", "p", "e", "t1", "c")]
        assert reply.endswith(b"\xff")
    finally:
        server.stop()
        thread.join(5)
        server.wait_clients(time.monotonic() + 5)
        server.close()


def test_a_reason_can_neither_forge_lines_nor_come_back_megabytes_long(served):
    store, name, _ = served
    store.raise_next = OptError(OptCode.OPT_INVAL, "bad\nforged line\x1b[31m" + "x" * 100_000)
    reply = raw_exchange(name, encode_request(Request(Cmd.PROJ_START, proj_name="p")))
    head, _, rest = reply.partition(b"\n")
    assert head.startswith(b"etmemd: bad\\x0aforged line\\x1b[31mxxx")
    assert head.endswith(b"more characters]") and len(head) < 1200
    assert b"\x1b" not in reply and rest.endswith(b"\xfe") and b"\n" not in rest[:-1].rstrip()


def test_log_lines_escape_control_characters_and_are_cut():
    import logging

    from etmem_core.logsafe import LOG_MESSAGE_MAX, SafeFormatter

    fmt = SafeFormatter("%(message)s")
    record = logging.LogRecord("etmemd", logging.ERROR, __file__, 1, "value %s", ("a\nb",), None)
    assert fmt.format(record) == "value a\\x0ab"
    long = logging.LogRecord("etmemd", logging.ERROR, __file__, 1, "%s", ("\x1b" * 10**6,), None)
    text = fmt.format(long)
    assert "\x1b" not in text and len(text) < LOG_MESSAGE_MAX * 4 + 64


def test_a_request_is_answered_while_every_worker_so_far_is_blocked():
    # Workers start one at a time (quick requests need no more); one stuck in a slow store
    # call must not hold up the next client: the stalled queue gets a worker of its own.
    release = threading.Event()

    class SlowAdd(FakeStore):
        def obj_add(self, path):
            super().obj_add(path)
            release.wait(10)

    server = Server(SlowAdd(), unique_name(), timeout=5)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    slow = threading.Thread(
        target=raw_exchange,
        args=(server.socket_name, encode_request(Request(Cmd.OBJ_ADD, file_name="/a.conf"))),
        daemon=True,
    )
    try:
        slow.start()
        assert wait_for(lambda: server.store.calls, 5, 0.01)
        t0 = time.monotonic()
        out = bytearray()
        assert client.call(server.socket_name, Request(Cmd.PROJ_SHOW), out.extend, timeout=5)
        assert bytes(out) == b"shown None\n" and time.monotonic() - t0 < 2
    finally:
        release.set()
        slow.join(5)
        server.stop()
        thread.join(5)
        assert server.wait_clients(time.monotonic() + 5)
        server.close()


def test_at_stop_a_request_being_read_is_told_so_and_a_whole_one_answered():
    server = Server(FakeStore(), unique_name(), timeout=5, split_grace=5.0)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    whole = encode_request(Request(Cmd.PROJ_SHOW, proj_name="p"))
    socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for s, data in zip(socks, (whole[:20], whole), strict=True):
            s.settimeout(5)
            s.connect("\0" + server.socket_name)
            s.sendall(data)  # the second waits out its 5 s split grace: nothing says it ended
        assert wait_for(lambda: len(server._reading) == 2, 5, 0.01)
        server.stop()
        thread.join(5)
        replies = []
        for s in socks:
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            replies.append(reply)
        assert replies[0] == (
            b"etmemd: etmemd is shutting down\n" + OptCode.OPT_INTER_ERR.text.encode() + b"\xfe"
        )
        assert replies[1] == b"shown p\n\xff"
        assert server.wait_clients(time.monotonic() + 5)
    finally:
        for s in socks:
            s.close()
        server.stop()
        server.close()
