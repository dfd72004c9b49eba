"""The original thirdparty test's expectations (my_engine.c), through etmem_core's ObjectStore
and, once, through the etmemd and etmem executables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from etmem_sdk import BufferReply
from thirdparty_build import build_scan_lib, compile_policy

from etmem_core import lifecycle
from etmem_core.errors import OptCode, OptError

pytestmark = pytest.mark.root

PROJECT = "[project]\nname=test\nscan_type=page\nloop=1\ninterval=1\nsleep=1\n"


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("object files and policies must be owned by root")
    build_scan_lib()
    return compile_policy("my_engine.c", tmp_path_factory.mktemp("so") / "libthirdparty_engine.so")


class Files:
    """Root-owned 0600 object files in tmp_path."""

    def __init__(self, tmp: Path, lib: Path):
        self.tmp = tmp
        self.lib = lib
        self.n = 0

    def write(self, text: str) -> str:
        self.n += 1
        path = self.tmp / f"obj{self.n}.config"
        path.write_text(text)
        path.chmod(0o600)
        return str(path)

    def engine(self, ops: str = "my_engine_ops", eng_name: str = "my_engine", **over) -> str:
        keys = {
            "name": "thirdparty",
            "project": "test",
            "eng_name": eng_name,
            "libname": str(self.lib),
            "ops_name": ops,
            "engine_private_key": "1024",
            **over,
        }
        return self.write("[engine]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()))

    def task(self, name: str = "background1", engine: str = "my_engine") -> str:
        return self.write(
            f"[task]\nproject=test\nengine={engine}\nname={name}\ntype=pid\nvalue=1\n"
            "task_private_key=2048\n"
        )


@pytest.fixture
def files(tmp_path, lib):
    return Files(tmp_path, lib)


@pytest.fixture
def store(files):
    daemon = lifecycle.ObjectStore()
    daemon.obj_add(files.write(PROJECT))
    yield daemon
    daemon.shutdown()


def code_of(fn, *args) -> OptCode:
    with pytest.raises(OptError) as exc:
        fn(*args)
    return exc.value.code


def cmd(store, engine="my_engine", task=None, command="my_cmd") -> str:
    reply = BufferReply()
    store.engine_cmd("test", engine, task, command, reply)
    return reply.text


def test_original_thirdparty_expectations(store, files):
    eng, task = files.engine(), files.task()
    store.obj_add(eng)
    store.obj_add(task)
    store.project_start("test")
    assert cmd(store) == "msg to client\n"
    assert cmd(store, task="background1") == "msg to client\n"
    assert code_of(cmd, store, "no_such_engine") == OptCode.OPT_ENG_NOEXIST
    assert code_of(cmd, store, "my_engine", "no_such_task") == OptCode.OPT_TASK_NOEXIST
    store.project_stop("test")
    assert code_of(cmd, store) == OptCode.OPT_INVAL
    store.obj_del(task)
    store.obj_del(eng)

    # start_error_ops: the start fails and the project stays stopped
    eng, task = files.engine("start_error_ops"), files.task()
    store.obj_add(eng)
    store.obj_add(task)
    assert code_of(store.project_start, "test") == OptCode.OPT_INTER_ERR
    assert not store.find_project("test").start
    store.obj_del(task)
    store.project_start("test")  # no task left: nothing to start, nothing fails
    assert code_of(store.obj_add, task) == OptCode.OPT_INTER_ERR  # start at add fails
    assert store.find_project("test").find_engine("my_engine").tasks == []
    store.project_stop("test")
    store.obj_del(eng)


def test_refused_engines(store, files, tmp_path):
    bad = {
        files.engine(libname=str(tmp_path / "missing.so")): OptCode.OPT_INTER_ERR,
        files.engine(eng_name="e" * 97): OptCode.OPT_INVAL,
        files.engine(eng_name="e" * 65): OptCode.OPT_INVAL,
        files.engine(ops="no_such_ops"): OptCode.OPT_INTER_ERR,
        files.engine(engine_private_key="4096"): OptCode.OPT_INTER_ERR,
    }
    for path, code in bad.items():
        assert code_of(store.obj_add, path) == code, path
    assert store.find_project("test").engines == []
    mode644 = tmp_path / "lib644.so"
    shutil.copy(files.lib, mode644)
    mode644.chmod(0o644)
    assert code_of(store.obj_add, files.engine(libname=str(mode644))) == OptCode.OPT_INTER_ERR


def test_null_ops(store, files):
    store.obj_add(files.engine("start_null_ops"))
    assert code_of(store.project_start, "test") == OptCode.OPT_INTER_ERR
    store.obj_del(files.engine("start_null_ops"))
    store.obj_add(files.engine("start_not_null_ops"))
    store.obj_add(files.task())
    store.project_start("test")
    assert code_of(cmd, store) == OptCode.OPT_INVAL  # NULL eng_mgt_func
    store.project_stop("test")  # NULL stop_task: skipped


def test_two_engines_from_one_library(store, files):
    store.obj_add(files.engine(eng_name="first"))
    store.obj_add(files.engine(eng_name="second"))
    store.obj_add(files.task("t1", engine="first"))
    store.obj_add(files.task("t2", engine="second"))
    assert code_of(store.obj_add, files.engine(eng_name="second")) == OptCode.OPT_ENG_EXISTED
    store.project_start("test")
    assert cmd(store, "first", "t1") == cmd(store, "second", "t2") == "msg to client\n"
    assert code_of(cmd, store, "first", "t2") == OptCode.OPT_TASK_NOEXIST
    store.obj_del(files.engine(eng_name="first"))  # deletes (and stops) t1 too
    assert cmd(store, "second") == "msg to client\n"


# --- through the executables ---------------------------------------------------------------


@pytest.fixture
def daemon_socket(tmp_path):
    name = f"etmemd-thirdparty-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    etmemd_exe = Path(sys.executable).with_name("etmemd")
    with open(tmp_path / "etmemd.log", "wb") as out:
        proc = subprocess.Popen(
            [str(etmemd_exe), "-s", name, "-l", "0"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def etmem(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("etmem")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def ok(*args: str) -> str:
    """Run etmem, expect success, return its stdout."""
    res = etmem(*args)
    assert res.returncode == 0, f"etmem {' '.join(args)}: {res.returncode} {res.stdout}{res.stderr}"
    return res.stdout


def wait_ready(sock: str) -> None:
    for _ in range(100):
        if etmem("project", "show", "-s", sock).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("etmemd did not come up")


def test_through_etmemd_and_etmem(daemon_socket, files):
    sock = daemon_socket
    wait_ready(sock)
    for path in (files.write(PROJECT), files.engine(), files.task()):
        ok("obj", "add", "-f", path, "-s", sock)
    ok("project", "start", "-n", "test", "-s", sock)
    assert ok("engine", "my_cmd", "-n", "test", "-e", "my_engine", "-s", sock) == "msg to client\n"
    res = etmem("engine", "my_cmd", "-n", "test", "-e", "nope", "-s", sock)
    assert res.returncode != 0
    assert "error: engine is not exist" in res.stdout + res.stderr
    ok("project", "stop", "-n", "test", "-s", sock)
    res = etmem("engine", "my_cmd", "-n", "test", "-e", "my_engine", "-s", sock)
    assert res.returncode != 0
    assert "error: invalid parameters" in res.stdout + res.stderr
    ok("obj", "del", "-f", files.write(PROJECT), "-s", sock)
