"""cslide's ``[engine]`` and ``[task]`` keys, and the machine facts they are checked against.

The original's rules (node_pair, hot_threshold clamped to loop*3+1, MiB quota and reserve, task
keys vm_flags/anon_only/ign_host), plus two things it did not do: the node-count and hugepage
preconditions are checked at engine add with a message saying what the machine has, and an
optional ``memory=normal`` engine key places ordinary (non-hugetlb) pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from etmem_sdk import ConfigError, ConfigSection, Project, params

#: idle_pages ioctl IDLE_SCAN_ADD_FLAGS bits (kernel etmem_scan).
SCAN_AS_HUGE = 0x01000000
SCAN_IGN_HOST = 0x02000000
#: Highest weight one pass can give a page (dirty); counts run 0..loop*MAX_ACCESS_WEIGHT.
MAX_ACCESS_WEIGHT = 3
INT_MAX = params.INT32_MAX
MIB = 1 << 20
HUGE_2M = 2 * MIB
HUGETLB, NORMAL = "hugetlb", "normal"
MAX_VMFLAGS = 30
#: Highest ``confirm_cycles`` a task may set (see confirm.py).
MAX_CONFIRM = 16

_NODE_DIR = re.compile(r"node([0-9]+)")
_STRICT_INT = re.compile(r"[+-]?[0-9]+")
_VMFLAG = re.compile(r"[a-z0-9]{2}")


@dataclass(frozen=True, slots=True)
class NodePair:
    """One tier pair: pages hot enough live on ``hot``, the rest on ``cold``."""

    index: int
    hot: int
    cold: int


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Validated ``[engine] name=cslide`` settings (C ``struct cslide_eng_params``)."""

    pairs: tuple[NodePair, ...]
    nodes: tuple[int, ...]
    hot_threshold: int
    mig_quota: int  # MiB per pair and cycle
    hot_reserve: int  # MiB
    loop: int
    interval: int
    sleep: int
    memory: str = HUGETLB

    @property
    def max_count(self) -> int:
        """Highest count a page can reach in one cycle (``loop * 3``)."""
        return self.loop * MAX_ACCESS_WEIGHT


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """Validated cslide ``[task]`` keys (C ``struct cslide_task_params``)."""

    vm_flags: tuple[str, ...]  # empty = no VmFlags filter (memory=normal only)
    anon_only: bool
    ign_host: bool
    scan_flags: int
    tracker: str | None = None
    #: cycles a move must be asked for in a row; ``None``: the tracker's default
    confirm_cycles: int | None = None


@dataclass(frozen=True, slots=True)
class NodeMem:
    """Size of one node's placement pool in bytes (hugetlb pool, or all of the node's memory)."""

    total: int
    free: int


# --- the machine ------------------------------------------------------------------------------


def node_root(sys_root: str | Path) -> Path:
    return Path(sys_root) / "devices/system/node"


def configured_nodes(sys_root: str | Path = "/sys") -> tuple[int, ...]:
    """NUMA node ids present under ``sys_root/devices/system/node`` (ascending)."""
    try:
        entries = list(node_root(sys_root).iterdir())
    except OSError:
        return ()
    ids = (_NODE_DIR.fullmatch(e.name) for e in entries)
    return tuple(sorted(int(m.group(1)) for m in ids if m))


def hugepage_file(sys_root: str | Path, node: int, what: str) -> Path:
    """``nodeN/hugepages/hugepages-2048kB/{nr,free}_hugepages``."""
    return node_root(sys_root) / f"node{node}/hugepages/hugepages-2048kB/{what}_hugepages"


def _read_count(path: Path) -> int:
    return int(path.read_text().split()[0])


def read_node_mem(sys_root: str | Path, nodes: tuple[int, ...], memory: str) -> dict[int, NodeMem]:
    """Total and free bytes of each node's pool; raises ``OSError``/``ValueError`` if unreadable.

    ``hugetlb``: 2 MiB hugepages (``nr_hugepages``/``free_hugepages`` x 2 MiB), as the original.
    ``normal``: ``MemTotal``/``MemFree`` of ``nodeN/meminfo``.
    """
    result = {}
    for node in nodes:
        if memory == HUGETLB:
            total = _read_count(hugepage_file(sys_root, node, "nr")) * HUGE_2M
            free = _read_count(hugepage_file(sys_root, node, "free")) * HUGE_2M
        else:
            fields = {}
            text = (node_root(sys_root) / f"node{node}/meminfo").read_text()
            for line in text.splitlines():
                # "Node 0 MemTotal:        4679456 kB"
                parts = line.split()
                if len(parts) >= 4 and parts[2].endswith(":"):
                    fields[parts[2][:-1]] = int(parts[3]) * 1024
            total, free = fields["MemTotal"], fields["MemFree"]
        result[node] = NodeMem(total=total, free=free)
    return result


def _machine_nodes(nodes: tuple[int, ...]) -> str:
    listed = ", ".join(f"node{n}" for n in nodes) or "no node directories"
    return f"{len(nodes)} NUMA node{'s' if len(nodes) != 1 else ''} ({listed})"


# --- [engine] ---------------------------------------------------------------------------------


def parse_node_pair(text: str, nodes: tuple[int, ...]) -> tuple[NodePair, ...]:
    """Parse ``node_pair`` (``hot,cold;hot,cold``); raises ``ValueError`` saying what is wrong.

    Pairs are separated by ``;`` or spaces, the two nodes of a pair by ``,``; empty fields
    collapse (strtok), tokens after the second of a pair are ignored; every node of the machine
    must appear exactly once.
    """
    seen: set[int] = set()
    pairs: list[NodePair] = []
    for token in (t for t in re.split(r"[ ;]", text) if t):
        fields = [f for f in token.split(",") if f]
        if not fields:
            raise ValueError(f"pair {token!r} has no hot node")
        if len(fields) < 2:
            raise ValueError(f"pair {token!r} has no cold node")
        ids = []
        for role, field in zip(("hot", "cold"), fields[:2], strict=True):
            if not _STRICT_INT.fullmatch(field):
                raise ValueError(f"{role} node {field!r} is not an integer")
            node = int(field)
            if node not in nodes:
                raise ValueError(f"{role} node {node} does not exist")
            if node in seen:
                raise ValueError(f"node {node} is paired twice")
            seen.add(node)
            ids.append(node)
        pairs.append(NodePair(index=len(pairs), hot=ids[0], cold=ids[1]))
    unmapped = [n for n in nodes if n not in seen]
    if unmapped:
        raise ValueError(
            f"node{'s' if len(unmapped) > 1 else ''} "
            f"{', '.join(map(str, unmapped))} not in any pair"
        )
    return tuple(pairs)


def parse_engine(
    config: ConfigSection, project: Project | None, sys_root: str | Path = "/sys"
) -> EngineConfig:
    """Validate the ``[engine]`` keys against the project and the machine (engine add)."""
    prefix = f"{config.label}: [{config.group}] name=cslide"
    if project is None or project.loop is None or project.interval is None or project.sleep is None:
        raise ConfigError(
            f"{prefix}: cslide needs a project with scan_type=page (loop, interval, sleep)"
        )
    nodes = configured_nodes(sys_root)
    if not nodes or len(nodes) % 2:
        raise ConfigError(
            f"{prefix}: cslide pairs a hot and a cold NUMA node and needs an even "
            f"number of nodes; this machine has {_machine_nodes(nodes)}"
        )

    raw_pairs = params.get_str(config, "node_pair")
    try:
        pairs = parse_node_pair(raw_pairs, nodes)
    except ValueError as exc:
        raise params.error(
            config,
            "node_pair",
            f"{exc} (this machine has {_machine_nodes(nodes)}; write hot,cold pairs "
            "using each node once)",
        ) from None
    loop = project.loop
    hot_threshold = params.get_int(config, "hot_threshold", 0, INT_MAX)
    # Counts never exceed loop*3; the clamp keeps the bucket walks in range (as the original).
    hot_threshold = min(hot_threshold, loop * MAX_ACCESS_WEIGHT + 1)
    mig_quota = params.get_int(config, "node_mig_quota", 0, INT_MAX)
    hot_reserve = params.get_int(config, "node_hot_reserve", 0, INT_MAX)
    memory = params.get_choice(config, "memory", (HUGETLB, NORMAL), required=False, default=HUGETLB)

    if memory == HUGETLB:
        missing = []
        for node in nodes:
            path = hugepage_file(sys_root, node, "nr")
            try:
                count = _read_count(path)
            except (OSError, ValueError, IndexError):
                missing.append(f"node{node}: {path} unreadable")
                continue
            if count <= 0:
                missing.append(f"node{node}: nr_hugepages=0")
        if missing:
            raise ConfigError(
                f"{prefix}: cslide places 2 MiB hugetlb pages and every node needs "
                f"some reserved ({'; '.join(missing)}); reserve them with "
                "nodeN/hugepages/hugepages-2048kB/nr_hugepages, or set "
                "memory=normal to place ordinary pages"
            )
    return EngineConfig(
        pairs=pairs,
        nodes=nodes,
        hot_threshold=hot_threshold,
        mig_quota=mig_quota,
        hot_reserve=hot_reserve,
        loop=loop,
        interval=project.interval,
        sleep=project.sleep,
        memory=memory,
    )


# --- [task] -----------------------------------------------------------------------------------


def split_vmflags(text: str) -> list[str]:
    """Split ``vm_flags`` as the original: the first field ends at a space, later ones at a space
    or a comma; empty fields are dropped."""
    first, _, rest = text.lstrip(" ").partition(" ")
    flags = [first] if first else []
    flags += [f for f in re.split(r"[ ,]", rest) if f]
    return flags


def parse_task(config: ConfigSection, engine: EngineConfig) -> TaskConfig:
    """Validate the cslide task keys, in the original's order: vm_flags, anon_only, ign_host."""
    if engine.memory == HUGETLB:
        raw = params.get_str(config, "vm_flags")
        flags = split_vmflags(raw)
        if flags != ["ht"]:
            raise params.error(
                config,
                "vm_flags",
                "must be exactly ht (cslide places hugetlb VMAs; set memory=normal on the "
                "engine for other memory)",
            )
    else:
        raw = params.get_str(config, "vm_flags", required=False, default="")
        flags = split_vmflags(raw)
        bad = [f for f in flags if not _VMFLAG.fullmatch(f)]
        if bad or len(flags) > MAX_VMFLAGS or "ht" in flags:
            raise params.error(
                config,
                "vm_flags",
                f"with memory=normal, must be up to {MAX_VMFLAGS} two-letter smaps VmFlags "
                "other than ht",
            )
    anon_only = params.get_yes_no(config, "anon_only")
    ign_host = params.get_yes_no(config, "ign_host")
    tracker = params.get_str(config, "tracker", required=False, default=None)
    confirm = params.get_int(config, "confirm_cycles", 1, MAX_CONFIRM, required=False)
    # SCAN_AS_HUGE reports guest (EPT) accesses per hugepage: only meaningful for hugetlb VMAs.
    scan_flags = (SCAN_AS_HUGE if engine.memory == HUGETLB else 0) | (
        SCAN_IGN_HOST if ign_host else 0
    )
    return TaskConfig(
        vm_flags=tuple(flags),
        anon_only=anon_only,
        ign_host=ign_host,
        scan_flags=scan_flags,
        tracker=tracker,
        confirm_cycles=confirm,
    )
