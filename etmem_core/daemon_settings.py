"""``/etc/etmem/etmemd.toml``: optional settings of the daemon itself (not of projects).

::

    [engines]
    allow = ["slide", "cslide", "age"]   # only these may be loaded (absent: any installed engine)
    block = ["thirdparty"]               # never these (wins over allow)
    hook_deadline = 5                    # seconds an engine hook may run (0: no deadline)

    [scan]
    tracker = "refs"       # when a task names no tracker (absent: the probe's best)
    actuator = "pageout"   # likewise for the actuator

    [daemon]               # the same as etmemd's options; the command line wins
    conf_dir = "/etc/etmem/conf.d"   # --conf-dir
    start_projects = true            # --start-projects
    metrics = "127.0.0.1:9743"       # --metrics

Every table and key is optional, and so is the file: without it etmemd behaves as if it were
empty. ``etmemd --config PATH`` reads another file (which must then exist). Unknown tables or
keys are refused, so a typo cannot silently leave an engine unblocked.

``hook_deadline`` is 0 or 0.1 to 8 seconds (an answer must reach the client within its 10 s,
and a request waits 8 s for the one before it); the environment variable
``ETMEMD_HOOK_DEADLINE``, with the same range, wins over the file, so one run can be given
another deadline without editing it.

The engine lists become the :class:`~etmem_core.registry.EngineRegistry`'s ``allowed`` /
``blocked``: a config naming a blocked engine fails with ``engine 'X': blocked by the daemon's
configuration`` while every other engine keeps working. The scan defaults go to
:func:`etmem_sdk.scan.set_defaults`, where engines read them through
``etmem_sdk.scan.choose_tracker()`` / ``choose_actuator()``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etmem_sdk import ConfigError
from etmem_sdk.trusted_files import Flaw, writable_only_by

from .registry import EngineRegistry

#: Seconds an engine hook may run before it is abandoned (reported by name, the request
#: answered, the store put back as if the hook had failed), unless the settings say otherwise.
HOOK_DEADLINE = 5.0
#: The range a deadline other than 0 (none) may have: the answer must reach the client within
#: its 10 s, and a request waits 8 s (``lifecycle.LOCK_WAIT``) for the one before it; below a
#: tenth of a second ordinary hooks would be abandoned.
HOOK_DEADLINE_MIN, HOOK_DEADLINE_MAX = 0.1, 8.0
#: Environment variable that sets the hook deadline for one run (wins over the file).
HOOK_DEADLINE_ENV = "ETMEMD_HOOK_DEADLINE"

#: Where etmemd looks when ``--config`` is not given.
DEFAULT_PATH = "/etc/etmem/etmemd.toml"
#: Largest settings file read (it is a few lines).
MAX_SIZE = 1 << 20

_KEYS = {
    "engines": ("allow", "block", "hook_deadline"),
    "scan": ("tracker", "actuator"),
    "daemon": ("conf_dir", "start_projects", "metrics"),
}


@dataclass(frozen=True)
class DaemonSettings:
    """The parsed settings; ``path`` is the file they came from (``None``: no file)."""

    path: str | None = None
    allowed: frozenset[str] | None = None
    blocked: frozenset[str] = frozenset()
    tracker: str | None = None
    actuator: str | None = None
    #: ``[daemon]``: defaults for ``--conf-dir``, ``--start-projects``, ``--metrics``
    conf_dir: str | None = None
    start_projects: bool = False
    metrics: str | None = None
    #: ``[engines] hook_deadline`` in seconds (``None``: not in the file)
    hook_deadline: float | None = None

    def registry(self) -> EngineRegistry:
        """An engine registry that enforces the allow and block lists."""
        return EngineRegistry(allowed=self.allowed, blocked=self.blocked)

    def hook_deadline_seconds(self, environ: Mapping[str, str] = os.environ) -> float:
        """Seconds an engine hook may run: ``ETMEMD_HOOK_DEADLINE`` when set (it wins), else
        ``[engines] hook_deadline``, else :data:`HOOK_DEADLINE`. Raises :class:`ConfigError`
        for an environment value that is not a number of seconds in range."""
        return self.hook_deadline_origin(environ)[0]

    def hook_deadline_origin(self, environ: Mapping[str, str] = os.environ) -> tuple[float, str]:
        """:meth:`hook_deadline_seconds` and where it comes from, for the log."""
        raw = environ.get(HOOK_DEADLINE_ENV)
        if raw is not None and raw.strip():
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            return _deadline(f"{HOOK_DEADLINE_ENV}={raw!r}", value), HOOK_DEADLINE_ENV
        if self.hook_deadline is None:
            return HOOK_DEADLINE, "the default"
        return self.hook_deadline, f"{os.path.basename(self.path or DEFAULT_PATH)} [engines]"

    def apply_scan_defaults(self) -> None:
        """Hand the tracker/actuator defaults to the SDK, where engines pick them up."""
        from etmem_sdk import scan  # late: the scan library is only needed by a running daemon

        scan.set_defaults(tracker=self.tracker, actuator=self.actuator)


def _where(path: str, table: str, key: str | None = None, value: Any = None) -> str:
    name = os.path.basename(path)
    if key is None:
        return f"{name}: [{table}]"
    return f"{name}: [{table}] {key}={value!r}" if value is not None else f"{name}: [{table}] {key}"


def _check_file(path: str) -> None:
    """A file that decides which code etmemd loads must not be writable by other users."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the daemon settings: {exc.strerror}") from None
    verdict = writable_only_by(st, (0, os.geteuid()))
    if verdict is not None and verdict.flaw is Flaw.TYPE:
        raise ConfigError(f"{path}: the daemon settings must be a regular file")
    if st.st_size > MAX_SIZE:
        raise ConfigError(f"{path}: the daemon settings are larger than {MAX_SIZE} bytes")
    if verdict is not None:
        raise ConfigError(
            f"{path}: the daemon settings must belong to root and not be writable by group or "
            f"others (mode {verdict.mode:04o}, owner uid {st.st_uid})"
        )


def _names(path: str, table: str, key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{_where(path, table, key, value)}: must be a list of engine names")
    return frozenset(value)


def _deadline(where: str, value: Any) -> float:
    """``value`` as a hook deadline in seconds, or a ConfigError that says the range."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (value == 0 or HOOK_DEADLINE_MIN <= value <= HOOK_DEADLINE_MAX)
    )
    if not ok:
        raise ConfigError(
            f"{where}: must be a number of seconds, 0 (no deadline) or "
            f"{HOOK_DEADLINE_MIN:g} to {HOOK_DEADLINE_MAX:g}"
        )
    return float(value)


def _choice(path: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{_where(path, 'scan', key, value)}: must be one of {', '.join(choices)}"
        )
    return value


def parse(text: str, path: str = DEFAULT_PATH) -> DaemonSettings:
    """Parse settings text; raises :class:`ConfigError` naming the file, table and key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{os.path.basename(path)}: not valid TOML: {exc}") from None
    for table, body in doc.items():
        if table not in _KEYS:
            raise ConfigError(
                f"{os.path.basename(path)}: unknown table [{table}]; "
                f"known: {', '.join(f'[{t}]' for t in _KEYS)}"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{_where(path, table)}: must be a table")
        for key in body:
            if key not in _KEYS[table]:
                raise ConfigError(
                    f"{_where(path, table, key)}: unknown key; known: {', '.join(_KEYS[table])}"
                )
    engines, scan_table = doc.get("engines", {}), doc.get("scan", {})
    allowed = _names(path, "engines", "allow", engines["allow"]) if "allow" in engines else None
    blocked = (
        _names(path, "engines", "block", engines["block"]) if "block" in engines else frozenset()
    )
    hook_deadline = None
    if "hook_deadline" in engines:
        value = engines["hook_deadline"]
        hook_deadline = _deadline(_where(path, "engines", "hook_deadline", value), value)
    from etmem_sdk import scan  # late, as in apply_scan_defaults

    tracker = actuator = None
    if "tracker" in scan_table:
        tracker = _choice(path, "tracker", scan_table["tracker"], scan.TRACKERS)
    if "actuator" in scan_table:
        actuator = _choice(path, "actuator", scan_table["actuator"], scan.ACTUATORS)
    daemon = doc.get("daemon", {})
    for key in ("conf_dir", "metrics"):
        if key in daemon and (not isinstance(daemon[key], str) or not daemon[key]):
            raise ConfigError(
                f"{_where(path, 'daemon', key, daemon[key])}: must be a non-empty string"
            )
    if "start_projects" in daemon and not isinstance(daemon["start_projects"], bool):
        value = daemon["start_projects"]
        raise ConfigError(
            f"{_where(path, 'daemon', 'start_projects', value)}: must be true or false"
        )
    return DaemonSettings(
        path,
        allowed,
        blocked,
        tracker,
        actuator,
        conf_dir=daemon.get("conf_dir"),
        start_projects=daemon.get("start_projects", False),
        metrics=daemon.get("metrics"),
        hook_deadline=hook_deadline,
    )


def load(path: str | None = None) -> DaemonSettings:
    """Read the settings: ``path`` (must exist), or :data:`DEFAULT_PATH` if it exists, else
    the built-in defaults. Raises :class:`ConfigError` saying what is wrong."""
    if path is None:
        if not os.path.lexists(DEFAULT_PATH):
            return DaemonSettings()
        path = DEFAULT_PATH
    _check_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the daemon settings: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the daemon settings are not UTF-8") from None
    return parse(text, path)
