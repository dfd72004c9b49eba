"""Fuzz and load drivers against a real etmemd, shared by tests/test_fuzz_load.py (short,
bounded runs in CI) and benchmarks/robustness.py (the long runs, with figures).

Everything talks to an abstract unix socket only. Each driver returns counts; the callers
decide what must hold.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from etmem_core import client
from etmem_core.protocol import FIELDS, Cmd, Request, encode_request

WORDS = [*FIELDS, "-", "0", "1", "4", "5", "9", "json", "p", "slide", "t1", "x" * 40]
SPECIAL = [b"\x00", b"\xff", b"\xfe", b"\n", b"\x1b[31m", b"\xc3\x28", b"  ", b"\t", b"-"]


def fuzzed_request(rng: random.Random) -> bytes:
    """A request that is valid, nearly valid, or garbage, in proportions that reach the
    decoder's every branch."""
    kind = rng.random()
    if kind < 0.2:  # valid
        cmd = rng.choice(list(Cmd))
        req = Request(
            cmd,
            proj_name=rng.choice([None, "p", "nope"]),
            file_name=rng.choice([None, "/nonexistent.conf", "rel.conf"]),
            eng_name=rng.choice([None, "slide", "x"]),
            eng_cmd=rng.choice([None, "json", "showtaskinfo"]),
            task_name=rng.choice([None, "t1"]),
        )
        return encode_request(req)
    if kind < 0.6:  # valid words, shuffled, dropped, doubled, with special bytes spliced in
        words = [w.encode() for w in (rng.choice(WORDS) for _ in range(rng.randint(0, 14)))]
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(SPECIAL))
        return b" ".join(words)
    if kind < 0.8:  # a valid request, mutated byte-wise
        data = bytearray(encode_request(Request(Cmd.PROJ_SHOW, proj_name="p")))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        return bytes(data)
    # random bytes, sometimes longer than the 512 allowed
    return rng.randbytes(rng.choice([0, 1, 10, 100, 511, 512, 513, 2000]))


def exchange(sock_name: str, data: bytes, rng: random.Random | None = None) -> bytes:
    """Send ``data`` (in pieces, sometimes), end our side, read the reply to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect("\0" + sock_name)
        try:
            if rng is not None and len(data) > 2 and rng.random() < 0.2:
                cut = rng.randrange(1, len(data))
                sock.sendall(data[:cut])
                time.sleep(0.001)
                sock.sendall(data[cut:])
            elif data:
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


def well_formed(reply: bytes) -> bool:
    """One marker byte, at the very end."""
    return (
        len(reply) >= 1
        and reply[-1] in (0xFF, 0xFE)
        and b"\xff" not in reply[:-1]
        and b"\xfe" not in reply[:-1]
    )


@dataclass
class Tally:
    """What a driver saw."""

    tried: int = 0
    answered: int = 0
    malformed: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def p99(self) -> float:
        """99th percentile latency in seconds (0 without samples)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def fuzz_requests(sock_name: str, count: int, seed: int = 1) -> Tally:
    """``count`` fuzzed requests, one connection each."""
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(count):
        data = fuzzed_request(rng)
        tally.tried += 1
        reply = exchange(sock_name, data, rng)
        # nothing sent is a client that went away: it gets nothing back
        if well_formed(reply) or (not data and reply == b""):
            tally.answered += 1
        else:
            tally.malformed.append(data)
    return tally


GOOD_KEYFILE = (
    "[project]\nname=fz\nloop=1\ninterval=1\nsleep=1\n"
    "[engine]\nname=slide\nproject=fz\n"
    "[task]\nproject=fz\nengine=slide\nname=t1\ntype=pid\nvalue=1\nT=1\nmax_threads=1\n"
)
GOOD_TOML = (
    '[project]\nname = "fz"\nloop = 1\ninterval = 1\nsleep = 1\n[[engine]]\nname = "slide"\n'
    '[[task]]\nname = "t1"\ntype = "pid"\nvalue = "1"\nT = 1\n'
)


def fuzzed_object_file(rng: random.Random) -> tuple[str, bytes]:
    """``(suffix, content)`` of a mutated object file."""
    suffix, text = rng.choice([(".conf", GOOD_KEYFILE), (".toml", GOOD_TOML)])
    data = bytearray(text.encode())
    for _ in range(rng.randint(0, 6)):
        op = rng.random()
        pos = rng.randrange(len(data) + 1)
        if op < 0.4:
            data[pos:pos] = rng.choice(SPECIAL + [b"[", b"]", b"=", b'"', b"\\", b"\\n"])
        elif op < 0.7 and data:
            del data[pos : pos + rng.randint(1, 8)]
        elif op < 0.9:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:  # a very long value
            data[pos:pos] = b"v" * rng.choice([300, 5000, 70000])
    return suffix, bytes(data)


def fuzz_object_files(sock_name: str, workdir: Path, count: int, seed: int = 2) -> Tally:
    """``count`` fuzzed object files: ``obj add`` each, and ``obj del`` what went in."""
    rng = random.Random(seed)
    tally = Tally()
    for i in range(count):
        suffix, data = fuzzed_object_file(rng)
        path = workdir / f"fz{i % 16}{suffix}"
        path.write_bytes(data)
        os.chmod(path, 0o600)
        for cmd in (Cmd.OBJ_ADD, Cmd.OBJ_DEL):
            tally.tried += 1
            reply = exchange(sock_name, encode_request(Request(cmd, file_name=str(path))))
            if well_formed(reply):
                tally.answered += 1
            else:
                tally.malformed.append(data)
    return tally


def silent_clients(sock_name: str, count: int) -> list[socket.socket]:
    """``count`` root clients that connect and send nothing (the caller closes them)."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect("\0" + sock_name)
        socks.append(s)
    return socks


def start_flooder(sock_name: str, seconds: float, uid: int = 65534) -> int:
    """Fork a child that drops to ``uid`` and connects and closes in a loop for ``seconds``;
    its pid (reap it with ``os.waitpid``). Its exit status is 0 when it ran."""
    pid = os.fork()
    if pid == 0:  # child: never returns to the caller
        status = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect("\0" + sock_name)
                except OSError:
                    pass
                s.close()
            status = 0
        finally:
            os._exit(status)
    return pid


def parallel_root_clients(sock_name: str, count: int, timeout: float = 10.0) -> Tally:
    """``count`` root clients at once (one thread each), each asking ``project show``."""
    tally = Tally()
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        t0 = time.monotonic()
        try:
            res = client.call(sock_name, Request(Cmd.PROJ_SHOW), lambda _b: None, timeout)
            ok = res.success
        except (client.ClientError, OSError):
            ok = False
        with lock:
            tally.tried += 1
            if ok:
                tally.answered += 1
                tally.latencies.append(time.monotonic() - t0)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(timeout + 30)
    return tally


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
