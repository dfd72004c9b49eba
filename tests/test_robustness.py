"""The "Safe" promise, tried against a real ``etmemd`` process.

Each test starts its own ``etmemd`` (tests/etmemd_proc.py) on a unique abstract socket and
tries to break it: protocol garbage, engines that raise anything (``SystemExit`` and
``KeyboardInterrupt`` included) or return garbage or take their time, engines whose module
cannot be imported, targets that vanish mid-cycle, object files that must be refused, and
clients that are not root. After each attack the daemon must still be alive, still answer
``project show`` correctly, and hold nothing half-applied.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_as
from etmemd_proc import EtmemdProc, throwaway_dist, wait_for
from fuzzing import exchange

from etmem_core import client
from etmem_core.protocol import FIELDS, Cmd, Request, encode_request

# ------------------------------------------------------------------------------------------------
# shared helpers


def well_formed_failure(reply: bytes) -> bool:
    """A reason line, the error text, exactly one failure marker at the very end."""
    return (
        reply.endswith(b"\xfe")
        and b"\xff" not in reply
        and b"\xfe" not in reply[:-1]
        and reply.startswith(b"etmemd: ")
    )


@dataclass
class Answer:
    """What ``etmem`` would have said: its exit status (0 or 186) and standard output."""

    returncode: int
    stdout: str


def run(d: EtmemdProc, *args: str, check: bool = True) -> Answer:
    """``etmem ARGS`` through the client library in this process (a new ``etmem`` process per
    request costs a Python start-up; the tests that are about the CLI use ``d.etmem``)."""
    opts = dict(zip(args[2::2], args[3::2], strict=False))
    json_show = "--json" in args
    if json_show:
        opts = dict(zip(args[3::2], args[4::2], strict=False))
    noun, verb = args[0], args[1]
    if noun == "obj":
        req = Request(Cmd.OBJ_ADD if verb == "add" else Cmd.OBJ_DEL, file_name=opts["-f"])
    elif noun == "project":
        cmd = {"start": Cmd.PROJ_START, "stop": Cmd.PROJ_STOP, "show": Cmd.PROJ_SHOW}[verb]
        req = Request(cmd, proj_name=opts.get("-n"), eng_cmd="json" if json_show else None)
    else:
        req = Request(
            Cmd.ENG_CMD,
            proj_name=opts["-n"],
            eng_name=opts["-e"],
            eng_cmd=verb,
            task_name=opts.get("-t"),
        )
    out = bytearray()
    res = client.call(d.sock, req, out.extend, timeout=30)
    answer = Answer(0 if res.success else 186, out.decode(errors="replace"))
    if check and answer.returncode:
        raise AssertionError(f"{args}: {answer.stdout}\n{d.logtext()}")
    return answer


def add(d: EtmemdProc, name: str, text: str, suffix: str = ".conf", check: bool = True) -> Answer:
    """Write ``NAME.conf`` (0600) and add it."""
    path = d.workdir / f"{name}{suffix}"
    path.write_text(text)
    path.chmod(0o600)
    return run(d, "obj", "add", "-f", str(path), check=check)


def show(d: EtmemdProc, *args: str) -> str:
    return run(d, "project", "show", *args).stdout


def show_json(d: EtmemdProc, project: str) -> list[dict]:
    return json.loads(run(d, "project", "show", "--json", "-n", project).stdout)


def assert_alive(d: EtmemdProc) -> None:
    assert d.proc.poll() is None, f"etmemd died ({d.proc.returncode}):\n{d.logtext()}"


@pytest.fixture
def etmemd(tmp_path, engines_site) -> Iterator[EtmemdProc]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(engines_site), env.get("PYTHONPATH")]))
    env["RB_ENGINE_LOG"] = str(tmp_path / "engine.log")
    env.pop("NOTIFY_SOCKET", None)
    d = EtmemdProc(tmp_path, env=env)
    try:
        yield d
    finally:
        d.stop()


def engine_log(tmp_path: Path) -> list[str]:
    path = tmp_path / "engine.log"
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------------------------
# throw-away engines, installed through dist-info directories on etmemd's PYTHONPATH

#: Misbehaves in the op named by the engine's ``fail_at`` key, the way ``fail_with`` says
#: (optionally only for the task named ``fail_task``); otherwise a well-behaved engine whose
#: started tasks tick a counter on a thread of their own.
RB_ENGINE = textwrap.dedent(
    """
    import os, threading, time
    from etmem_sdk import EngineError, hookimpl

    class Odd(BaseException):
        pass

    def _log(line):
        with open(os.environ["RB_ENGINE_LOG"], "a") as f:
            f.write(line + "\\n")

    def _recurse(n):
        return _recurse(n + 1) + 1

    def _misbehave(how, where):
        if how == "ValueError":
            raise ValueError(f"{where} broke")
        if how == "EngineError":
            raise EngineError(f"{where} refused")
        if how == "SystemExit":
            raise SystemExit(7)
        if how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if how == "BaseException":
            raise Odd(f"{where} odd")
        if how == "RecursionError":
            _recurse(0)
        if how == "GeneratorExit":
            raise GeneratorExit
        if how == "garbage":
            return [object(), b"\\xff\\xfe", float("nan")]
        if how == "slow":
            time.sleep(1.5)
        return None

    def _maybe(op, params, task=None):
        if params.get("fail_at") != op:
            return None
        if params.get("fail_task") not in (None, task):
            return None
        return _misbehave(params.get("fail_with"), op)

    @hookimpl
    def fill_eng_params(engine, config):
        engine.params = {k: config[k] for k in ("fail_at", "fail_with", "fail_task") if k in config}
        return _maybe("fill_eng_params", engine.params)

    @hookimpl
    def clear_eng_params(engine):
        return _maybe("clear_eng_params", engine.params)

    @hookimpl
    def fill_task_params(task, config):
        task.params = {}
        return _maybe("fill_task_params", task.engine.params, task.name)

    @hookimpl
    def clear_task_params(task):
        return _maybe("clear_task_params", task.engine.params, task.name)

    def _worker(engine, task):
        # fail_at=worker: a PeriodicWorker whose refresh and per-pid function alternate
        # between misbehaving as fail_with says and counting ticks
        from etmem_sdk import TaskPid
        from etmem_sdk.worker import PeriodicWorker

        calls = {"refresh": 0, "func": 0}
        how = engine.params.get("fail_with")

        def refresh(t):
            calls["refresh"] += 1
            if calls["refresh"] % 3 == 0:
                _misbehave(how, "refresh")
            return [TaskPid(pid=os.getpid(), task=t)]

        def func(tp, sleep):
            calls["func"] += 1
            if calls["func"] % 2 == 0:
                _misbehave(how, "per-pid")
            task.stats["ticks"] = task.stats.get("ticks", 0) + 1

        worker = PeriodicWorker(task, func, interval=0.05, refresh=refresh)
        task.params["worker"] = worker
        worker.start()
        task.stats["running"] = True
        _log(f"start {engine.project.name} {task.name}")

    @hookimpl
    def start_task(engine, task):
        if engine.params.get("fail_at") == "worker":
            return _worker(engine, task)
        result = _maybe("start_task", engine.params, task.name)
        stop = threading.Event()

        def tick():
            while not stop.wait(0.05):
                task.stats["ticks"] = task.stats.get("ticks", 0) + 1

        thread = threading.Thread(target=tick, daemon=True)
        task.params["stop"], task.params["thread"] = stop, thread
        task.stats["running"] = True
        thread.start()
        _log(f"start {engine.project.name} {task.name}")
        return result

    @hookimpl
    def stop_task(engine, task):
        worker = task.params.pop("worker", None)
        if worker is not None:
            worker.stop()
        stop, thread = task.params.pop("stop", None), task.params.pop("thread", None)
        if stop is not None:
            stop.set()
            thread.join(1)
        task.stats["running"] = False
        _log(f"stop {engine.project.name} {task.name}")
        return _maybe("stop_task", engine.params, task.name)

    @hookimpl
    def eng_mgt_func(engine, task, cmd, reply):
        if cmd.startswith("raise-"):
            return _misbehave(cmd[len("raise-"):], "eng_mgt_func")
        if cmd == "badwrite":
            reply.write(12345)
        if cmd == "garbage":
            return object()
        if cmd == "poison-stats":  # stats no JSON encoder can take as they are
            class Bad:
                def __str__(self):
                    raise RuntimeError("no text")

            loop = {}
            loop["self"] = loop
            task.stats.update(loop=loop, nan=float("nan"), bad=Bad(), big=1 << 80)
            engine.stats = [1, 2, 3]
            task.value = 12345  # core fields, overwritten with the wrong types
            task.max_threads = Bad()
            task.pids = None
        reply.write(f"ok {cmd}\\n")
    """
)


@pytest.fixture(scope="module")
def engines_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("rb-engines")
    throwaway_dist(site, "etmem-rb-engine", "0.1", "etmem_rb_engine", RB_ENGINE, "rbeng")
    for exc in ("RuntimeError", "SystemExit", "KeyboardInterrupt"):
        throwaway_dist(
            site,
            f"etmem-rb-import-{exc.lower()}",
            "0.1",
            f"etmem_rb_import_{exc.lower()}",
            f"raise {exc}('cannot be imported')\n",
            f"rbimp{exc.lower()}",
        )
    return site


def project_conf(project: str, engine: str = "rbeng", **engine_keys: str) -> str:
    """One project, one engine, one task ``t1`` (GKeyFile: a file holds one task at most)."""
    text = f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n"
    text += f"[engine]\nname={engine}\nproject={project}\n"
    text += "".join(f"{k}={v}\n" for k, v in engine_keys.items())
    text += f"[task]\nproject={project}\nengine={engine}\nname=t1\ntype=pid\nvalue={os.getpid()}\n"
    return text


def project_toml(project: str, tasks: tuple[str, ...], **engine_keys: str) -> str:
    """One project, one ``rbeng`` engine, several tasks (TOML holds several)."""
    text = f'[project]\nname = "{project}"\nloop = 1\ninterval = 1\nsleep = 1\n'
    text += '[[engine]]\nname = "rbeng"\n'
    text += "".join(f'{k} = "{v}"\n' for k, v in engine_keys.items())
    for t in tasks:
        text += f'[[task]]\nname = "{t}"\ntype = "pid"\nvalue = "{os.getpid()}"\n'
    return text


def add_toml(d: EtmemdProc, name: str, text: str, check: bool = True) -> Answer:
    """Write ``NAME.toml`` (0600) and add it."""
    return add(d, name, text, ".toml", check)


# ------------------------------------------------------------------------------------------------
# 1. protocol garbage


def _valid_words(rng: random.Random) -> list[str]:
    values = {
        "proj_name": rng.choice(["-", "nosuch", "p" * 64]),
        "file_name": rng.choice(["-", "/nonexistent/x.conf"]),
        "cmd": str(rng.choice([2, 3, 4, 5])),
        "eng_name": rng.choice(["-", "slide"]),
        "eng_cmd": rng.choice(["-", "showstats"]),
        "task_name": rng.choice(["-", "t"]),
    }
    return [w for f in FIELDS for w in (f, values[f])]


def _garbage(rng: random.Random) -> list[tuple[str, bytes]]:
    """(kind, bytes) -- every one of them malformed by construction."""
    cases: list[tuple[str, bytes]] = []
    base = encode_request(Request(Cmd.PROJ_SHOW, proj_name="nosuch"))
    for _ in range(60):
        cases.append(("random bytes", rng.randbytes(rng.randint(1, 600))))
    for _ in range(20):
        cases.append(("too long", base + b" " + b"x" * rng.randint(513 - len(base), 3000)))
    for _ in range(30):
        words = _valid_words(rng)
        drop = rng.randrange(len(FIELDS))
        del words[2 * drop : 2 * drop + 2]
        cases.append(("missing field", " ".join(words).encode()))
    for _ in range(30):
        words = _valid_words(rng)
        pairs = [words[i : i + 2] for i in range(0, len(words), 2)]
        while [p[0] for p in pairs] == list(FIELDS):
            rng.shuffle(pairs)
        cases.append(("wrong order", " ".join(w for p in pairs for w in p).encode()))
    bad_cmds = ["x", "-1", "4.0", "0x4", "+4", "\u0664", "99999999999", "6", "1e0", "４", "--"]
    for bad in bad_cmds:
        words = _valid_words(rng)
        words[5] = bad
        cases.append(("non-decimal cmd", " ".join(words).encode()))
    for _ in range(40):
        data = bytearray(base)
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = rng.choice([b"\0", b"\xff", b"\xfe", b"\xff\xfe", b"\n", b"\x7f"])
        cases.append(("embedded byte", bytes(data)))
    for _ in range(30):
        cases.append(("half request", base[: rng.randint(1, len(base) - 1)]))
    for _ in range(20):
        cases.append(("extra spaces", base.replace(b" ", b"  ", rng.randint(1, 11))))
    vocab = [*FIELDS, "-", "0", "4", "", "\t", "cmd4", "proj_name=", "\u00e9"]
    for _ in range(50):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 14))]
        data = " ".join(words).encode()
        if words and data:
            try:
                from etmem_core.protocol import decode_request

                decode_request(data)
                continue  # accidentally valid: not garbage
            except ValueError:
                pass
            cases.append(("random words", data))
    return cases


def test_protocol_garbage_gets_failure_replies_and_the_daemon_keeps_serving(etmemd, tmp_path):
    add(etmemd, "keep", project_conf("keep"))
    before = show(etmemd)
    assert before.startswith("project: keep\n")

    rng = random.Random(20261125)
    cases = _garbage(rng)
    assert len(cases) > 250
    for i, (kind, data) in enumerate(cases):
        reply = exchange(etmemd.sock, data)
        assert well_formed_failure(reply), (i, kind, data, reply, etmemd.logtext())
        if i % 50 == 0:
            assert_alive(etmemd)

    # connect and close at once; connect, send half a request, close without reading
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect("\0" + etmemd.sock)
    for n in range(1, 20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect("\0" + etmemd.sock)
            sock.sendall(b"proj_name - file_name"[:n])

    assert_alive(etmemd)
    assert show(etmemd) == before  # nothing garbage said changed anything
    reply = exchange(etmemd.sock, encode_request(Request(Cmd.PROJ_SHOW, proj_name="keep")))
    assert reply == before.encode() + b"\xff"


# ------------------------------------------------------------------------------------------------
# 2. engines that misbehave

RAISES = ["ValueError", "EngineError", "SystemExit", "KeyboardInterrupt", "BaseException"]
RAISES += ["RecursionError", "GeneratorExit"]


def _steady(d: EtmemdProc) -> None:
    """A project of a good engine, started: it must keep running through everything."""
    add(d, "steady", project_conf("steady"))
    run(d, "project", "start", "-n", "steady")


def _steady_ticks(d: EtmemdProc) -> int:
    (proj,) = show_json(d, "steady")
    assert proj["started"] is True
    (task,) = proj["engines"][0]["tasks"]
    return task["stats"].get("ticks", 0)


def test_engine_command_raising_anything_is_one_failed_request(etmemd, tmp_path):
    _steady(etmemd)
    ticks = _steady_ticks(etmemd)
    for how in RAISES:
        res = etmemd.etmem("engine", f"raise-{how}", "-n", "steady", "-e", "rbeng", check=False)
        assert res.returncode == 186, (how, res, etmemd.logtext())
        assert "engine rbeng: eng_mgt_func" in res.stdout, (how, res.stdout)
        assert_alive(etmemd)
    bad = run(etmemd, "engine", "badwrite", "-n", "steady", "-e", "rbeng", check=False)
    assert bad.returncode == 186 and "engine rbeng: eng_mgt_func" in bad.stdout
    ok = run(etmemd, "engine", "garbage", "-n", "steady", "-e", "rbeng")
    assert ok.stdout == ""  # what the hook returns is ignored
    assert wait_for(lambda: _steady_ticks(etmemd) > ticks, 5)


@pytest.mark.parametrize("op", ["fill_eng_params", "fill_task_params"])
def test_failed_obj_add_leaves_nothing_of_the_file(etmemd, tmp_path, op):
    _steady(etmemd)
    before = show(etmemd)
    for how in RAISES:
        keys = {"fail_task": "t2"} if op == "fill_task_params" else {}
        conf = project_toml("half", ("t1", "t2"), fail_at=op, fail_with=how, **keys)
        res = add_toml(etmemd, f"half-{how}", conf, check=False)
        assert res.returncode == 186, (how, res, etmemd.logtext())
        assert f"engine rbeng: {op}" in res.stdout, (how, res.stdout)
        assert_alive(etmemd)
        assert show(etmemd) == before, how  # no project half, no engine, no task
        assert show_json(etmemd, "half") == []
    ticks = _steady_ticks(etmemd)
    assert wait_for(lambda: _steady_ticks(etmemd) > ticks, 5)


def test_garbage_returns_and_slow_hooks_are_harmless(etmemd, tmp_path):
    add(etmemd, "g", project_conf("g", fail_at="fill_eng_params", fail_with="garbage"))
    add(etmemd, "s", project_conf("s", fail_at="start_task", fail_with="slow"))
    run(etmemd, "project", "start", "-n", "s")
    assert show_json(etmemd, "s")[0]["started"] is True
    run(etmemd, "project", "stop", "-n", "s")
    assert show(etmemd, "-n", "g").startswith("project: g\n")


def test_a_worker_whose_cycle_raises_anything_keeps_cycling(etmemd, tmp_path):
    for how in ("SystemExit", "KeyboardInterrupt", "BaseException", "ValueError"):
        name = f"w{how.lower()}"
        add(etmemd, name, project_conf(name, fail_at="worker", fail_with=how))
        run(etmemd, "project", "start", "-n", name)

    def ticks(name: str) -> int:
        (proj,) = show_json(etmemd, name)
        return proj["engines"][0]["tasks"][0]["stats"].get("ticks", 0)

    # every third refresh and every second cycle raise; the worker must still tick on
    for how in ("SystemExit", "KeyboardInterrupt", "BaseException", "ValueError"):
        name = f"w{how.lower()}"
        assert wait_for(lambda n=name: ticks(n) >= 10, 10), (how, etmemd.logtext())
    assert_alive(etmemd)


def test_garbage_stats_do_not_break_project_show(etmemd, tmp_path):
    _steady(etmemd)
    add(etmemd, "poison", project_conf("poison"))
    run(etmemd, "project", "start", "-n", "poison")
    run(etmemd, "engine", "poison-stats", "-n", "poison", "-e", "rbeng", "-t", "t1")
    ticks = _steady_ticks(etmemd)  # the other project still shows
    assert ticks >= 0
    everything = run(etmemd, "project", "show", "--json")
    doc = json.loads(everything.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert [p["name"] for p in doc] == ["poison", "steady"]
    (task,) = doc[0]["engines"][0]["tasks"]
    assert task["stats"]["running"] is True and task["stats"]["big"] == 1 << 80
    table = show(etmemd)
    assert table.startswith("project: poison\n") and "12345" in table, table


def test_failed_project_start_stops_what_it_started(etmemd, tmp_path):
    _steady(etmemd)
    for how in RAISES:
        name = f"st{how.lower()}"
        conf = project_toml(name, ("t1", "t2"), fail_at="start_task", fail_with=how, fail_task="t1")
        add_toml(etmemd, name, conf)
        res = run(etmemd, "project", "start", "-n", name, check=False)
        assert res.returncode == 186, (how, res, etmemd.logtext())
        assert "engine rbeng: start_task" in res.stdout, (how, res.stdout)
        assert_alive(etmemd)
        (proj,) = show_json(etmemd, name)
        assert proj["started"] is False, how
        assert not any(t["stats"].get("running") for t in proj["engines"][0]["tasks"]), how
        # tasks start newest first: t2 started, then t1 raised before starting anything, and
        # t2 was stopped again
        mine = [line for line in engine_log(tmp_path) if f" {name} " in line]
        assert f"start {name} t1" not in mine, (how, mine)
        assert sorted(mine) == [f"start {name} t2", f"stop {name} t2"], (how, mine)
        run(etmemd, "obj", "del", "-f", str(tmp_path / f"{name}.toml"))
    # the loop above can finish before the steady task's first tick (50 ms): what must hold is
    # that the other project keeps running, so wait for it to tick at all
    assert wait_for(lambda: _steady_ticks(etmemd) > 0, 5), etmemd.logtext()


def test_teardown_hooks_raising_still_remove_and_stop(etmemd, tmp_path):
    for op in ("stop_task", "clear_task_params", "clear_eng_params"):
        for how in ("SystemExit", "KeyboardInterrupt"):
            name = f"td{op[:5]}{how[:5]}".lower()
            add(etmemd, name, project_conf(name, fail_at=op, fail_with=how))
            run(etmemd, "project", "start", "-n", name)
            if op == "stop_task":
                res = run(etmemd, "project", "stop", "-n", name, check=False)
                assert res.returncode == 186 and f"engine rbeng: {op}" in res.stdout, res
                assert show_json(etmemd, name)[0]["started"] is False
            res = run(etmemd, "obj", "del", "-f", str(tmp_path / f"{name}.conf"), check=False)
            if op != "stop_task":
                assert res.returncode == 186 and f"engine rbeng: {op}" in res.stdout, res
            assert_alive(etmemd)
            assert show_json(etmemd, name) == [], (op, how)


def test_engine_module_raising_at_import_is_named_and_nothing_is_added(etmemd, tmp_path):
    for exc in ("runtimeerror", "systemexit", "keyboardinterrupt"):
        engine = f"rbimp{exc}"
        for attempt in range(2):  # a failed import is not cached: it fails the same way again
            res = add(etmemd, f"imp{attempt}", project_conf("imp", engine=engine), check=False)
            assert res.returncode == 186, (res, etmemd.logtext())
            assert f"engine '{engine}': cannot import it" in res.stdout, res.stdout
            assert_alive(etmemd)
            assert show(etmemd) == "no project exists\n\n"


def test_a_hung_hook_is_named_to_the_requests_waiting_behind_it(tmp_path):
    """A hook that does not return holds the store; the requests behind it are answered
    "busy", naming the engine and the op, instead of timing out without a word."""
    import threading

    from etmem_sdk import BufferReply, hookimpl

    from etmem_core.errors import OptError
    from etmem_core.lifecycle import ObjectStore
    from etmem_core.registry import EngineRegistry

    release = threading.Event()

    class Hangs:
        @hookimpl
        def start_task(self, engine, task):
            release.wait(30)

        @hookimpl
        def stop_task(self, engine, task):
            pass

    registry = EngineRegistry()
    registry.register_plugin("hangs", Hangs())
    store = ObjectStore(registry, lock_wait=0.3)
    conf = tmp_path / "h.conf"
    conf.write_text(project_conf("h", engine="hangs"))
    conf.chmod(0o600)
    store.obj_add(str(conf))
    starter = threading.Thread(target=store.project_start, args=("h",))
    starter.start()
    try:
        assert wait_for(lambda: store._busy is not None, 5)
        for request in (
            lambda: store.project_show(None, BufferReply()),
            lambda: store.project_show_json("h"),
            lambda: store.project_stop("h"),
            lambda: store.obj_del(str(conf)),
        ):
            with pytest.raises(OptError, match="etmemd is busy: engine hangs: start_task has"):
                request()
    finally:
        release.set()
        starter.join(10)
    reply = BufferReply()
    store.project_show(None, reply)
    assert reply.text.startswith("project: h\n") and reply.text.endswith("true    \n")
    store.shutdown()


# ------------------------------------------------------------------------------------------------
# 3. vanishing targets (real kernel: slide with the refs tracker and the pageout actuator)

#: A target named argv[1]: 16 MiB filled once and left alone (cold), 1 MiB it keeps touching.
VICTIM = textwrap.dedent(
    """
    import ctypes, mmap, sys, time
    ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # mmap's default is shared (not anon)
    cold = mmap.mmap(-1, 16 << 20, flags=private)
    for i in range(16):
        cold[i << 20 : (i + 1) << 20] = b"\\x5a" * (1 << 20)
    hot = mmap.mmap(-1, 1 << 20, flags=private)
    # other VMA flags, or the kernel merges both mappings into one VMA, which the per-VMA refs
    # tracker then sees as wholly hot
    hot.madvise(mmap.MADV_NOHUGEPAGE)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        for i in range(0, 1 << 20, 4096):
            hot[i] = 1
        time.sleep(0.1)
    """
)


class Victims:
    """Short-lived target processes called ``comm``; all killed in :meth:`kill_all`."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.procs: list[subprocess.Popen] = []

    def spawn(self, comm: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(self.script), comm], stdout=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.mark.root
@pytest.mark.swap
def test_vanishing_targets_do_not_stop_the_daemon(etmemd, tmp_path):
    from etmem_sdk.testing import swap_on

    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    comm = f"rbv{os.getpid() % 100000}"
    lone = f"rbl{os.getpid() % 100000}"
    rng = random.Random(7)
    with swap_on(128):
        victims = Victims(script)
        try:
            first = victims.spawn(comm)
            single = victims.spawn(lone)
            keys = 'T = 1\ntracker = "refs"\nactuator = "pageout"\n'
            add_toml(
                etmemd,
                "vanish",
                '[project]\nname = "vanish"\nloop = 2\ninterval = 1\nsleep = 1\n'
                '[[engine]]\nname = "slide"\n'
                f'[[task]]\nname = "byname"\ntype = "name"\nvalue = "{comm}"\n{keys}'
                f'[[task]]\nname = "bypid"\ntype = "pid"\nvalue = "{single.pid}"\n{keys}'
                # never targets: etmemd itself and init
                f'[[task]]\nname = "self"\ntype = "pid"\nvalue = "{etmemd.proc.pid}"\n{keys}'
                f'[[task]]\nname = "init"\ntype = "pid"\nvalue = "1"\n{keys}',
            )
            run(etmemd, "project", "start", "-n", "vanish")

            def cycles(task: str) -> int:
                (proj,) = show_json(etmemd, "vanish")
                (t,) = [t for t in proj["engines"][0]["tasks"] if t["name"] == task]
                return t["stats"].get("cycles", 0)

            current = first
            pids = {first.pid}
            for round_ in range(2):
                seen = cycles("byname")
                assert wait_for(lambda s=seen: cycles("byname") > s, 20), etmemd.logtext()
                time.sleep(rng.uniform(0.3, 1.8))  # somewhere inside the next cycle
                current.kill()
                current.wait()
                if round_ == 0:
                    single.kill()  # the pid task's target is gone for good
                    single.wait()
                time.sleep(rng.uniform(0.0, 1.0))
                current = victims.spawn(comm)  # same name, new pid
                pids.add(current.pid)
                assert_alive(etmemd)
            seen = cycles("byname")
            assert wait_for(lambda: cycles("byname") > seen, 20), etmemd.logtext()
            assert len(pids) == 3
            (proj,) = show_json(etmemd, "vanish")
            byname = next(t for t in proj["engines"][0]["tasks"] if t["name"] == "byname")
            assert [p["pid"] for p in byname["pids"]] == [current.pid]

            def swapped() -> int:
                (proj,) = show_json(etmemd, "vanish")
                return next(
                    t["stats"]["bytes_swapped"]
                    for t in proj["engines"][0]["tasks"]
                    if t["name"] == "byname"
                )

            # the last target lives on: its cold mapping goes (the cycles do real page-outs)
            assert wait_for(lambda: swapped() >= 8 << 20, 20), etmemd.logtext()
            (proj,) = show_json(etmemd, "vanish")
            for t in proj["engines"][0]["tasks"]:
                assert t["stats"]["errors"] == 0, (t, etmemd.logtext())
                assert t["stats"]["running"] is True
                if t["name"] in ("self", "init"):
                    assert t["pids"] == [] and t["stats"]["cycles"] == 0, t
            errors = [line for line in etmemd.logtext().splitlines() if " ERROR " in line]
            assert len(errors) <= 2, "\n".join(errors)
            run(etmemd, "project", "stop", "-n", "vanish")
            assert_alive(etmemd)
        finally:
            etmemd.stop()
            victims.kill_all()  # before swapoff


def _spawn_with_pid(pid: int) -> subprocess.Popen | None:
    """A ``sleep`` child that gets the pid number ``pid`` (free again), through ns_last_pid."""
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(["sleep", "60"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.root
def test_a_reused_pid_number_is_not_the_target(tmp_path):
    """A type=pid target exits and a stranger later gets its pid number (pid_max is 32768
    here, so this happens): the stranger must never be scanned or paged out."""
    from etmem_sdk import Task
    from etmem_sdk.targets import refresh_task_pids

    first = subprocess.Popen(["sleep", "60"])
    stranger = None
    try:
        task = Task(name="t", type="pid", value=str(first.pid))
        assert [tp.pid for tp in refresh_task_pids(task)] == [first.pid]
        first.kill()
        first.wait()
        assert refresh_task_pids(task) == []
        # a process is (pid, start time in 10 ms clock ticks); a real reuse needs the pid
        # numbers to wrap, far longer than a tick
        time.sleep(0.05)
        stranger = _spawn_with_pid(first.pid)
        assert stranger is not None, "could not get the pid number back through ns_last_pid"
        for _ in range(3):
            assert refresh_task_pids(task) == []
    finally:
        for proc in (first, stranger):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------------------------------------
# 4. object-file checks through the real client


def test_unacceptable_object_files_are_refused_and_the_daemon_keeps_serving(etmemd, tmp_path):
    good = project_conf("files")
    cases: dict[str, tuple[Path, str]] = {}

    def regular(name: str, data: bytes, mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    cases["world-writable"] = (regular("ww.conf", good.encode(), 0o666), "mode 0666")
    other = regular("nobody.conf", good.encode())
    os.chown(other, 65534, 65534)
    cases["not root-owned"] = (other, "owned by 65534:65534")
    shadow = regular("shadow-like", good.encode(), 0o640)
    link = tmp_path / "link.conf"
    link.symlink_to(shadow)
    cases["symlink to a 0640 file"] = (link, "is a symbolic link")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, 65534)  # its owner could swap the file between check and read
    cases["in a directory a user owns"] = (regular("shared/in.conf", good.encode()), "uid 65534")
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo, 0o600)
    cases["fifo"] = (fifo, "not a regular file")
    directory = tmp_path / "dir.conf"
    directory.mkdir(0o700)
    cases["directory"] = (directory, "is a directory")
    big = tmp_path / "big.conf"
    with open(big, "wb") as f:
        f.write(good.encode())
        f.truncate(10 * 1024 * 1024 + 1)
    big.chmod(0o600)
    cases["10 MiB + 1"] = (big, "size 10485761 bytes")
    nul = good.replace("loop=1", "loop=1\0").encode()
    cases["NUL byte"] = (regular("nul.conf", nul), "nul.conf")
    bad_utf8 = good.encode().replace(b"name=files", b"name=fi\xc3\x28les")
    cases["invalid UTF-8"] = (regular("utf8.conf", bad_utf8), "must be valid UTF-8")
    cases["missing"] = (tmp_path / "missing.conf", "No such file")
    # names no request could reach, or that would forge lines in `project show`
    for i, name in enumerate(("files\\nproject: forged", "fi les", "fi\\tles", "-")):
        unreachable = good.replace("name=files", f"name={name}", 1).encode()
        cases[f"name {name!r}"] = (regular(f"name{i}.conf", unreachable), "[project] name=")

    for what, (path, says) in cases.items():
        res = etmemd.etmem("obj", "add", "-f", str(path), check=False)
        assert res.returncode == 186, (what, res, etmemd.logtext())
        reason = next((ln for ln in res.stdout.splitlines() if ln.startswith("etmemd: ")), "")
        assert str(path) in reason or path.name in reason, (what, res.stdout)
        assert says in reason, (what, res.stdout)
        assert_alive(etmemd)
        assert show(etmemd) == "no project exists\n\n", what

    for i, deep in enumerate(("[" * 50000 + "]" * 50000, "{a=" * 20000 + "1" + "}" * 20000)):
        nested = regular(f"deep{i}.toml", f'[project]\nname = "files"\nloop = {deep}\n'.encode())
        res = etmemd.etmem("obj", "add", "-f", str(nested), check=False)
        assert res.returncode == 186, res
        assert f"etmemd: deep{i}.toml: arrays or tables nested too deeply" in res.stdout, res
    assert_alive(etmemd)

    # a type=pid task whose value is no process id would never find a target
    for value in ("abc", "-1", "0", "0x10", "1e3", "4294967297"):
        bad_pid = regular(
            "badpid.conf",
            project_conf("files").replace(f"value={os.getpid()}", f"value={value}").encode(),
        )
        res = add(etmemd, "badpid", bad_pid.read_text(), check=False)
        assert res.returncode == 186, (value, res)
        assert f"[task] value={value}: type=pid needs a process id" in res.stdout, res.stdout
        assert show(etmemd) == "no project exists\n\n", value

    # a path the protocol cannot carry is refused by the client, naming it
    spaced = regular("sp aced.conf", good.encode())
    res = etmemd.etmem("obj", "add", "-f", str(spaced), check=False)
    assert res.returncode == 255 and f"file_name '{spaced}' cannot be sent" in res.stderr, res

    # and a good file still goes in
    etmemd.add("files", good)
    assert show(etmemd).startswith("project: files\n")


def test_unacceptable_policy_libraries_are_refused(etmemd, tmp_path):
    """thirdparty ``libname``: only a root:root regular file with mode 0500/0700 is loaded."""
    from thirdparty_build import compile_policy

    good = compile_policy("my_engine.c", tmp_path / "libgood.so")
    libs: dict[str, tuple[Path, str]] = {}

    def copy(name: str, mode: int, owner: tuple[int, int] = (0, 0)) -> Path:
        path = tmp_path / name
        path.write_bytes(good.read_bytes())
        os.chown(path, *owner)
        path.chmod(mode)
        return path

    libs["world-writable"] = (copy("libww.so", 0o777), "has mode 0777")
    libs["group-writable"] = (copy("libgw.so", 0o770), "has mode 0770")
    libs["not root-owned"] = (copy("libnobody.so", 0o700, (65534, 65534)), "owned by 65534:65534")
    link = tmp_path / "liblink.so"
    link.symlink_to(copy("libtarget.so", 0o755))
    libs["symlink to a 0755 file"] = (link, "has mode 0755")
    fifo = tmp_path / "libfifo.so"
    os.mkfifo(fifo, 0o700)
    libs["fifo"] = (fifo, "is not a regular file")
    directory = tmp_path / "libdir.so"
    directory.mkdir(0o700)
    libs["directory"] = (directory, "is not a regular file")
    libs["missing"] = (tmp_path / "libmissing.so", "realpath failed")
    text = tmp_path / "libtext.so"
    text.write_text("not an ELF object\n")
    text.chmod(0o700)
    libs["not ELF"] = (text, "dlopen")

    for what, (lib, says) in libs.items():
        conf = (
            "[project]\nname=so\nloop=1\ninterval=1\nsleep=1\n"
            f"[engine]\nname=thirdparty\nproject=so\neng_name=vendor\nlibname={lib}\n"
            "ops_name=start_not_null_ops\n"
        )
        res = add(etmemd, "so", conf, check=False)
        assert res.returncode == 186, (what, res, etmemd.logtext())
        assert says in res.stdout and "engine vendor: fill_eng_params" in res.stdout, res.stdout
        assert lib.name in res.stdout, (what, res.stdout)
        assert_alive(etmemd)
        assert show(etmemd) == "no project exists\n\n", what
    add(etmemd, "so", conf.replace(str(lib), str(good)))  # the checked original loads
    assert show(etmemd).startswith("project: so\n")


def test_a_library_swapped_after_its_check_is_not_loaded(tmp_path, monkeypatch):
    """Whoever can write the library's directory must not get code loaded between the checks
    and dlopen: the file loaded is the file checked."""
    from etmem_thirdparty_so import loader
    from thirdparty_build import compile_policy

    lib = compile_policy("my_engine.c", tmp_path / "libswap.so")
    evil = tmp_path / "evil.so"
    evil.write_bytes(lib.read_bytes())
    evil.chmod(0o777)  # anyone's code, as far as the checks can tell
    checked = loader.check_library

    def check_then_swap(libname: str) -> str:
        path = checked(libname)
        os.rename(evil, path)  # the swap lands right after the checks
        return path

    monkeypatch.setattr(loader, "check_library", check_then_swap)
    with pytest.raises(loader.ConfigError, match="has mode 0777"):
        loader.open_checked_library(str(lib))


def test_libraries_loaded_through_their_fds_never_alias(tmp_path):
    """dlopen matches names of loaded objects: two policies must never be loaded under one
    /proc/self/fd/N name (the second would silently be the first)."""
    from etmem_thirdparty_so import glib, loader
    from thirdparty_build import compile_policy

    loader.scan_lib()  # what the engine loads first; the policy links with both
    glib.libglib()
    handles = []
    for i in range(3):
        lib = compile_policy("my_engine.c", tmp_path / f"libalias{i}.so")
        handles.append(loader.open_checked_library(str(lib))[1]._handle)
    assert len(set(handles)) == 3
    # the same file again is the same library, as with dlopen by path
    assert loader.open_checked_library(str(tmp_path / "libalias0.so"))[1]._handle == handles[0]


def test_an_untrusted_scan_library_is_not_loaded(tmp_path, monkeypatch):
    """libetmemd_scan.so runs in the root daemon like a policy: a copy anyone could have
    written (ETMEMD_SCAN_LIB, or the build directory) is refused, saying why."""
    from etmem_thirdparty_so import loader

    built = Path(loader.scan_lib_candidates()[-2])
    for name, mode, owner, says in (
        ("ww.so", 0o777, (0, 0), "writable by group or others"),
        ("nobody.so", 0o755, (65534, 0), "owned by uid 65534"),
    ):
        copy = tmp_path / name
        copy.write_bytes(built.read_bytes())
        os.chown(copy, *owner)
        copy.chmod(mode)
        with pytest.raises(loader.ConfigError, match=says):
            os.close(loader._open_trusted(str(copy)))


# ------------------------------------------------------------------------------------------------
# 5. root-only control

PROBE = textwrap.dedent(
    """
    import socket, sys
    replies = []
    for request in sys.argv[2:]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect("\\0" + sys.argv[1])
        data = b""
        try:
            s.sendall(request.encode())
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            pass
        s.close()
        replies.append(data)
    sys.stdout.write(repr(replies))
    """
)


def _client_as(user: int, group: int, sock: str) -> str:
    """As ``user``:``group``, ask ``project show`` through ``etmem_core.client``; what happened,
    as text."""
    from etmem_core import client

    def ask() -> str:
        out = bytearray()
        try:
            res = client.call(sock, Request(Cmd.PROJ_SHOW), out.extend, timeout=15)
        except client.ClientError as exc:
            # closed without a word: the client notices while sending or receiving
            return "no service" if exc.stage in ("send", "recv") else f"{exc.stage}: {exc}"
        return f"answered success={res.success}: {bytes(out)!r}"

    return run_as(user, group, ask)


@pytest.mark.root
def test_non_root_clients_get_no_service(etmemd, tmp_path):
    etmemd.add("mine", project_conf("mine"))
    before = show(etmemd)
    extra = tmp_path / "extra.conf"
    extra.write_text(project_conf("extra"))
    extra.chmod(0o600)
    requests = [
        encode_request(Request(Cmd.PROJ_SHOW)),
        encode_request(Request(Cmd.PROJ_START, proj_name="mine")),
        encode_request(Request(Cmd.OBJ_ADD, file_name=str(extra))),
        encode_request(Request(Cmd.OBJ_DEL, file_name=str(tmp_path / "mine.conf"))),
    ]
    for user, group in ((65534, 65534), (0, 65534), (65534, 0)):
        probe = subprocess.run(
            ["/usr/bin/python3", "-c", PROBE, etmemd.sock, *(r.decode() for r in requests)],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            user=user,
            group=group,
            extra_groups=[],
        )
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout == repr([b""] * len(requests)), (user, group, probe.stdout)
        # the real client library, in a forked child that dropped to that uid/gid
        assert _client_as(user, group, etmemd.sock) == "no service", (user, group)
    assert_alive(etmemd)
    assert show(etmemd) == before  # nothing started, added or deleted
    assert "permission denied" in etmemd.logtext()
