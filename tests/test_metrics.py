"""``etmemd --metrics``: the Prometheus endpoint, scraped and parsed with prometheus_client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from etmemd_proc import EtmemdProc, project_config, wait_for

from etmem_core import metrics
from etmem_core.errors import OptCode, OptError

parser = pytest.importorskip("prometheus_client.parser")
ETMEMD = Path(sys.executable).parent / "etmemd"


def families(text: str) -> dict[str, list]:
    """metric family name -> its samples."""
    return {f.name: f.samples for f in parser.text_string_to_metric_families(text)}


def value(fams, family: str, sample: str, **labels: str) -> float:
    """The one sample called ``sample`` of ``family`` with exactly these labels."""
    (hit,) = [s for s in fams[family] if s.name == sample and s.labels == labels]
    return hit.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeStore:
    def __init__(self, docs) -> None:
        self.docs = docs

    def project_show_json(self, name):
        if self.docs is None:
            raise OptError(OptCode.OPT_INTER_ERR, "etmemd is busy")
        return self.docs


SLIDE_DOC = [
    {
        "name": "p",
        "started": True,
        "engines": [
            {
                "name": "slide",
                "stats": {},
                "tasks": [
                    {
                        "name": "t",
                        "pids": [{"pid": 10, "stats": {}}, {"pid": 11, "stats": {}}],
                        "stats": {
                            "cycles": 3,
                            "pages_scanned": 3000,
                            "cold_pages": 1200,
                            "bytes_swapped": 4915200,
                            "errors": 1,
                            "skipped": 0,
                            "last_cycle_seconds": 0.25,
                            "tracker": "refs",
                            "actuator": "pageout",
                        },
                    }
                ],
            }
        ],
    }
]


def scrape_collector(store, counts=None) -> dict:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics.Collector(store, counts or metrics.Counts(), "9.9"))
    return families(generate_latest(reg).decode())


def test_task_stats_become_counters_and_gauges_with_prometheus_names():
    fams = scrape_collector(FakeStore(SLIDE_DOC))
    labels = {"project": "p", "engine": "slide", "task": "t"}
    scanned = "etmem_task_pages_scanned"
    assert value(fams, scanned, f"{scanned}_total", **labels) == 3000
    assert value(fams, "etmem_task_cold_pages", "etmem_task_cold_pages_total", **labels) == 1200
    assert (
        value(fams, "etmem_task_swapped_out_bytes", "etmem_task_swapped_out_bytes_total", **labels)
        == 4915200
    )
    assert value(fams, "etmem_task_errors", "etmem_task_errors_total", **labels) == 1
    assert value(fams, "etmem_task_cycles", "etmem_task_cycles_total", **labels) == 3
    name = "etmem_task_last_cycle_duration_seconds"
    assert value(fams, name, name, **labels) == 0.25
    name = "etmem_task_target_processes"
    assert value(fams, name, name, **labels) == 2
    info = {**labels, "tracker": "refs", "actuator": "pageout"}
    assert value(fams, "etmem_task_info", "etmem_task_info", **info) == 1
    assert value(fams, "etmem_project_started", "etmem_project_started", project="p") == 1
    assert value(fams, "etmem_build_info", "etmem_build_info", version="9.9") == 1


def test_a_busy_store_gives_scrape_ok_0_instead_of_hanging():
    fams = scrape_collector(FakeStore(None))
    assert value(fams, "etmem_scrape_ok", "etmem_scrape_ok") == 0
    assert fams["etmem_project_started"] == []


def test_requests_are_counted_by_command_and_result():
    counts = metrics.Counts()

    class Store(FakeStore):
        def project_start(self, name):
            raise OptError(OptCode.OPT_PRO_NOEXIST, f"project {name} does not exist")

    wrapped = metrics.CountingStore(Store([]), counts)
    wrapped.project_show_json(None)
    with pytest.raises(OptError):
        wrapped.project_start("x")
    fams = scrape_collector(FakeStore([]), counts)
    req = "etmem_requests"
    assert value(fams, req, "etmem_requests_total", command="project_show", result="ok") == 1
    assert (
        value(fams, req, "etmem_requests_total", command="project_start", result="pro_noexist") == 1
    )


@pytest.mark.parametrize("bad", ["9743", "localhost", "host:0", "host:99999", "unix:rel/path"])
def test_bad_addresses_are_refused_with_the_address(bad):
    with pytest.raises(metrics.MetricsUnavailable, match="metrics address"):
        metrics.parse_address(bad)


def test_parse_address_forms():
    assert metrics.parse_address("127.0.0.1:9743") == ("tcp", ("127.0.0.1", 9743))
    assert metrics.parse_address("[::1]:9743") == ("tcp", ("::1", 9743))
    assert metrics.parse_address("unix:/run/etmem.sock") == ("unix", "/run/etmem.sock")


@pytest.mark.root
def test_live_etmemd_serves_metrics_on_loopback(tmp_path):
    port = free_port()
    target = subprocess.Popen(["sleep", "300"])
    d = EtmemdProc(tmp_path, "--metrics", f"127.0.0.1:{port}")
    try:
        d.add("a", project_config("a", "slide", target.pid, "T=1\n"))
        assert d.etmem("project", "start", "-n", "nosuch", check=False).returncode != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            fams = families(resp.read().decode())
        req = "etmem_requests"
        assert value(fams, req, "etmem_requests_total", command="obj_add", result="ok") == 1
        assert (
            value(fams, req, "etmem_requests_total", command="project_start", result="pro_noexist")
            == 1
        )
        assert value(fams, "etmem_project_started", "etmem_project_started", project="a") == 0
        assert value(fams, "etmem_clients_refused", "etmem_clients_refused_total") == 0
        assert value(fams, "etmem_scrape_ok", "etmem_scrape_ok") == 1
        # a client that is not root is refused, and counted
        child = os.fork()
        if child == 0:  # nobody knocks
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect("\0" + d.sock)
                    s.sendall(b"x")
                    s.recv(10)
            finally:
                os._exit(0)
        os.waitpid(child, 0)

        def refused() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                got = families(r.read().decode())
            return value(got, "etmem_clients_refused", "etmem_clients_refused_total")

        assert wait_for(lambda: refused() == 1, 10), d.logtext()
    finally:
        d.stop()
        target.kill()
        target.wait()


@pytest.mark.root
def test_live_etmemd_serves_metrics_on_a_unix_socket(tmp_path):
    path = tmp_path / "metrics.sock"
    d = EtmemdProc(tmp_path, "--metrics", f"unix:{path}")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert "etmem_requests" in families(body.decode())
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        d.stop()
    assert not path.exists()  # removed at exit


def test_metrics_address_in_use_stops_etmemd_naming_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        res = subprocess.run(
            [str(ETMEMD), "-s", f"etmem-test-metrics-{tmp_path.name}", "--metrics", addr],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 1
    assert f"metrics address {addr}: already in use" in res.stderr


def test_no_metrics_unless_asked():
    from etmem_core.daemon import parse_args

    assert parse_args(["-s", "x"]).metrics is None
