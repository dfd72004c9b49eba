"""Our ``etmem`` against every case recorded from the original client (golden/wire/cases.json).

Each case runs our CLI against a fake etmemd that answers with the recorded reply (split into
the recorded sends). Checked: the request bytes (a relative ``-f`` path is sent made absolute —
our one deliberate difference), the exit status, and stdout: byte-exact on success; on failure
exactly the daemon's text as the original printed it, with our own hint on stderr instead of the
original's internal lines and help dump.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from etmem_core.cli import main
from etmem_core.protocol import RECV_CHUNK, ReplyDecoder, request_complete

VENV_ETMEM = Path(sys.executable).parent / "etmem"
INTERNAL_LINES = (b"etmem_client_recv failed.", b"etmem: error", b"etmem_client_conn failed.")


def _cases(golden: Path) -> list[dict]:
    return json.loads((golden / "wire" / "cases.json").read_text())["cases"]


def _case_ids() -> list[str]:
    from conftest import GOLDEN

    return [c["name"] for c in _cases(GOLDEN)]


@pytest.fixture(scope="module")
def cases(golden) -> dict[str, dict]:
    return {c["name"]: c for c in _cases(golden)}


def unique_name() -> str:
    return f"etmem-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class FakeEtmemd:
    """Accept one client, record its request, answer with the recorded bytes, close."""

    def __init__(self, name: str, sends: list[bytes]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("\0" + name)
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.sends = sends
        self.request = b""
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.connections += 1
        with conn:
            conn.settimeout(10)
            while not request_complete(self.request):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                self.request += chunk
            for i, data in enumerate(self.sends):
                if i:
                    time.sleep(0.2)  # as recorded: separate sends arrive as separate chunks
                if data:
                    try:
                        conn.sendall(data)
                    except OSError:  # the client stopped reading at a marker: as recorded
                        return

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def _sends(case: dict) -> list[bytes]:
    if case["server_reply_sends"]:
        return [bytes.fromhex(h) for h in case["server_reply_sends"]]
    return [bytes.fromhex(case["server_reply"])]


def _argv(case: dict, name: str) -> list[str]:
    argv = list(case["argv"][1:])
    for i in range(1, len(argv)):
        if argv[i - 1] in ("-s", "--socket") and argv[i] == "S":
            argv[i] = name
    return argv


def _expected_request(case: dict, cwd: Path) -> bytes:
    words = case["request_text"].split(" ")
    path = words[3]
    if path != "-" and not path.startswith("/"):
        words[3] = str(cwd / path)
    return " ".join(words).encode()


def _daemon_text(case: dict) -> bytes:
    """What the original printed of the reply itself, by its chunk-end rule."""
    decoder = ReplyDecoder()
    out = b""
    for chunk in _sends(case):
        if chunk and not decoder.done:
            # each recorded send fits one recv of RECV_CHUNK or is a long success reply
            for i in range(0, len(chunk), RECV_CHUNK):
                if not decoder.done:
                    out += decoder.feed(chunk[i : i + RECV_CHUNK])
    return out


@pytest.mark.parametrize("case_name", _case_ids())
def test_case(case_name, cases, tmp_path, monkeypatch, capfdbinary):
    case = cases[case_name]
    monkeypatch.chdir(tmp_path)
    name = unique_name()
    server = FakeEtmemd(name, _sends(case)) if case["server"] else None
    try:
        status = main(_argv(case, name))
    finally:
        if server is not None:
            server.close()
    out, err = capfdbinary.readouterr()
    golden_out = case["stdout"].encode()

    assert status == case["exit_code"]
    if server is not None:
        assert server.request == _expected_request(case, tmp_path)
    if case["exit_code"] == 0:
        assert out == golden_out
        assert err == b""
        return
    # failure: the daemon's text exactly as the original printed it, nothing of ours on stdout
    expected = _daemon_text(case) if server is not None else b""
    assert golden_out.startswith(expected)
    assert out == expected
    assert not any(line in out + err for line in INTERNAL_LINES)
    assert b"Usage:" not in out + err
    assert err.startswith(b"etmem: ") and len(err.splitlines()) <= 2


def test_failure_hints_say_what_is_wrong(cases, tmp_path, monkeypatch, capfdbinary):
    monkeypatch.chdir(tmp_path)
    expectations = {
        "usage_obj_add_missing_f": [b"-f FILE", b"etmem obj help"],
        "usage_project_start_missing_n": [b"-n NAME", b"etmem project help"],
        "usage_project_bogus_cmd": [b"'bogus' is not supported"],
        "usage_obj_bad_option": [b"invalid option -- 'x'"],
        "usage_obj_extra_positional": [b"unexpected arguments: extra"],
        "usage_engine_missing_e": [b"-e ENGINE"],
        "usage_foo": [b"unknown object 'foo'", b"etmem help"],
        "conn_refused_project_show": [b"Connection refused", b"is etmemd running"],
    }
    for case_name, needles in expectations.items():
        status = main(_argv(cases[case_name], unique_name()))
        _, err = capfdbinary.readouterr()
        assert status == cases[case_name]["exit_code"]
        for needle in needles:
            assert needle in err, (case_name, err)


def test_server_failure_hints(cases, tmp_path, monkeypatch, capfdbinary):
    monkeypatch.chdir(tmp_path)
    for case_name, needle in (
        ("project_show__close", b"did not finish its reply"),
        ("obj_add__err", b"refused the request"),
    ):
        case = cases[case_name]
        name = unique_name()
        server = FakeEtmemd(name, _sends(case))
        try:
            assert main(_argv(case, name)) == 186
        finally:
            server.close()
        _, err = capfdbinary.readouterr()
        assert needle in err


@pytest.mark.parametrize("case_name", ["project_show__long_ok", "obj_del__ok", "usage_help"])
def test_executable_matches_too(case_name, cases, tmp_path):
    """The installed console script behaves like main() (a few cases; it is slower)."""
    case = cases[case_name]
    name = unique_name()
    server = FakeEtmemd(name, _sends(case)) if case["server"] else None
    try:
        proc = subprocess.run(
            [str(VENV_ETMEM), *_argv(case, name)],
            cwd=tmp_path,
            capture_output=True,
            timeout=30,
        )
    finally:
        if server is not None:
            server.close()
    assert proc.returncode == case["exit_code"]
    assert proc.stdout == case["stdout"].encode()
    if server is not None:
        assert server.request == _expected_request(case, tmp_path)


def test_relative_file_is_sent_absolute_and_long_requests_are_refused(
    tmp_path, monkeypatch, capfdbinary
):
    monkeypatch.chdir(tmp_path)
    name = unique_name()
    server = FakeEtmemd(name, [b"\xff"])
    try:
        assert main(["obj", "add", "--file=sub/../a.conf", "--so", name]) == 0
    finally:
        server.close()
    assert f"file_name {tmp_path}/a.conf cmd 0".encode() in server.request
    capfdbinary.readouterr()
    # 513 bytes: refused before anything is sent, as the original (exit 255)
    assert main(["obj", "add", "-f", "/" + "a" * 460, "-s", name]) == 255
    _, err = capfdbinary.readouterr()
    assert b"at most 512" in err


def test_socket_name_longer_than_106_is_refused(capfdbinary):
    assert main(["project", "show", "-s", "n" * 107]) == 255
    _, err = capfdbinary.readouterr()
    assert b"at most 106" in err


def test_no_socket_to_be_had_exits_with_its_errno(monkeypatch, capfdbinary):
    # The original returns socket()'s errno as the exit status; never a traceback.
    def no_fd(*_a, **_kw):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr("etmem_core.client.socket.socket", no_fd)
    assert main(["project", "show", "-s", unique_name()]) == errno.EMFILE
    _, err = capfdbinary.readouterr()
    assert b"Too many open files" in err


def test_engine_takes_its_first_word_verbatim(tmp_path, capfdbinary):
    name = unique_name()
    server = FakeEtmemd(name, [b"done\n\xff"])
    try:
        # "-e" as the command word, options after it: getopt never sees the first word
        assert main(["engine", "-e", "-n", "p", "-e", "x", "-t", "", "-s", name]) == 0
    finally:
        server.close()
    assert server.request == (b"proj_name p file_name - cmd 5 eng_name x eng_cmd -e task_name ")
    out, _ = capfdbinary.readouterr()
    assert out == b"done\n"


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["engine", "-s", "S", "-n", "p", "-e", "x"], 255),  # "S" is a stray word: E2BIG rule
        (["engine", "cmd", "-n", "p", "-e", "x"], 255),  # no socket
        (["engine", "cmd", "-z"], 255),  # engine parse errors are -1 in the original
        (["obj", "add", "-f"], 234),  # -f without its value
        (["obj", "add", "extra"], 234),  # no option at all: no E2BIG check, socket missing
        (["project", "start", "-n", "p", "-s", "S", "x"], 249),
        (["project", "show", "--json", "-s", "S", "x", "y"], 249),
        (["project", "stop", "--json", "-n", "p", "-s", "S"], 234),  # --json only for show
        (["project", "help", "whatever", "-x"], 0),
        (["help", "x"], 234),
        (["-h"], 234),
    ],
)
def test_getopt_compatibility(argv, status, capfdbinary):
    assert main(argv) == status
    out, err = capfdbinary.readouterr()
    if status:
        assert out == b"" and b"help" in err


def test_project_show_json_uses_the_private_request_form(tmp_path, capfdbinary):
    name = unique_name()
    server = FakeEtmemd(name, [b'[{"name": "p"}]\n\xff'])
    try:
        assert main(["project", "show", "-n", "p", "--json", "-s", name]) == 0
    finally:
        server.close()
    assert server.request == b"proj_name p file_name - cmd 4 eng_name - eng_cmd json task_name -"
    out, _ = capfdbinary.readouterr()
    assert json.loads(out) == [{"name": "p"}]
    # an etmemd that answers with a table (the original) is reported, not passed off as JSON
    name = unique_name()
    server = FakeEtmemd(name, [b"no project exists\n\n\xff"])
    try:
        assert main(["project", "show", "--json", "-s", name]) == 1
    finally:
        server.close()
    _, err = capfdbinary.readouterr()
    assert b"did not answer with JSON" in err


def test_typer_help_and_typer_form(tmp_path, capfdbinary):
    assert main(["project", "show", "--help"]) == 0
    out, _ = capfdbinary.readouterr()
    assert b"--json" in out
    assert main(["--help"]) == 0
    out, _ = capfdbinary.readouterr()
    for noun in (b"obj", b"project", b"engine"):
        assert noun in out
