"""``etmemd``: the daemon's command line, logging, signals and ``-m`` (systemd) mode.

Command-line rules and exit statuses follow the original: 255 for any argument error, 0 for help.
Two deliberate differences: a socket name already in use is an error (exit 1; the original
exits 0), and any stray positional word is refused (the original lets one through in some
combinations).
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .gnu_getopt import Getopt, GetoptError, LongOpt
from .logsafe import SafeFormatter
from .protocol import ProtocolError, check_socket_name
from .server import AddressInUse, Server

if TYPE_CHECKING:  # metrics (and prometheus_client) load only with --metrics
    from .metrics import Counts, MetricsServer

log = logging.getLogger("etmemd")

#: Where ``-m`` writes the daemon's pid; tests point ETMEMD_PID_FILE elsewhere.
PID_FILE = "/run/etmemd.pid"
PID_FILE_ENV = "ETMEMD_PID_FILE"
#: Seconds a shutdown may take (in-flight clients, then stopping every project) before we give up.
SHUTDOWN_DEADLINE = 30.0
#: Of that, how long in-flight clients get to finish before projects are stopped under them.
CLIENT_GRACE = 5.0

EXIT_ARGS = 255  # the original's status for every argument error
EXIT_FAIL = 1

#: Log levels of ``-l``: the original's 0..3, lowest = most verbose.
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
DEFAULT_LOG_LEVEL = 3
MAX_ARGC = 6

USAGE = """\
Usage: etmemd -s NAME [-l LEVEL] [-m] [--config PATH] [--conf-dir DIR [--start-projects]]
              [--log-file PATH] [--metrics ADDRESS]
       etmemd -h | --version

Options:
  -s, --socket NAME         listen on the abstract unix socket NAME (1 to 106 characters);
                            clients reach it with `etmem ... -s NAME`
  -l, --log-level LEVEL     log this level and above: 0 debug, 1 info, 2 warning, 3 error
                            (default 3); to syslog when /dev/log exists, else to stderr
  -m, --mode-systemctl      fork; the parent writes the daemon's pid to /run/etmemd.pid and
                            exits 0 once the daemon listens (for systemd Type=forking)
      --config PATH         daemon settings (engines allowed/blocked, default tracker and
                            actuator); default /etc/etmem/etmemd.toml when it exists
      --conf-dir DIR        at start-up (and again on SIGHUP) add every object file in DIR, as
                            `etmem obj add` would; a file that fails is logged and skipped
      --start-projects      also start every project the --conf-dir files add
      --log-file PATH       log to PATH (appended) instead of syslog or stderr
      --metrics ADDRESS     serve Prometheus metrics on HOST:PORT or unix:/PATH (off by
                            default; needs `pip install etmem[metrics]`)
  -h, --help                show this help
      --version             print etmemd's version and exit
"""

_LONGOPTS = (
    LongOpt("socket", True, "s"),
    LongOpt("log-level", True, "l"),
    LongOpt("mode-systemctl", False, "m"),
    LongOpt("help", False, "h"),
    LongOpt("config", True, "C"),  # long only: "C" is not in the short option string
    LongOpt("conf-dir", True, "D"),
    LongOpt("start-projects", False, "S"),
    LongOpt("log-file", True, "L"),
    LongOpt("metrics", True, "M"),
)
#: Our long options (not the original's): they do not count against the original's limit.
_OURS_WITH_VALUE = ("--config", "--conf-dir", "--log-file", "--metrics")
_OURS_FLAGS = ("--start-projects",)


class ArgsExit(Exception):
    """Parsing ended the program: ``status`` 0 after help, 255 after an argument error."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Options:
    """What the command line asked for."""

    socket: str
    log_level: int = DEFAULT_LOG_LEVEL
    mode_systemctl: bool = False
    #: ``--config PATH``: the daemon settings file (None: the default path, if it exists)
    config: str | None = None
    #: the loaded :class:`~etmem_core.daemon_settings.DaemonSettings`, once :func:`main` read them
    settings: Any = field(default=None, compare=False, repr=False)
    #: ``--conf-dir DIR``: object files added at start-up and on SIGHUP
    conf_dir: str | None = None
    #: ``--start-projects``: start the projects the conf dir adds
    start_projects: bool = False
    #: ``--log-file PATH``: log there instead of syslog/stderr
    log_file: str | None = None
    #: ``--metrics ADDRESS``: the Prometheus endpoint (None: none)
    metrics: str | None = None


def parse_args(args: Sequence[str]) -> Options:
    """Parse ``etmemd``'s arguments (without the program name) as the original does.

    Raises :class:`ArgsExit` for help (status 0, message = usage) and for every error
    (status 255, message says what is wrong).
    """
    # our long options are not the original's: their words do not count against its limit
    ours = sum(
        2 if a in _OURS_WITH_VALUE else 1
        for a in args
        if a.startswith(_OURS_WITH_VALUE) or a in _OURS_FLAGS
    )
    if len(args) - ours + 1 > MAX_ARGC:
        raise ArgsExit(EXIT_ARGS, f"error: invalid parameters! at most {MAX_ARGC - 1} arguments")
    config: str | None = None
    sock: str | None = None
    level = DEFAULT_LOG_LEVEL
    mode = False
    want_help = False
    extra: dict[str, Any] = {}
    scan = Getopt(args, "s:l:mh", _LONGOPTS)
    try:
        for opt, value in scan:
            if opt == "s":
                if sock is not None:
                    raise ArgsExit(EXIT_ARGS, "error: parse sock parameter repeated")
                sock = value or ""
            elif opt == "l":
                level = _log_level(value or "")
            elif opt == "m":
                mode = True
            elif opt == "C":
                config = value or ""
            elif opt == "D":
                extra["conf_dir"] = value or ""
            elif opt == "S":
                extra["start_projects"] = True
            elif opt == "L":
                extra["log_file"] = value or ""
            elif opt == "M":
                extra["metrics"] = value or ""
            else:  # -h: the original stops scanning here, so "-help" is help too
                want_help = True
                break
    except GetoptError as exc:
        raise ArgsExit(EXIT_ARGS, f"error: parse parameters failed: {exc}") from None
    if want_help:
        if len(args) > 1:
            raise ArgsExit(EXIT_ARGS, "warn: useless parameters passed in: -h takes no others")
        raise ArgsExit(0, USAGE)
    if scan.positionals:
        words = " ".join(scan.positionals)
        raise ArgsExit(EXIT_ARGS, f"warn: useless parameters passed in: {words}")
    if sock is None:
        raise ArgsExit(EXIT_ARGS, "error: socket name of rpc to listen must be provided")
    try:
        check_socket_name(sock)
    except ProtocolError as exc:
        raise ArgsExit(EXIT_ARGS, f"error: invalid socket name: {exc}") from None
    if extra.get("start_projects") and not extra.get("conf_dir"):
        raise ArgsExit(EXIT_ARGS, "error: --start-projects needs --conf-dir DIR")
    for key in ("conf_dir", "log_file", "metrics"):
        if key in extra and not extra[key]:
            raise ArgsExit(EXIT_ARGS, f"error: --{key.replace('_', '-')} needs a path")
    return Options(socket=sock, log_level=level, mode_systemctl=mode, config=config, **extra)


def _log_level(text: str) -> int:
    # strict decimal, as the C strtol check: no spaces, no trailing junk
    body = text[1:] if text[:1] in "+-" else text
    if not body.isdigit() or not body.isascii():
        raise ArgsExit(EXIT_ARGS, f"error: invalid log level [{text}]: must be 0, 1, 2 or 3")
    level = int(text)
    if level not in LOG_LEVELS:
        raise ArgsExit(
            EXIT_ARGS,
            f"error: invalid log level [{level}]: 0 debug, 1 info, 2 warning, 3 error",
        )
    return level


def setup_logging(
    level: int, syslog_path: str = "/dev/log", log_file: str | None = None
) -> logging.Handler:
    """Send every logger's records at ``level`` and above to ``log_file`` when given, else to
    syslog, or to stderr without it. Raises ``OSError`` when the log file cannot be opened."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(
            SafeFormatter("%(asctime)s etmemd[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    elif _is_socket(syslog_path):
        handler = logging.handlers.SysLogHandler(
            address=syslog_path, facility=logging.handlers.SysLogHandler.LOG_USER
        )
        handler.setFormatter(SafeFormatter("etmemd[%(process)d]: %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            SafeFormatter("%(asctime)s etmemd[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LOG_LEVELS[level])
    return handler


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET if set; True if it was sent."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", target, exc)
        return False
    return True


def _make_store(opts: Options | None = None) -> Any:
    from . import daemon_settings  # imported late: argument errors need no engine machinery
    from .lifecycle import ObjectStore

    settings = opts.settings if opts is not None else None
    if settings is None:
        settings = daemon_settings.load(opts.config if opts is not None else None)
    settings.apply_scan_defaults()
    deadline, origin = settings.hook_deadline_origin()
    if deadline:
        log.info("engine hooks are abandoned after %g s (%s)", deadline, origin)
    else:
        log.warning("engine hooks have no deadline (%s): a hung one wedges etmemd", origin)
    return ObjectStore(settings.registry(), hook_deadline=deadline)


class Daemon:
    """One running etmemd: the object store, the server, and the ordered shutdown."""

    def __init__(self, opts: Options, store: Any = None) -> None:
        self.opts = opts
        self.store = store if store is not None else _make_store(opts)
        self.metrics_counts: Counts | None = None
        self.metrics: MetricsServer | None = None
        served = self.store
        if opts.metrics:
            from .metrics import CountingStore, Counts

            self.metrics_counts = Counts()
            served = CountingStore(self.store, self.metrics_counts)
        self.server = Server(served, opts.socket)
        if self.metrics_counts is not None:
            self.metrics_counts.server_counters = self.server.counters
        self.signal: int | None = None
        self.conf_dir = None
        if opts.conf_dir:
            from .confdir import ConfDir

            self.conf_dir = ConfDir(self.store, opts.conf_dir, start=opts.start_projects)

    def _on_hangup(self, _signum: int, _frame: Any) -> None:
        if self.conf_dir is None:
            log.warning("SIGHUP: nothing to reload (etmemd runs without --conf-dir)")
            return
        log.info("SIGHUP: reloading the conf dir %s", self.conf_dir.path)
        # not in the handler: adding objects takes locks the interrupted code may hold
        threading.Thread(target=self.conf_dir.load, name="etmemd-reload", daemon=True).start()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signal = signum
        self.server.stop()

    def run(self, on_listening: Any = None) -> int:
        """Listen, serve until SIGTERM/SIGINT, shut down in order; return the exit status."""
        # Handlers go in before the name is visible: a client may signal as soon as it can
        # connect, and the default SIGINT action would skip the ordered shutdown.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            self.server.bind()
        except AddressInUse as exc:
            log.error("fail to start rpc server of etmemd: %s", exc.strerror)
            print(
                f"etmemd: {exc.strerror} (is another etmemd running with -s {self.opts.socket}?)",
                file=sys.stderr,
            )
            self.server.close()
            return EXIT_FAIL
        except OSError as exc:
            log.error("fail to start rpc server of etmemd: %s", exc)
            print(f"etmemd: cannot listen on @{self.opts.socket}: {exc}", file=sys.stderr)
            self.server.close()
            return EXIT_FAIL
        if self.opts.metrics and self.metrics_counts is not None:  # counts: made with --metrics
            from .metrics import MetricsServer, MetricsUnavailable
            from .version import version

            try:
                self.metrics = MetricsServer(
                    self.opts.metrics, self.store, self.metrics_counts, version()
                )
            except MetricsUnavailable as exc:
                log.error("%s", exc)
                print(f"etmemd: {exc}", file=sys.stderr)
                self.server.close()
                return EXIT_FAIL
        if self.conf_dir is not None:  # before READY: the unit is up once its objects are in
            self.conf_dir.load()
        if on_listening is not None:
            on_listening()
        else:
            sd_notify("READY=1")
        log.info("etmemd started, pid %d, socket @%s", os.getpid(), self.opts.socket)
        # A signal may land on any thread, but Python runs handlers in the main thread only,
        # which may sleep in select() with nothing due: the wake-up pipe ends that sleep.
        previous = signal.set_wakeup_fd(self.server.wake_fd, warn_on_full_buffer=False)
        try:
            self.server.serve_forever()
        except Exception:  # the accept loop broke: still stop every project in order
            log.exception("the accept loop failed; shutting down")
            failed = True
        else:
            failed = False
        finally:
            signal.set_wakeup_fd(previous)  # before shutdown closes the pipe
        status = self.shutdown()
        return EXIT_FAIL if failed else status

    def shutdown(self) -> int:
        """Stop accepting, let in-flight clients finish, stop every project; all by a deadline."""
        if self.signal is not None:
            log.info("caught signal %d, shutting down", self.signal)
        sd_notify("STOPPING=1")
        deadline = time.monotonic() + SHUTDOWN_DEADLINE
        self.server.close()  # the name is free again from here on
        if not self.server.wait_clients(min(deadline, time.monotonic() + CLIENT_GRACE)):
            log.warning("clients still running after %g s; stopping projects anyway", CLIENT_GRACE)
        done = threading.Event()
        failure: list[BaseException] = []

        def stop_all() -> None:
            try:
                self.store.shutdown()
            except BaseException as exc:  # reported below; the process is ending anyway
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=stop_all, name="etmemd-shutdown", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            log.error("projects did not stop within %g s; exiting anyway", SHUTDOWN_DEADLINE)
            # a stuck engine thread must not keep the process alive past the deadline
            logging.shutdown()
            os._exit(EXIT_FAIL)
        if self.conf_dir is not None:
            self.conf_dir.close()
        if self.metrics is not None:
            self.metrics.close()
        if failure:
            log.error("stopping projects failed: %s", failure[0])
            return EXIT_FAIL
        log.info("etmemd stopped")
        return 0


def pid_file_path() -> str:
    """Where ``-m`` writes the daemon's pid."""
    return os.environ.get(PID_FILE_ENV) or PID_FILE


def _write_pid_file(path: str, pid: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(pid))


def _remove_pid_file(path: str, pid: int) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(pid):
                return  # someone else's by now
        os.unlink(path)
    except OSError:
        pass


def run_forked(opts: Options) -> int:
    """``-m``: fork; the parent returns 0 once the child listens (pid file written, READY=1)."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        os.setsid()
        # stdin/stdout are not used; stderr stays (the log goes there without syslog)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)

        def listening() -> None:
            os.write(write_fd, b"1")
            os.close(write_fd)

        status = EXIT_FAIL
        try:
            status = Daemon(opts).run(on_listening=listening)
        except BaseException:
            log.exception("etmemd failed")
        finally:
            _remove_pid_file(pid_file_path(), os.getpid())
            logging.shutdown()
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        ready = pipe.read(1) == b"1"
    if not ready:
        _, raw = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(raw) or EXIT_FAIL
    path = pid_file_path()
    try:
        _write_pid_file(path, child)
    except OSError as exc:
        print(f"etmemd: cannot write pid file {path}: {exc}", file=sys.stderr)
    sd_notify(f"READY=1\nMAINPID={child}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``etmemd``; returns (and as a script exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # needs no socket name and starts nothing
        from .version import version

        print(f"etmemd {version()}")
        return 0
    try:
        opts = parse_args(args)
    except ArgsExit as exc:
        if exc.status == 0:
            sys.stdout.write(exc.message)
            return 0
        print(f"etmemd: {exc.message}", file=sys.stderr)
        print("fail to parse parameters to start etmemd; see `etmemd --help`", file=sys.stderr)
        return exc.status
    try:
        setup_logging(opts.log_level, log_file=opts.log_file)
    except OSError as exc:
        print(f"etmemd: cannot open the log file {opts.log_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAIL
    # An in-process policy (thirdparty isolate=no) that segfaults or aborts takes etmemd down;
    # at least the stack of every thread goes to stderr (the journal), not nothing.
    faulthandler.enable()
    from etmem_sdk import ConfigError

    from . import daemon_settings

    try:  # read before forking, so a bad settings file is an error on the terminal
        opts.settings = daemon_settings.load(opts.config)
        opts.settings.hook_deadline_seconds()  # and so is a bad ETMEMD_HOOK_DEADLINE
    except ConfigError as exc:
        log.error("%s", exc)
        print(f"etmemd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    # [daemon] in etmemd.toml gives defaults for our options; the command line wins
    opts.conf_dir = opts.conf_dir or opts.settings.conf_dir
    opts.start_projects = opts.start_projects or opts.settings.start_projects
    opts.metrics = opts.metrics or opts.settings.metrics
    if opts.mode_systemctl:
        return run_forked(opts)
    try:
        return Daemon(opts).run()
    except Exception:
        log.exception("etmemd failed")
        return EXIT_FAIL
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
