"""etmemd's command line: the original's accepted and refused forms (etmemd_common.c, and the
original's etmem_common_func_llt test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etmem_core import daemon
from etmem_core.daemon import ArgsExit, Options, parse_args

ETMEMD = Path(sys.executable).parent / "etmemd"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "socket name of rpc to listen must be provided"),
        (["-d"], "invalid option -- 'd'"),
        (["help"], "useless parameters"),
        (["---help"], "unrecognized option '---help'"),
        (["-l"], "requires an argument"),
        (["-l", "0"], "socket name of rpc to listen must be provided"),
        (["-s"], "requires an argument"),
        (["-s", "x", "extra"], "useless parameters passed in: extra"),
        (["-s", "x", "-m", "extra"], "useless parameters passed in: extra"),
        (["-s", "x", "-s", "y"], "parse sock parameter repeated"),
        (["-l", "0", "-s", "x", "-m", "-m"], "invalid parameters!"),
        (["-h", "-s", "x"], "useless parameters"),
        (["-s", "x", "-h"], "useless parameters"),
        (["--bogus"], "unrecognized option"),
        (["-l", "-1", "-s", "x"], "invalid log level [-1]"),
        (["-l", "4", "-s", "x"], "invalid log level [4]"),
        (["-l", "abc", "-s", "x"], "invalid log level [abc]"),
        (["-l", "1x", "-s", "x"], "invalid log level [1x]"),
        (["-s", ""], "socket name must not be empty"),
        (["-s", "a" * 107], "at most 106"),
        (["--mode-systemctl=yes", "-s", "x"], "doesn't allow an argument"),
    ],
)
def test_refused(args, reason):
    with pytest.raises(ArgsExit) as info:
        parse_args(args)
    assert info.value.status == 255
    assert reason in info.value.message


@pytest.mark.parametrize("args", [["-h"], ["-help"], ["--help"], ["--he"]])
def test_help_forms(args):
    with pytest.raises(ArgsExit) as info:
        parse_args(args)
    assert info.value.status == 0
    assert "Usage: etmemd -s NAME" in info.value.message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-s", "x"], Options("x")),
        (["-l", "0", "-s", "x"], Options("x", log_level=0)),
        (["-l", "3", "-s", "x"], Options("x", log_level=3)),
        (["--log-level=2", "--socket=x"], Options("x", log_level=2)),
        (["-l1", "-sx", "-m"], Options("x", log_level=1, mode_systemctl=True)),
        (["-m", "-s", "a" * 106], Options("a" * 106, mode_systemctl=True)),
        (["--mode-systemctl", "--sock", "x"], Options("x", mode_systemctl=True)),
    ],
)
def test_accepted(args, expected):
    assert parse_args(args) == expected


def test_main_exit_statuses_and_messages(capsys):
    assert daemon.main(["-d"]) == 255
    out, err = capsys.readouterr()
    assert out == "" and "invalid option -- 'd'" in err and "etmemd --help" in err
    assert daemon.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: etmemd") and err == ""


def test_executable_exit_statuses():
    bad = subprocess.run([str(ETMEMD), "-l", "9", "-s", "x"], capture_output=True, timeout=30)
    assert bad.returncode == 255
    assert b"invalid log level [9]" in bad.stderr
    good = subprocess.run([str(ETMEMD), "-h"], capture_output=True, timeout=30)
    assert good.returncode == 0 and good.stdout.startswith(b"Usage: etmemd")


def test_logging_goes_to_stderr_without_syslog_filtered_by_level(tmp_path, capsys):
    import logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        handler = daemon.setup_logging(2, syslog_path=str(tmp_path / "no-such-log"))
        assert isinstance(handler, logging.StreamHandler)
        logging.getLogger("etmemd").info("hidden at level 2")
        logging.getLogger("etmemd").warning("shown at level 2")
        handler.flush()
        err = capsys.readouterr().err
        assert "shown at level 2" in err and "hidden" not in err
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_logging_uses_syslog_socket_when_present(tmp_path):
    import logging
    import socket

    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind(path)
        sink.settimeout(5)
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        try:
            handler = daemon.setup_logging(0, syslog_path=path)
            logging.getLogger("etmemd").debug("to syslog")
            data = sink.recv(4096)
            handler.close()
        finally:
            for h in list(root.handlers):
                root.removeHandler(h)
            for h in saved[0]:
                root.addHandler(h)
            root.setLevel(saved[1])
    assert data.startswith(b"<15>")  # LOG_USER | LOG_DEBUG
    assert b"to syslog" in data


class _Store:
    def __init__(self, block: bool = False) -> None:
        self.block = block
        self.stopped = False

    def shutdown(self) -> None:
        if self.block:
            import threading

            threading.Event().wait()
        self.stopped = True


def test_shutdown_closes_the_socket_then_stops_the_projects():
    import os
    import uuid

    name = f"etmemd-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    store = _Store()
    d = daemon.Daemon(Options(name), store=store)
    d.server.bind()
    assert d.shutdown() == 0
    assert store.stopped
    with open("/proc/net/unix") as f:
        assert not any(line.rstrip().endswith("@" + name) for line in f)


def test_a_broken_accept_loop_still_stops_the_projects(monkeypatch):
    import os
    import uuid

    name = f"etmemd-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    store = _Store()
    d = daemon.Daemon(Options(name), store=store)

    def broken() -> None:
        raise OSError("the selector broke")

    monkeypatch.setattr(d.server, "serve_forever", broken)
    monkeypatch.setattr(daemon.signal, "signal", lambda *_a: None)  # keep pytest's handlers
    assert d.run(on_listening=lambda: None) == daemon.EXIT_FAIL
    assert store.stopped
    with open("/proc/net/unix") as f:
        assert not any(line.rstrip().endswith("@" + name) for line in f)


def test_shutdown_deadline_ends_the_process_with_status_1():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_daemon_cli import _Store;"
        "from etmem_core import daemon;"
        "daemon.SHUTDOWN_DEADLINE = 0.3;"
        "d = daemon.Daemon(daemon.Options('etmemd-deadline-' + str(__import__('os').getpid())),"
        " store=_Store(block=True));"
        "d.shutdown(); print('not reached')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, timeout=60
    )
    assert proc.returncode == 1
    assert b"not reached" not in proc.stdout


def test_version_needs_no_daemon_and_exits_0():
    for prog in (ETMEMD, ETMEMD.parent / "etmem"):
        res = subprocess.run([str(prog), "--version"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split()[0] == prog.name


def test_our_long_options_parse_and_do_not_count_against_the_limit():
    opts = parse_args(
        ["-s", "x", "-l", "0", "-m", "--conf-dir", "/d", "--start-projects", "--log-file", "/l"]
    )
    assert (opts.conf_dir, opts.start_projects, opts.log_file) == ("/d", True, "/l")
    with pytest.raises(ArgsExit) as info:
        parse_args(["-s", "x", "--start-projects"])
    assert info.value.status == 255 and "--conf-dir" in info.value.message
