"""The objects a hook receives: project, engine, task, task pid, config section, reply.

They mirror C's ``struct project`` / ``struct engine`` / ``struct task`` / ``struct task_pid``.
Engines keep their own state in the free ``params`` attribute of each, exactly as in C; an engine
plugin object itself holds no state, so one plugin serves every project.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hooks import EngineHooks

#: Project scan types (C ``enum scan_type``).
PAGE_SCAN, REGION_SCAN, PSI_SCAN = "page", "region", "psi"


class ConfigSection(Mapping[str, str]):
    """A read-only view of one config group: key -> raw string value, in file order.

    ``path`` and ``text`` give the whole object file (the thirdparty engine rebuilds a real
    ``GKeyFile`` from them); ``group`` is the group name (``project``, ``engine`` or ``task``).
    ``label`` is what error messages put in front of ``[group] key=value`` (the file's base name,
    plus ``engine #2`` style positions for TOML files holding several engines).
    """

    def __init__(
        self,
        group: str,
        items: Mapping[str, str],
        *,
        path: str = "",
        text: str = "",
        label: str | None = None,
    ) -> None:
        self._items = dict(items)
        self.group = group
        self.path = path
        self.text = text
        self.label = label if label is not None else (path.rsplit("/", 1)[-1] or "<config>")

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    # Mapping's own get() and ``in`` go through __getitem__ and a KeyError: the core calls
    # them a few times per key of each of a file's (up to 10^5) tasks.
    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of ``key``, or ``default`` if the section does not set it."""
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def where(self, key: str) -> str:
        """``file: [group] key=value`` — the prefix of every message about ``key``."""
        value = self._items.get(key)
        shown = f"{key}={value}" if value is not None else key
        return f"{self.label}: [{self.group}] {shown}"

    def __repr__(self) -> str:
        return f"ConfigSection({self.group!r}, {self._items!r}, label={self.label!r})"


@dataclass(eq=False)
class TaskPid:
    """One target process of a task (C ``struct task_pid``)."""

    pid: int
    task: Task | None = None
    params: Any = None
    rt_swapin_rate: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Task:
    """A ``[task]`` object: what to watch (C ``struct task``)."""

    name: str
    type: str  # "pid" or "name"
    value: str
    max_threads: int = 1
    swap_flag: bool = False
    engine: Engine | None = None
    config: ConfigSection | None = None
    params: Any = None
    pids: list[TaskPid] = field(default_factory=list)
    #: JSON-serialisable statistics the engine keeps up to date; shown by ``project show --json``.
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def project(self) -> Project | None:
        """The project of the task's engine (``None`` while the task is not linked)."""
        return self.engine.project if self.engine is not None else None


@dataclass(eq=False)
class Engine:
    """An ``[engine]`` object inside a project (C ``struct engine``).

    ``name`` is the engine's identity inside its project: the entry-point name, or ``eng_name``
    for the thirdparty engine. ``kind`` is always the entry-point name (``slide``, ``thirdparty``).
    ``hooks`` is the typed door to the engine plugin's hooks, an
    :class:`~etmem_sdk.hooks.EngineHooks` (``engine.hooks.alloc_pid_params(...)``),
    ``implements`` the set of op names it has hookimpls for; both are set by the core (an
    engine may narrow ``implements`` in its ``fill_eng_params``, as the thirdparty engine does
    for the ops its C policy left NULL).
    """

    name: str
    kind: str
    project: Project | None = None
    config: ConfigSection | None = None
    params: Any = None
    tasks: list[Task] = field(default_factory=list)  # newest first, as C
    hooks: EngineHooks | None = None
    implements: frozenset[str] = frozenset()
    stats: dict[str, Any] = field(default_factory=dict)

    def find_task(self, name: str) -> Task | None:
        """The task of this engine called ``name``, or ``None``."""
        return next((t for t in self.tasks if t.name == name), None)


@dataclass(eq=False)
class Project:
    """A ``[project]`` object (C ``struct project`` plus its ``page_scan``/``region_scan``)."""

    name: str
    scan_type: str = PAGE_SCAN
    sysmem_threshold: int = -1  # -1 = disabled
    swapcache_high_wmark: int = -1
    swapcache_low_wmark: int = -1
    loop: int | None = None  # page scan
    interval: int | None = None  # page and psi scan
    sleep: int | None = None  # page scan
    region: dict[str, int] = field(default_factory=dict)  # region scan (DAMON) settings
    start: bool = False
    wmark_set: bool = False
    engines: list[Engine] = field(default_factory=list)  # newest first, as C
    config: ConfigSection | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def find_engine(self, name: str) -> Engine | None:
        """The engine of this project called ``name``, or ``None``."""
        return next((e for e in self.engines if e.name == name), None)


class Reply:
    """Where an engine's private command writes its output; it streams to the client.

    Bytes 0xFF and 0xFE end a reply on the wire, so they are dropped from engine output (valid
    UTF-8 never contains them).
    """

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def write(self, text: str | bytes) -> None:
        """Send ``text`` (str as UTF-8, or bytes) to the client now, without 0xFF/0xFE bytes.

        Raises ``TypeError`` for anything else.
        """
        if isinstance(text, str):
            data = text.encode()
        elif isinstance(text, bytes | bytearray | memoryview):
            data = bytes(text)
        else:  # bytes(12345) would send 12345 NUL bytes to the client
            raise TypeError(f"Reply.write takes str or bytes, not {type(text).__name__}")
        data = data.replace(b"\xff", b"").replace(b"\xfe", b"")
        if data:
            self._sink(data)


class BufferReply(Reply):
    """A :class:`Reply` that collects the output in memory (tests, ``project show --json``)."""

    def __init__(self) -> None:
        self.data = bytearray()
        super().__init__(self.data.extend)

    @property
    def text(self) -> str:
        """Everything written so far, decoded as UTF-8."""
        return self.data.decode(errors="replace")
