"""``etmemd --metrics ADDRESS``: an opt-in Prometheus endpoint (``pip install etmem[metrics]``).

Nothing listens unless asked. ``ADDRESS`` is ``HOST:PORT`` (``127.0.0.1:9743``, ``[::1]:9743``,
``0.0.0.0:9743`` for a node agent scraped from outside) or ``unix:/PATH``. ``GET /metrics`` answers
in the Prometheus text format.

The figures are read at scrape time from what ``etmem project show --json`` shows (each task's
and engine's ``stats`` dict, its pids), so engines need no change and a scrape costs nothing
between scrapes. Requests are counted by a thin wrapper around the object store (by command and
result); refused clients from the server's own counters (``Server.counters``).
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from .errors import OptError

log = logging.getLogger("etmemd.metrics")

#: ``stats`` keys engines keep (slide: all of them) -> (metric name, help)
TASK_COUNTERS = {
    "pages_scanned": ("etmem_task_pages_scanned", "Pages scanned by the task's cycles."),
    "cold_pages": ("etmem_task_cold_pages", "Pages found cold by the task's cycles."),
    "bytes_swapped": ("etmem_task_swapped_out_bytes", "Bytes of cold memory swapped out."),
    "bytes_migrated": ("etmem_task_migrated_bytes", "Bytes of memory migrated between nodes."),
    "cycles": ("etmem_task_cycles", "Cycles the task's workers finished."),
    "skipped": ("etmem_task_skipped_cycles", "Cycles skipped (thresholds not met)."),
    "errors": ("etmem_task_errors", "Cycles that failed."),
}
TASK_LABELS = ["project", "engine", "task"]
#: etmemd's request commands, by the lifecycle method that serves them
COMMANDS = {
    "obj_add": "obj_add",
    "obj_del": "obj_del",
    "project_start": "project_start",
    "project_stop": "project_stop",
    "project_show": "project_show",
    "project_show_json": "project_show",
    "engine_cmd": "engine",
}


class MetricsUnavailable(Exception):
    """``--metrics`` cannot be served: prometheus_client missing, or a bad/busy address."""


class Counts:
    """Daemon-level counters: requests by command and result, clients refused."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        #: the server's counters (``Server.counters``: ``refused_peers`` ...), once it exists
        self.server_counters: dict[str, int] = {}

    def request(self, command: str, result: str) -> None:
        """Count one request."""
        with self.lock:
            key = (command, result)
            self.requests[key] = self.requests.get(key, 0) + 1


class CountingStore:
    """The object store as the server sees it, counting every request it serves."""

    def __init__(self, store: Any, counts: Counts) -> None:
        self._store = store
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        command = COMMANDS.get(name)
        if command is None or not callable(attr):
            return attr

        def counted(*args: Any, **kw: Any) -> Any:
            try:
                out = attr(*args, **kw)
            except OptError as exc:
                self._counts.request(command, exc.code.name.lower().removeprefix("opt_"))
                raise
            except Exception:
                self._counts.request(command, "internal_error")
                raise
            self._counts.request(command, "ok")
            return out

        return counted


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Collector:
    """A prometheus_client collector over the object store's JSON view."""

    def __init__(self, store: Any, counts: Counts, version: str) -> None:
        self.store = store
        self.counts = counts
        self.version = version

    def collect(self):  # noqa: C901 -- one family after the other, flat on purpose
        """Yield every metric family (called by prometheus_client on each scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        yield InfoMetricFamily("etmem_build", "etmemd's version.", value={"version": self.version})
        reqs = CounterMetricFamily(
            "etmem_requests",
            "Requests served, by command and result.",
            labels=["command", "result"],
        )
        with self.counts.lock:
            for (command, result), n in sorted(self.counts.requests.items()):
                reqs.add_metric([command, result], n)
        refused_n = self.counts.server_counters.get("refused_peers", 0)
        yield reqs
        refused = CounterMetricFamily(
            "etmem_clients_refused", "Clients refused because they are not root."
        )
        refused.add_metric([], refused_n)
        yield refused

        up = GaugeMetricFamily("etmem_scrape_ok", "1 when the object store could be read.")
        try:
            docs = self.store.project_show_json(None)
            up.add_metric([], 1)
        except OptError as exc:  # e.g. busy behind a stuck engine hook: say so, do not hang
            log.warning("metrics: cannot read the projects: %s", exc.reason)
            docs = []
            up.add_metric([], 0)
        yield up

        started = GaugeMetricFamily(
            "etmem_project_started", "1 while the project is started.", labels=["project"]
        )
        eng_cycles = CounterMetricFamily(
            "etmem_engine_cycles", "Cycles an engine finished.", labels=["project", "engine"]
        )
        info = InfoMetricFamily(
            "etmem_task", "The tracker and actuator a task uses.", labels=TASK_LABELS
        )
        targets = GaugeMetricFamily(
            "etmem_task_target_processes", "Processes the task works on now.", labels=TASK_LABELS
        )
        duration = GaugeMetricFamily(
            "etmem_task_last_cycle_duration_seconds",
            "How long the task's last cycle took.",
            labels=TASK_LABELS,
        )
        counters = {
            key: CounterMetricFamily(name, text, labels=TASK_LABELS)
            for key, (name, text) in TASK_COUNTERS.items()
        }
        for proj in docs:
            started.add_metric([proj["name"]], 1 if proj.get("started") else 0)
            for eng in proj.get("engines", []):
                cycles = _num((eng.get("stats") or {}).get("cycles"))
                if cycles is not None:
                    eng_cycles.add_metric([proj["name"], eng["name"]], cycles)
                for task in eng.get("tasks", []):
                    labels = [proj["name"], eng["name"], str(task.get("name"))]
                    stats = task.get("stats") or {}
                    info.add_metric(
                        labels,
                        {
                            "tracker": str(stats.get("tracker") or ""),
                            "actuator": str(stats.get("actuator") or ""),
                        },
                    )
                    targets.add_metric(labels, len(task.get("pids") or []))
                    seconds = _num(stats.get("last_cycle_seconds"))
                    if seconds is not None:
                        duration.add_metric(labels, seconds)
                    for key, family in counters.items():
                        value = _num(stats.get(key))
                        if value is not None:
                            family.add_metric(labels, value)
        yield started
        yield eng_cycles
        yield info
        yield targets
        yield duration
        yield from counters.values()


def _handler(registry: Any) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 -- http.server's name
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:  # scrapes are not worth a log line each
            return

        def address_string(self) -> str:
            return str(self.client_address[0]) if self.client_address else "unix"

    return Handler


class _TCPServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _V6TCPServer(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.UnixStreamServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0


def parse_address(text: str) -> tuple[str, Any]:
    """``HOST:PORT`` -> ("tcp", (host, port)); ``unix:/PATH`` -> ("unix", path)."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise MetricsUnavailable(f"metrics address {text}: unix:PATH needs an absolute path")
        return "unix", path
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MetricsUnavailable(
            f"metrics address {text}: expected HOST:PORT (e.g. 127.0.0.1:9743) or unix:/PATH"
        )
    return "tcp", (host, int(port))


class MetricsServer:
    """The HTTP endpoint, serving on its own thread until :meth:`close`."""

    def __init__(self, address: str, store: Any, counts: Counts, version: str) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise MetricsUnavailable(
                "--metrics needs prometheus_client: pip install 'etmem[metrics]'"
            ) from None
        self.address = address
        kind, where = parse_address(address)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector(store, counts, version))
        handler = _handler(registry)
        self.unix_path = where if kind == "unix" else None
        try:
            if kind == "unix":
                self.httpd: Any = _UnixServer(where, handler)
                os.chmod(where, 0o600)  # the figures name processes: root only, like the socket
            else:
                cls = _V6TCPServer if ":" in where[0] else _TCPServer
                self.httpd = cls(where, handler)
        except OSError as exc:
            reason = "already in use" if exc.errno == 98 else exc.strerror
            raise MetricsUnavailable(f"metrics address {address}: {reason}") from None
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="etmemd-metrics", daemon=True
        )
        self.thread.start()
        log.info("metrics on %s", address)

    def close(self) -> None:
        """Stop serving and free the address."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass
