"""The thirdparty engine: vendors' C policies (.so) loaded and called as the original etmemd did.

The hooks are driven through pluggy exactly as the core calls them; tests/test_thirdparty_core.py
drives the same policies through etmem_core's ObjectStore.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
from etmem_sdk import (
    ENGINE_OPS,
    BufferReply,
    ConfigError,
    ConfigSection,
    Engine,
    EngineError,
    Project,
    Reply,
    Task,
    TaskPid,
    hookspecs,
)
from etmem_sdk.keyfile import keyfile_text
from etmem_thirdparty_so import abi, engine, glib, inproc, isolate, loader
from etmem_thirdparty_so.cstate import EngineState, TaskState
from thirdparty_build import build_scan_lib, compile_policy

from etmem_core.objfile import parse_object_data

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> dict[str, Path]:
    """Our test policies, compiled once, root-owned, mode 0700."""
    if os.geteuid() != 0:
        pytest.skip("policies must be owned by root: run as root")
    scan = build_scan_lib()
    tmp = tmp_path_factory.mktemp("policies")
    return {
        "my": compile_policy("my_engine.c", tmp / "libthirdparty_engine.so"),
        "layout": compile_policy("layout_engine.c", tmp / "liblayout.so"),
        "crash": compile_policy("crash_engine.c", tmp / "libcrash.so"),
        # not linked with -letmemd_scan: its etmemd_* calls resolve from the global scope
        "scan_unlinked": compile_policy("scan_engine.c", tmp / "libscan_unlinked.so"),
        "scan": compile_policy(
            "scan_engine.c", tmp / "libscan.so", f"-L{scan.parent}", "-letmemd_scan"
        ),
    }


@pytest.fixture
def hooks():
    """The plugin registered on a pluggy manager, as the core's registry does."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(engine, name="thirdparty")
    pm.check_pending()
    return pm.hook


def sections(path: Path) -> dict[str, ConfigSection]:
    """The groups of a simple key file (enough for these tests)."""
    text = path.read_text()
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = groups.setdefault(line.strip("[]"), {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value
    return {g: ConfigSection(g, items, path=str(path), text=text) for g, items in groups.items()}


class Host:
    """The few core steps the engine relies on: link, call the hook, keep newest first."""

    def __init__(self, hooks, tmp_path: Path):
        self.hooks = hooks
        self.tmp = tmp_path
        self.project = Project("proj", loop=3, interval=5, sleep=2, sysmem_threshold=40)
        self.n = 0

    def write(self, text: str) -> Path:
        self.n += 1
        path = self.tmp / f"obj{self.n}.ini"
        path.write_text(text)
        path.chmod(0o600)
        return path

    def add_engine(self, lib: Path, ops: str, eng_name: str = "my_eng", extra: str = "") -> Engine:
        cfg = sections(
            self.write(
                f"[engine]\nname=thirdparty\nproject=proj\neng_name={eng_name}\n"
                f"libname={lib}\nops_name={ops}\n{extra}"
            )
        )["engine"]
        eng = Engine(eng_name, "thirdparty", project=self.project, config=cfg)
        self.project.engines.insert(0, eng)
        try:
            self.hooks.fill_eng_params(engine=eng, config=cfg)
        except BaseException:
            self.project.engines.remove(eng)
            raise
        return eng

    def add_task(self, eng: Engine, name: str = "task1", extra: str = "task_private_key=2048\n"):
        cfg = sections(
            self.write(
                f"[task]\nproject=proj\nengine={eng.name}\nname={name}\ntype=pid\nvalue=1\n"
                f"max_threads=3\nswap_flag=yes\n{extra}"
            )
        )["task"]
        task = Task(name, "pid", "1", max_threads=3, swap_flag=True, engine=eng, config=cfg)
        eng.tasks.insert(0, task)
        try:
            self.hooks.fill_task_params(task=task, config=cfg)
        except BaseException:
            eng.tasks.remove(task)
            raise
        return task

    def del_task(self, task: Task) -> None:
        if self.project.start:
            self.hooks.stop_task(engine=task.engine, task=task)
        self.hooks.clear_task_params(task=task)
        task.engine.tasks.remove(task)

    def del_engine(self, eng: Engine) -> None:
        for task in list(eng.tasks):
            self.del_task(task)
        self.hooks.clear_eng_params(engine=eng)
        self.project.engines.remove(eng)

    def mgt(self, eng: Engine, cmd: str, task: Task | None = None) -> str:
        reply = BufferReply()
        self.hooks.eng_mgt_func(engine=eng, task=task, cmd=cmd, reply=reply)
        return reply.text


@pytest.fixture
def host(hooks, tmp_path):
    h = Host(hooks, tmp_path)
    yield h
    for eng in list(h.project.engines):
        h.del_engine(eng)


def c_string(ptr: int | None) -> bytes | None:
    return ctypes.string_at(ptr) if ptr else None


# --- the original test plugin's behaviour (its my_engine.c) ---------------------------------


def test_my_engine_ops_full_cycle(host, libs):
    eng = host.add_engine(libs["my"], "my_engine_ops", extra="engine_private_key=1024\n")
    state = eng.params
    assert isinstance(state, EngineState)
    # the policy kept the g_key_file_get_string result in eng->params
    assert c_string(state.c.params) == b"1024"
    assert state.c.engine_type == abi.THIRDPARTY_ENGINE
    assert state.c.handler == state.lib._handle
    task = host.add_task(eng)
    assert c_string(task.params.c.params) == b"2048"
    host.hooks.start_task(engine=eng, task=task)
    host.project.start = True
    assert host.mgt(eng, "my_cmd") == "msg to client\n"
    assert host.mgt(eng, "my_cmd", task) == "msg to client\n"
    host.hooks.stop_task(engine=eng, task=task)
    host.project.start = False
    host.del_task(task)
    assert task.params is None
    host.del_engine(eng)
    assert eng.params is None


@pytest.mark.parametrize("extra", ["engine_private_key=1023\n", "", "engine_private_key=1024 \n"])
def test_engine_private_key_refused(host, libs, extra):
    with pytest.raises(ConfigError, match="fill_eng_params returned"):
        host.add_engine(libs["my"], "my_engine_ops", extra=extra)
    assert host.project.engines == []


def test_task_private_key_refused(host, libs):
    eng = host.add_engine(libs["my"], "my_engine_ops", extra="engine_private_key=1024\n")
    with pytest.raises(ConfigError, match="fill_task_params returned"):
        host.add_task(eng, extra="task_private_key=1024\n")
    assert eng.tasks == []


def test_start_error_ops(host, libs):
    eng = host.add_engine(libs["my"], "start_error_ops", extra="engine_private_key=1024\n")
    task = host.add_task(eng)
    with pytest.raises(EngineError, match="start_task of task task1 returned -1"):
        host.hooks.start_task(engine=eng, task=task)


def test_start_not_null_ops(host, libs):
    eng = host.add_engine(libs["my"], "start_not_null_ops")
    task = host.add_task(eng, extra="")
    host.hooks.start_task(engine=eng, task=task)
    host.hooks.stop_task(engine=eng, task=task)  # NULL stop_task: skipped
    with pytest.raises(EngineError, match="no eng_mgt_func"):
        host.mgt(eng, "my_cmd")


def test_start_null_ops(host, libs):
    eng = host.add_engine(libs["my"], "start_null_ops")
    task = host.add_task(eng, extra="")
    with pytest.raises(EngineError, match="no start_task"):
        host.hooks.start_task(engine=eng, task=task)
    host.hooks.alloc_pid_params(engine=eng, task_pid=TaskPid(1, task=task))


# --- loading rules ---------------------------------------------------------------------------


def test_refuses_mode_0644(host, libs, tmp_path):
    lib = tmp_path / "lib644.so"
    lib.write_bytes(libs["my"].read_bytes())
    lib.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644, only 0500 or 0700"):
        host.add_engine(lib, "my_engine_ops")


def test_accepts_mode_0500_through_a_symlink(host, libs, tmp_path):
    lib = tmp_path / "lib500.so"
    lib.write_bytes(libs["my"].read_bytes())
    lib.chmod(0o500)
    link = tmp_path / "link.so"
    link.symlink_to(lib)
    eng = host.add_engine(link, "my_engine_ops", extra="engine_private_key=1024\n")
    assert eng.params.libname == str(lib)


def test_refuses_owner_not_root(host, libs, tmp_path):
    lib = tmp_path / "libuser.so"
    lib.write_bytes(libs["my"].read_bytes())
    lib.chmod(0o700)
    os.chown(lib, 1000, 0)
    with pytest.raises(ConfigError, match="owned by 1000:0, it must be owned by root:root"):
        host.add_engine(lib, "my_engine_ops")
    os.chown(lib, 0, 1000)
    with pytest.raises(ConfigError, match="owned by 0:1000"):
        host.add_engine(lib, "my_engine_ops")


def test_refuses_missing_file(host, tmp_path):
    with pytest.raises(ConfigError, match="realpath failed: No such file"):
        host.add_engine(tmp_path / "nothere.so", "my_engine_ops")


def test_refuses_directory(host, tmp_path):
    d = tmp_path / "dir.so"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        host.add_engine(d, "my_engine_ops")


def test_refuses_missing_symbol(host, libs):
    with pytest.raises(ConfigError, match="ops_name=no_such_ops: no such symbol") as info:
        host.add_engine(libs["my"], "no_such_ops")
    assert str(libs["my"].resolve()) in str(info.value)  # the library, not /proc/self/fd/N


def test_refuses_a_function_as_ops(host, libs):
    # dlsym also searches the policy's dependencies: write() is libc's function
    with pytest.raises(ConfigError, match="ops_name=write: is a function, not a struct engine_ops"):
        host.add_engine(libs["my"], "write")
    with pytest.raises(ConfigError, match="ops_name=stdout: object of 8 bytes"):
        host.add_engine(libs["my"], "stdout")


def test_refuses_long_eng_name(host, libs):
    with pytest.raises(ConfigError, match="longer than 64"):
        host.add_engine(libs["my"], "my_engine_ops", eng_name="e" * 65)
    eng = host.add_engine(
        libs["my"], "my_engine_ops", eng_name="e" * 64, extra="engine_private_key=1024\n"
    )
    assert eng.params.c.name == b"e" * 64


def test_refuses_missing_keys(hooks, libs, tmp_path):
    for missing in inproc.REQUIRED_KEYS:
        items = {"eng_name": "x", "libname": str(libs["my"]), "ops_name": "my_engine_ops"}
        del items[missing]
        cfg = ConfigSection("engine", items, path=str(tmp_path / "f"))
        with pytest.raises(ConfigError, match=f"key {missing} not set for group engine"):
            hooks.fill_eng_params(engine=Engine("x", "thirdparty"), config=cfg)


def test_refuses_a_library_that_does_not_load(host, tmp_path):
    lib = tmp_path / "garbage.so"
    lib.write_bytes(b"not an ELF file")
    lib.chmod(0o700)
    with pytest.raises(ConfigError, match="dlopen .* failed"):
        host.add_engine(lib, "my_engine_ops")


def test_several_engines_told_apart_by_eng_name(host, libs):
    a = host.add_engine(libs["layout"], "layout_ops", eng_name="first", extra="tag=A\n")
    b = host.add_engine(libs["layout"], "layout_ops", eng_name="second", extra="tag=B\n")
    ta = host.add_task(a, "ta")
    assert "name=first tag=A" in host.mgt(a, "show")
    assert "name=second tag=B" in host.mgt(b, "show")
    assert "tasks=1 first=ta" in host.mgt(a, "show")
    assert "tasks=0 first=-" in host.mgt(b, "show")
    # project->engs links the project's .so engines, newest first
    engs = b.params.c_project.engs
    assert ctypes.addressof(engs.contents) == ctypes.addressof(b.params.c)
    assert ctypes.addressof(b.params.c.next.contents) == ctypes.addressof(a.params.c)
    host.del_engine(b)
    assert "tag=A" in host.mgt(a, "show", None) and ta.params is not None


# --- the layouts, seen from C ---------------------------------------------------------------


def test_policy_reads_our_objects_through_the_structs(host, libs):
    eng = host.add_engine(libs["layout"], "layout_ops", eng_name="lay", extra="tag=hello\n")
    t1 = host.add_task(eng, "one")
    t2 = host.add_task(eng, "two")
    assert host.mgt(eng, "show") == (
        "type=7 name=lay tag=hello project=proj started=0 loop=3 interval=5 sleep=2 sysmem=40 "
        "tasks=2 first=two\n"
    )
    host.hooks.start_task(engine=eng, task=t1)
    host.hooks.start_task(engine=eng, task=t1)
    host.project.start = True
    t1.value = "4242"
    t1.max_threads = 7
    assert host.mgt(eng, "show", t1) == (
        "task=one type=pid value=4242 max_threads=7 swap_flag=1 starts=2 stops=0 same_engine=1 "
        "project=proj\n"
    )
    host.hooks.stop_task(engine=eng, task=t2)
    assert "starts=0 stops=1" in host.mgt(eng, "show", t2)
    assert "started=1" in host.mgt(eng, "show")


def test_unknown_command_fails_after_output(host, libs):
    eng = host.add_engine(libs["layout"], "layout_ops", eng_name="lay", extra="tag=t\n")
    with pytest.raises(EngineError, match="eng_mgt_func\\('nope'\\) returned -1"):
        host.mgt(eng, "nope")


def test_output_larger_than_a_pipe_reaches_the_client_without_ff_fe(host, libs):
    eng = host.add_engine(libs["layout"], "layout_ops", eng_name="lay", extra="tag=t\n")
    reply = BufferReply()
    host.hooks.eng_mgt_func(engine=eng, task=None, cmd="big", reply=reply)
    assert len(reply.data) == 200001 - 2
    assert b"\xff" not in reply.data and b"\xfe" not in reply.data
    assert reply.data.endswith(b"x\n")


def test_pid_params(host, libs):
    eng = host.add_engine(libs["my"], "my_engine_ops", extra="engine_private_key=1024\n")
    task = host.add_task(eng)
    pids = [TaskPid(10, task=task), TaskPid(11, task=task)]
    for p in pids:
        host.hooks.alloc_pid_params(engine=eng, task_pid=p)
        task.pids.append(p)
    state = task.params
    assert isinstance(state, TaskState)
    host.hooks.start_task(engine=eng, task=task)  # syncs the pid list
    first = state.c.pids.contents
    assert (first.pid, first.next.contents.pid) == (10, 11)
    assert ctypes.addressof(first.tk.contents) == ctypes.addressof(state.c)
    for p in pids:
        host.hooks.free_pid_params(engine=eng, task_pid=p)
        assert p.params is None


# --- GKeyFile ---------------------------------------------------------------------------------


def test_keyfile_is_a_real_gkeyfile():
    with glib.keyfile("[engine]\nkey=a\\tb\nsp=\\sx \n") as kf:
        assert glib.get_string(kf, "engine", "key") == "a\tb"
        assert glib.get_string(kf, "engine", "sp") == " x "
        assert glib.get_string(kf, "engine", "none") is None


def test_toml_sections_become_an_equivalent_keyfile(host, libs, tmp_path):
    text = keyfile_text([("engine", {"tag": " lead\\and\nnl", "n": "1"})])
    with glib.keyfile(text) as kf:
        assert glib.get_string(kf, "engine", "tag") == " lead\\and\nnl"
    # the sections etmemd makes of a TOML object file, as etmemd makes them
    obj = parse_object_data(
        f"""
        [project]
        name = "p"
        [[engine]]
        name = "thirdparty"
        eng_name = "tom"
        libname = "{libs["layout"]}"
        ops_name = "layout_ops"
        tag = "fromtoml"
        engine_private_key = "1024"
        [[task]]
        name = "t"
        type = "pid"
        value = "1"
        """.replace("\n        ", "\n"),
        str(tmp_path / "obj.toml"),
    )
    cfg = obj.engines[0]
    eng = Engine("tom", "thirdparty", project=host.project, config=cfg)
    host.project.engines.insert(0, eng)
    host.hooks.fill_eng_params(engine=eng, config=cfg)
    assert "tag=fromtoml" in host.mgt(eng, "show")
    # a task's fill_task_params sees its engine's group too, as with a GKeyFile object file
    with glib.keyfile(inproc._keyfile_text(obj.tasks[0])) as kf:
        assert glib.get_string(kf, "engine", "engine_private_key") == "1024"
        assert glib.get_string(kf, "task", "name") == "t"


# --- the scan library, from a policy linked with -letmemd_scan ------------------------------


@pytest.fixture
def child():
    """A live process whose mappings no longer change (it has finished starting up)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "ready\n"
    proc.stdout.close()
    yield proc
    proc.kill()
    proc.wait()


def test_policy_linked_with_scan_lib_counts_vmas(host, libs, child):
    needed = subprocess.run(
        ["readelf", "-d", str(libs["scan"])], capture_output=True, text=True, check=True
    ).stdout
    assert "libetmemd_scan.so" in needed
    assert "LD_LIBRARY_PATH" not in os.environ
    eng = host.add_engine(libs["scan"], "scan_ops", eng_name="scan")
    maps = Path(f"/proc/{child.pid}/maps").read_text().splitlines()
    assert host.mgt(eng, f"vmas {child.pid}") == f"vmas={len(maps)}\n"
    # this kernel has no /proc/PID/idle_pages: a clear error, errno ENOENT
    assert host.mgt(eng, f"refs {child.pid}") == "refs=-1 errno=2\n"
    with pytest.raises(EngineError):
        host.mgt(eng, "vmas 0")


def test_scan_lib_symbols_are_global_for_unlinked_policies(host, libs, child):
    eng = host.add_engine(libs["scan_unlinked"], "scan_ops", eng_name="scan2")
    maps = Path(f"/proc/{child.pid}/maps").read_text().splitlines()
    assert host.mgt(eng, f"vmas {child.pid}") == f"vmas={len(maps)}\n"


def test_scan_lib_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(loader.SCAN_LIB_ENV, str(tmp_path / "none.so"))
    monkeypatch.setattr(loader, "scan_lib_candidates", lambda: [str(tmp_path / "none.so")])
    loader.scan_lib.cache_clear()
    try:
        with pytest.raises(ConfigError, match="libetmemd_scan.so is not built"):
            loader.scan_lib()
    finally:
        loader.scan_lib.cache_clear()


def test_a_client_that_goes_away_does_not_block_the_policy(host, libs):
    eng = host.add_engine(libs["layout"], "layout_ops", eng_name="lay", extra="tag=t\n")
    sent = []

    def sink(data: bytes) -> None:
        sent.append(data)
        raise BrokenPipeError("client gone")

    # the policy writes 200 KB in one write(); it must return although nobody takes the bytes
    host.hooks.eng_mgt_func(engine=eng, task=None, cmd="big", reply=Reply(sink))
    assert len(sent) == 1


# --- isolate=yes: the policy in a helper process ------------------------------------------------


def test_isolated_policy_full_cycle(host, libs):
    eng = host.add_engine(
        libs["my"], "my_engine_ops", extra="engine_private_key=1024\nisolate=yes\n"
    )
    state = eng.params
    assert isinstance(state, isolate.IsolatedEngineParams) and state.proc.pid != os.getpid()
    task = host.add_task(eng)
    host.hooks.start_task(engine=eng, task=task)
    host.project.start = True
    assert host.mgt(eng, "my_cmd", task) == "msg to client\n"
    host.hooks.stop_task(engine=eng, task=task)
    host.project.start = False
    host.del_engine(eng)
    assert state.proc.returncode == 0  # the helper ended with the engine


def test_isolated_helper_that_cannot_start_leaks_no_socket(libs, monkeypatch):
    def no_process(*_a, **_kw):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(isolate.subprocess, "Popen", no_process)
    eng = Engine(name="iso", kind="thirdparty")
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        isolate.fill_eng_params(eng, ConfigSection("engine", {"eng_name": "iso"}))
    assert set(os.listdir("/proc/self/fd")) == before
    assert eng.params is None


def test_isolated_policy_sees_our_objects(host, libs):
    eng = host.add_engine(
        libs["layout"], "layout_ops", eng_name="lay", extra="tag=iso\nisolate=yes\n"
    )
    t1 = host.add_task(eng, "one")
    host.hooks.start_task(engine=eng, task=t1)
    t1.value = "777"
    assert host.mgt(eng, "show", t1) == (
        "task=one type=pid value=777 max_threads=3 swap_flag=1 starts=1 stops=0 same_engine=1 "
        "project=proj\n"
    )
    assert "name=lay tag=iso project=proj started=0 loop=3" in host.mgt(eng, "show")
    reply = BufferReply()
    host.hooks.eng_mgt_func(engine=eng, task=None, cmd="big", reply=reply)
    assert len(reply.data) == 200001 - 2
    with pytest.raises(EngineError, match="returned -1"):
        host.mgt(eng, "nope")
    host.del_task(t1)
    assert "tasks=0" in host.mgt(eng, "show")


def test_isolated_refusals_come_back_as_config_errors(host, libs):
    with pytest.raises(ConfigError, match="fill_eng_params returned"):
        host.add_engine(libs["my"], "my_engine_ops", extra="engine_private_key=1\nisolate=yes\n")
    with pytest.raises(ConfigError, match="no such symbol"):
        host.add_engine(libs["my"], "nothing_ops", extra="isolate=yes\n")
    with pytest.raises(ConfigError, match="must be yes or no"):
        host.add_engine(libs["my"], "my_engine_ops", extra="isolate=true\n")


def test_a_crash_in_an_isolated_policy_is_that_engine_failing(host, libs):
    eng = host.add_engine(libs["crash"], "crash_ops", eng_name="crashy", extra="isolate=yes\n")
    task = host.add_task(eng, extra="")
    assert host.mgt(eng, "hello") == "alive\n"
    with pytest.raises(EngineError, match="died of SIGSEGV"):
        host.hooks.start_task(engine=eng, task=task)
    with pytest.raises(EngineError, match="died of SIGSEGV"):
        host.mgt(eng, "hello")
    host.hooks.stop_task(engine=eng, task=task)  # nothing left to stop: logged, no error
    # the same policy crashing in eng_mgt_func
    other = host.add_engine(libs["crash"], "crash_ops", eng_name="crashy2", extra="isolate=yes\n")
    with pytest.raises(EngineError, match="died of SIGSEGV"):
        host.mgt(other, "crash")
    # this process and in-process engines carry on
    fine = host.add_engine(libs["my"], "my_engine_ops", extra="engine_private_key=1024\n")
    assert host.mgt(fine, "my_cmd") == "msg to client\n"
    host.del_engine(eng)
    host.del_engine(other)


@pytest.mark.parametrize("isolated", ["no", "yes"])
def test_null_ops_leave_implements(hooks, libs, tmp_path, isolated):
    every = frozenset(ENGINE_OPS)
    for ops, missing in [
        ("my_engine_ops", set()),
        ("start_not_null_ops", {"stop_task", "eng_mgt_func"}),
        ("start_null_ops", {"start_task", "stop_task", "eng_mgt_func"}),
    ]:
        items = {"eng_name": "x", "libname": str(libs["my"]), "ops_name": ops}
        items |= {"engine_private_key": "1024", "isolate": isolated}
        cfg = ConfigSection("engine", items, path=str(tmp_path / "f"), text="")
        eng = Engine("x", "thirdparty", config=cfg, implements=every)
        hooks.fill_eng_params(engine=eng, config=cfg)
        try:
            assert eng.implements == every - missing
        finally:
            hooks.clear_eng_params(engine=eng)
