"""The thirdparty engine under hostile input and hostile policies: refusals with reasons,
descriptors released, hung or dying isolated policies bounded by their deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from etmem_sdk import ConfigError
from etmem_thirdparty_so import loader
from test_thirdparty import Host, hooks, libs  # noqa: F401 - fixtures
from thirdparty_build import compile_policy

pytestmark = pytest.mark.root


def _fds_on(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


@pytest.fixture
def host(hooks, tmp_path):  # noqa: F811
    h = Host(hooks, tmp_path)
    yield h
    for eng in list(h.project.engines):
        h.del_engine(eng)


def test_a_policy_file_descriptor_goes_with_its_last_engine(host, tmp_path):
    lib = compile_policy("my_engine.c", tmp_path / "libfd.so")
    one = host.add_engine(lib, "my_engine_ops", "one", extra="engine_private_key=1024\n")
    two = host.add_engine(lib, "my_engine_ops", "two", extra="engine_private_key=1024\n")
    assert _fds_on(lib) == 1  # one pinned fd per file, whatever the number of engines
    host.del_engine(one)
    assert _fds_on(lib) == 1  # still in use by "two"
    host.del_engine(two)
    assert _fds_on(lib) == 0
    again = host.add_engine(lib, "my_engine_ops", "again", extra="engine_private_key=1024\n")
    assert host.mgt(again, "my_cmd") == "msg to client\n"


def test_a_nul_byte_in_libname_is_a_reason_not_a_traceback():
    with pytest.raises(ConfigError, match="must not contain a NUL byte"):
        loader.check_library("/usr/lib/a\0b.so")


def test_non_utf8_bytes_in_an_object_file_reach_glib_as_they_were():
    from etmem_thirdparty_so import glib

    from etmem_core.objfile import parse_object_data

    raw = b"[engine]\n# caf\xe9 au lait\nname=thirdparty\nkey=v\xff\n"
    obj = parse_object_data(raw, "/x/obj.conf")
    with glib.keyfile(obj.engines[0].text) as handle:
        assert glib.get_string(handle, "engine", "name") == "thirdparty"


# --- hung and dying isolated policies against a real etmemd ------------------------------------


def _helpers_of(pid: int) -> list[int]:
    """Pids of the isolate helpers whose parent is ``pid`` (or that name it on their argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"etmem_thirdparty_so.isolate_helper" in argv and str(pid).encode() in argv:
            found.append(int(entry))
    return found


def _hang_conf(lib: Path, project: str, task: str = "hang") -> str:
    return (
        f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n"
        f"[engine]\nname=thirdparty\nproject={project}\neng_name=hang\nlibname={lib}\n"
        f"ops_name=hang_ops\nisolate=yes\nisolate_timeout=1\n"
        f"[task]\nproject={project}\nengine=hang\nname={task}\ntype=pid\nvalue={os.getpid()}\n"
    )


@pytest.fixture
def hang_lib(tmp_path) -> Path:
    return compile_policy("hang_engine.c", tmp_path / "libhang.so")


@pytest.fixture
def daemon(tmp_path):
    from etmemd_proc import EtmemdProc

    env = dict(os.environ, ETMEMD_HOOK_DEADLINE="2")
    env.pop("NOTIFY_SOCKET", None)
    d = EtmemdProc(tmp_path, env=env)
    try:
        yield d
    finally:
        helpers = _helpers_of(d.proc.pid)
        d.stop()
        for pid in helpers:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_a_hung_isolated_policy_is_killed_and_etmemd_keeps_serving(daemon, hang_lib):
    import time

    daemon.add("h", _hang_conf(hang_lib, "h"))
    (helper,) = _helpers_of(daemon.proc.pid)
    t0 = time.monotonic()
    res = daemon.etmem("project", "start", "-n", "h", check=False)
    took = time.monotonic() - t0
    assert res.returncode != 0 and "start_task" in res.stdout, res
    assert "killed" in res.stdout, res.stdout
    assert took < 8, took  # answered, not the client's 10 s timeout
    assert daemon.etmem("project", "show").stdout.startswith("project: h\n")
    assert not os.path.exists(f"/proc/{helper}") or _helpers_of(daemon.proc.pid) == []
    res = daemon.etmem("engine", "hello", "-n", "h", "-e", "hang", check=False)
    assert res.returncode != 0
    daemon.etmem("obj", "del", "-f", str(daemon.workdir / "h.conf"))
    assert daemon.etmem("project", "show").stdout == "no project exists\n\n"
    # a private command that hangs, in a started project
    daemon.add("m", _hang_conf(hang_lib, "m", task="quick"))
    daemon.etmem("project", "start", "-n", "m")
    res = daemon.etmem("engine", "hang", "-n", "m", "-e", "hang", check=False)
    assert res.returncode != 0 and "eng_mgt_func" in res.stdout and "killed" in res.stdout
    daemon.etmem("project", "stop", "-n", "m", check=False)  # the helper is gone: logged
    assert daemon.etmem("project", "show", "-n", "m").stdout.endswith("false   \n")


@pytest.mark.parametrize("how", ["abort", "exit"])
def test_an_isolated_policy_that_aborts_or_exits_fails_only_its_engine(daemon, hang_lib, how):
    daemon.add("a", _hang_conf(hang_lib, "a", task="quick"))
    daemon.etmem("project", "start", "-n", "a")
    assert daemon.etmem("engine", "hello", "-n", "a", "-e", "hang").stdout == "alive\n"
    res = daemon.etmem("engine", how, "-n", "a", "-e", "hang", check=False)
    want = "SIGABRT" if how == "abort" else "exited with status 3"
    assert res.returncode != 0 and want in res.stdout, res.stdout
    assert daemon.proc.poll() is None
    daemon.etmem("project", "stop", "-n", "a", check=False)
    daemon.etmem("obj", "del", "-f", str(daemon.workdir / "a.conf"))
    assert _helpers_of(daemon.proc.pid) == []


def test_sigterm_with_a_hung_policy_exits_0_and_leaves_no_helper(daemon, hang_lib):
    import time

    daemon.add("h", _hang_conf(hang_lib, "h"))
    (helper,) = _helpers_of(daemon.proc.pid)
    daemon.etmem("project", "start", "-n", "h", check=False)
    daemon.add("h2", _hang_conf(hang_lib, "h2"))
    (helper2,) = _helpers_of(daemon.proc.pid)
    t0 = time.monotonic()
    daemon.proc.terminate()
    assert daemon.proc.wait(30) == 0, daemon.logtext()
    assert time.monotonic() - t0 < 30
    for pid in (helper, helper2):
        assert not os.path.exists(f"/proc/{pid}"), pid


def test_an_isolated_helper_dies_with_a_killed_etmemd(daemon, hang_lib):
    from etmemd_proc import wait_for

    daemon.add("h", _hang_conf(hang_lib, "h"))
    (helper,) = _helpers_of(daemon.proc.pid)
    daemon.proc.kill()
    daemon.proc.wait()
    assert wait_for(lambda: not os.path.exists(f"/proc/{helper}"), 5)


def test_an_in_process_policy_that_crashes_leaves_a_stack_in_the_log(daemon, tmp_path):
    """What isolate=no cannot prevent (docs/thirdparty.md): the crash ends etmemd. It must not
    do so silently."""
    lib = compile_policy("crash_engine.c", tmp_path / "libcrash_inproc.so")
    conf = (
        f"[project]\nname=c\nloop=1\ninterval=1\nsleep=1\n"
        f"[engine]\nname=thirdparty\nproject=c\neng_name=crashy\nlibname={lib}\n"
        f"ops_name=crash_ops\nisolate=no\n"
        f"[task]\nproject=c\nengine=crashy\nname=t1\ntype=pid\nvalue={os.getpid()}\n"
    )
    daemon.add("c", conf)
    daemon.etmem("project", "start", "-n", "c", check=False)
    assert daemon.proc.wait(10) != 0
    assert "Fatal Python error: Segmentation fault" in daemon.logtext()
