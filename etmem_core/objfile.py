"""Object files: what ``etmem obj add|del <file>`` hands to etmemd, turned into config sections.

Two formats:

* **GKeyFile** (any name but ``*.toml``; the original's only format): ``[project]``, ``[engine]``
  and ``[task]`` groups read by :mod:`etmem_core.keyfile`. Repeated headers merge, so a file
  holds at most one of each. Values are the strings ``g_key_file_get_string`` returns (escapes
  processed; a value whose escapes glib would refuse is kept raw). Other groups are ignored.
* **TOML** (``*.toml``): one ``[project]`` table, ``[[engine]]`` and ``[[task]]`` arrays of
  tables, so one file can hold several engines and tasks. ``project`` may be omitted in engines
  and tasks (the file's project is filled in); a task names its engine with ``engine`` (filled
  in when the file has exactly one engine). Values may be strings, integers, floats or booleans
  (``true``/``false`` become ``yes``/``no``); every value is handed on as its string, so the
  same validation applies to both formats.

A TOML section's ``text`` is a GKeyFile rendering of the project, that engine and that task
(so an engine that needs a ``GKeyFile`` — the thirdparty engine — sees one of each, as in the
original); ``ObjectFile.text`` is always the file as written.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from etmem_sdk import ConfigError, ConfigSection
from etmem_sdk.keyfile import keyfile_text

from .filecheck import read_object_file
from .keyfile import KeyFileError, parse_keyfile
from .object_keys import engine_name_key

try:  # the same parser as the standard library's, compiled: ~3x faster on a big file
    import tomli as tomllib
except ImportError:  # pragma: no cover - an environment installed before tomli was required
    import tomllib  # type: ignore[no-redef]

GROUPS = ("project", "engine", "task")

#: Most ``[[engine]]`` or ``[[task]]`` tables one TOML file may hold. etmemd must add or delete
#: them all before the client's 10 s run out (else the client reports a failure while the add
#: goes on); 65,536 tasks take about 3 s here, and a 10 MiB file (the original's size limit)
#: can hold 185,000. A GKeyFile holds at most one of each group anyway.
MAX_TABLES = 65536


class ObjectFileSyntaxError(ConfigError):
    """The file cannot be parsed at all (etmemd answers OPT_INTER_ERR, not OPT_INVAL)."""


@dataclass
class ObjectFile:
    """A parsed object file: its sections, by kind, in file order."""

    path: str
    text: str
    projects: list[ConfigSection] = field(default_factory=list)
    engines: list[ConfigSection] = field(default_factory=list)
    tasks: list[ConfigSection] = field(default_factory=list)
    #: :func:`digest_of` the bytes parsed (set by :func:`load_object_file`)
    digest: bytes = b""

    @property
    def label(self) -> str:
        return _base(self.path)


def _base(path: str) -> str:
    return os.path.basename(path) or path or "<config>"


class ParseMemo:
    """The parsed form of the object files added lately, by path and content.

    ``obj del`` of a file unchanged since its ``obj add`` (the usual case) takes the parse
    from here instead of parsing the file again: parsing is ~2/3 of deleting 40,000 tasks.
    The file is still read and checked; only bytes equal to those added are reused (the
    parse depends on nothing but the bytes and the path). The sections kept are mostly the
    added tasks' own ``config``; bounded in files and sections all the same, for those
    whose tasks went another way (another file's ``obj del``).
    """

    def __init__(self, max_files: int = 8, max_sections: int = 2 * MAX_TABLES) -> None:
        self.max_files = max_files
        self.max_sections = max_sections
        self._lock = threading.Lock()
        self._files: OrderedDict[str, ObjectFile] = OrderedDict()
        self._sections = 0

    def remember(self, obj: ObjectFile) -> None:
        """Keep ``obj`` (just added) for a later :meth:`take` of the same path and bytes."""
        size = len(obj.projects) + len(obj.engines) + len(obj.tasks)
        if not obj.digest or size > self.max_sections:
            return
        kept = replace(obj, text="")  # the file's text is not needed to delete it
        with self._lock:
            self._drop(obj.path)
            while self._files and (
                len(self._files) >= self.max_files or self._sections + size > self.max_sections
            ):
                self._drop(next(iter(self._files)))
            self._files[obj.path] = kept
            self._sections += size

    def take(self, path: str, digest: bytes) -> ObjectFile | None:
        """The parse remembered for ``path`` if it was of bytes with ``digest``; forgotten
        either way (the file is being deleted)."""
        with self._lock:
            obj = self._drop(path)
        return obj if obj is not None and obj.digest == digest else None

    def __len__(self) -> int:
        return len(self._files)

    def _drop(self, path: str) -> ObjectFile | None:
        obj = self._files.pop(path, None)
        if obj is not None:
            self._sections -= len(obj.projects) + len(obj.engines) + len(obj.tasks)
        return obj


def digest_of(data: bytes) -> bytes:
    """What :class:`ParseMemo` compares: a file's bytes, hashed (~1 ms per MiB)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def load_object_file(
    path: str | os.PathLike[str], *, check: bool = True, memo: ParseMemo | None = None
) -> ObjectFile:
    """Read and parse the object file at ``path``.

    With ``check`` (the daemon's case) the file must pass :mod:`etmem_core.filecheck` first.
    With ``memo`` a parse remembered there for these very bytes is returned (and forgotten)
    instead of a new one: for ``obj del``.
    Raises :class:`ObjectFileSyntaxError` when the file does not parse, :class:`ConfigError`
    when it is refused, unreadable, holds no ``project``/``engine``/``task`` group, or (TOML)
    holds a value that cannot be a key's value.
    """
    name = os.fspath(path)
    if check:
        data = read_object_file(name)
    else:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(f"{name}: cannot be read: {e.strerror}") from None
    digest = digest_of(data)
    if memo is not None:
        known = memo.take(name, digest)
        if known is not None:
            return known
    obj = parse_object_data(data, name)
    obj.digest = digest
    return obj


def parse_object_data(data: bytes | str, path: str) -> ObjectFile:
    """Parse an object file's content; ``path`` picks the format and labels the messages."""
    if path.lower().endswith(".toml"):
        return _parse_toml(data, path)
    return _parse_keyfile(data, path)


def _no_group(label: str) -> ConfigError:
    # The original logs "no group has been parsed" and answers OPT_INVAL.
    return ConfigError(f"{label}: no group has been parsed: no [project], [engine] or [task] group")


# --- GKeyFile -----------------------------------------------------------------------------------


def _parse_keyfile(data: bytes | str, path: str) -> ObjectFile:
    label = _base(path)
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    try:
        kf = parse_keyfile(text)
    except KeyFileError as e:
        # Never echo the line itself: the file may be a secret that is not a config at all.
        raise ObjectFileSyntaxError(f"{label}: not a valid object file: {e.summary()}") from None
    obj = ObjectFile(path=path, text=text)
    for group in GROUPS:
        if not kf.has_group(group):
            continue
        items: dict[str, str] = {}
        for key, raw in kf.items(group).items():
            try:
                items[key] = kf.get_string(group, key)
            except KeyFileError:
                items[key] = raw  # a bad escape or bad UTF-8: the key's own check refuses it
        section = ConfigSection(group, items, path=path, text=text, label=label)
        getattr(obj, group + "s").append(section)
    if not (obj.projects or obj.engines or obj.tasks):
        raise _no_group(label)
    return obj


# --- TOML ---------------------------------------------------------------------------------------


def _scalar(label: str, where: str, key: str, value: Any) -> str:
    if type(value) is str:  # by far the most common: first, and without isinstance
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    kind = type(value).__name__
    raise ConfigError(
        f"{label}: [{where}] {key}: must be a string, integer, float or boolean, not {kind}"
    )


def _check_key(label: str, where: str, key: str) -> None:
    # Keys must survive a GKeyFile rendering (the thirdparty engine rebuilds one).
    bad = (
        not key
        or key != key.strip(" \t\r\n\v\f")
        or any(c in "=[]\n\r" for c in key)
        or key.startswith("#")
    )
    if bad:
        raise ConfigError(f"{label}: [{where}] {key!r}: not a usable key name")


def _section_items(label: str, where: str, table: Any, good_keys: set[str]) -> dict[str, str]:
    """``table`` as strings; ``good_keys`` holds the key names already checked in this file
    (its 10^5 tasks repeat the same few)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{label}: [{where}] must be a table")
    items = {}
    for key, value in table.items():
        if key not in good_keys:
            _check_key(label, where, key)
            good_keys.add(key)
        items[key] = _scalar(label, where, key, value)
    return items


def _tables(label: str, doc: dict[str, Any], group: str) -> list[dict[str, Any]]:
    value = doc.get(group)
    if value is None:
        return []
    if isinstance(value, dict):  # [engine] written for a single one: accept it
        return [value]
    if not (isinstance(value, list) and all(isinstance(t, dict) for t in value)):
        raise ConfigError(f"{label}: {group} must be an array of tables ([[{group}]])")
    if len(value) > MAX_TABLES:
        raise ConfigError(
            f"{label}: {len(value)} [[{group}]] tables; one object file may hold at most "
            f"{MAX_TABLES} (etmemd must handle a file within the client's 10 s): split it"
        )
    return value


def _engine_identity(items: dict[str, str]) -> str | None:
    """The name a task uses for this engine (its ``name``, a thirdparty engine's ``eng_name``)."""
    return items.get(engine_name_key(items.get("name")))


def _parse_toml(data: bytes | str, path: str) -> ObjectFile:
    label = _base(path)
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ObjectFileSyntaxError(f"{label}: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ObjectFileSyntaxError(f"{label}: arrays or tables nested too deeply") from None
    unknown = sorted(set(doc) - set(GROUPS))
    if unknown:
        raise ConfigError(
            f"{label}: unknown top-level key {', '.join(unknown)} (expected project, engine, task)"
        )
    obj = ObjectFile(path=path, text=text)

    project: dict[str, str] | None = None
    good_keys: set[str] = set()
    if "project" in doc:
        project = _section_items(label, "project", doc["project"], good_keys)
    engines = [
        _section_items(label, f"engine #{i}", t, good_keys)
        for i, t in enumerate(_tables(label, doc, "engine"), 1)
    ]
    task_tables = _tables(label, doc, "task")
    if project is None and not engines and not task_tables:
        raise _no_group(label)

    proj_name = project.get("name") if project else None
    for items in engines:
        if "project" not in items and proj_name is not None:
            items["project"] = proj_name
    only = _engine_identity(engines[0]) if len(engines) == 1 else None

    head = [("project", project)] if project is not None else []
    head_text = keyfile_text(head)
    if project is not None:
        obj.projects.append(
            ConfigSection("project", project, path=path, text=head_text, label=label)
        )
    # Rendered once per engine, not once per task: a file may hold 10^5 tasks.
    by_identity: dict[tuple[str | None, str | None], str] = {}
    for i, items in enumerate(engines, 1):
        rendered = keyfile_text(head + [("engine", items)])
        by_identity.setdefault((_engine_identity(items), items.get("project")), rendered)
        obj.engines.append(
            ConfigSection("engine", items, path=path, text=rendered, label=f"{label}: engine #{i}")
        )
    # One pass over the tasks, each table converted in place (the document is ours): for
    # 10^5 tasks a copy, a call per value and a second pass cost as much as the parse.
    tasks = obj.tasks
    for i, table in enumerate(task_tables, 1):
        if good_keys.issuperset(table):
            for key, value in table.items():
                if type(value) is not str:
                    table[key] = _scalar(label, f"task #{i}", key, value)
            items = table
        else:
            items = _section_items(label, f"task #{i}", table, good_keys)
        if proj_name is not None and "project" not in items:
            items["project"] = proj_name
        if only is not None and "engine" not in items:
            items["engine"] = only
        prefix = by_identity.get((items.get("engine"), items.get("project")), head_text)
        tasks.append(_TomlTask(items, path=path, label=f"{label}: task #{i}", prefix=prefix))
    return obj


class _TomlTask(ConfigSection):
    """A TOML ``[[task]]``, whose GKeyFile rendering (``text``: the project, its engine and
    the task) is made when first read: only the thirdparty engine reads it, and a file may
    hold 10^5 tasks."""

    def __init__(self, items: dict[str, str], *, path: str, label: str, prefix: str) -> None:
        # ConfigSection.__init__ by hand, for 10^5 tasks: ``items`` is this task's own (no
        # copy), and ``text`` is not set (test_objfile checks no attribute is missed)
        self._items = items
        self.group = "task"
        self.path = path
        self.label = label
        self._prefix = prefix
        self._text: str | None = None

    @property
    def text(self) -> str:
        """The GKeyFile text of this task's project, engine and the task itself."""
        if self._text is None:
            prefix = self._prefix
            self._text = (
                prefix
                + ("\n" if prefix and not prefix.endswith("\n\n") else "")
                + keyfile_text([("task", self._items)])
            )
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value or None  # ConfigSection's own "" means "not rendered yet" here
