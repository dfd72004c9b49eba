"""The object store of etmemd: projects, their engines and tasks, and what each request does.

Orderings, result codes and the ``project show`` text follow the C daemon (etmemd_project.c).
Two deliberate fixes: ``obj add`` is atomic (a failure leaves nothing of that file added), and
a failed ``project start`` stops the tasks it had already started.

Engines are called only through their pluggy hooks, always with keyword arguments. Whatever an
engine raises -- ``ConfigError``, ``EngineError`` or a plain bug -- becomes an :class:`OptError`
for that request naming the engine, and is logged; the daemon carries on. Teardown hooks
(``stop_task``, ``clear_*``) run even after a failure and never hide the first error.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec

from etmem_sdk import ConfigSection, Engine, EtmemError, Project, Reply, Task, scan, targets
from etmem_sdk.hooks import EngineHooks

from . import object_keys, objfile
from .daemon_settings import HOOK_DEADLINE
from .deadline import BatchStopped, DeadlineExceeded, Runner
from .errors import OptCode, OptError
from .registry import EngineRegistry
from .show import project_doc, show_text

log = logging.getLogger(__name__)

Undo = Callable[[], None]

_P = ParamSpec("_P")
#: A hook, named by its :class:`EngineHooks` method (``EngineHooks.start_task``), never by a
#: string: a misspelt hook is a type error, and grep finds every call.
Hook = Callable[Concatenate[EngineHooks, _P], None]

#: How long a request waits for the one before it (usually an engine hook still running) before
#: it is answered "busy": less than the client's 10 s, so the client learns why instead of
#: timing out, and a hung engine names itself.
LOCK_WAIT = 8.0


#: Object files larger than this (bytes) are parsed at most BIG_LOADS at a time. Parsing a
#: 10 MiB file takes ~100 MiB and is pure Python: two at once would only interleave on the
#: interpreter lock, so one at a time costs no throughput and half the peak memory.
BIG_FILE = 1 << 20
BIG_LOADS = 1

#: What undoes a hook that returned after its deadline, when the core had already given up,
#: and which of the late call's arguments it takes.
_UNDO_LATE: dict[str, tuple[Hook[...], tuple[str, ...]]] = {
    "fill_eng_params": (EngineHooks.clear_eng_params, ("engine",)),
    "fill_task_params": (EngineHooks.clear_task_params, ("task",)),
    "start_task": (EngineHooks.stop_task, ("engine", "task")),
}


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while an object file is parsed and applied.

    Its 10^5 sections and tasks all stay alive to the end, and the collector would traverse
    them again at every generation it promotes them to: a third or more of the time of a
    40,000-task ``obj add``. Reference counting still frees everything else; concurrent
    requests share one pause, and collection resumes when the last of them ends.

    What the pause allocated then goes straight to the oldest generation: the first young
    collection after it would otherwise traverse all of it (~0.13 s for 40,000 tasks, in
    the request's own time) and a middle one again later, for objects that mostly live on.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                if gc.get_freeze_count() == 0:  # else someone froze objects on purpose
                    gc.freeze()  # every tracked object out of the generations, at no cost
                    gc.unfreeze()  # and back, into the oldest
                gc.enable()


def _hooks(engine: Engine) -> EngineHooks:
    """The engine's hooks; the store links only engines the registry loaded, which have them."""
    assert engine.hooks is not None, engine.name
    return engine.hooks


def _stops(engine: Engine, tasks: list[Task]) -> list[dict[str, Any]]:
    """The arguments of ``start_task``/``stop_task`` for each of ``tasks``."""
    return [{"engine": engine, "task": t} for t in tasks]


def _clears(tasks: list[Task]) -> list[dict[str, Any]]:
    """The arguments of ``clear_task_params`` for each of ``tasks``."""
    return [{"task": t} for t in tasks]


def _inval(reason: str) -> OptError:
    return OptError(OptCode.OPT_INVAL, reason)


def _parsed(
    fn: Callable[[ConfigSection], Any],
    section: ConfigSection,
    code: OptCode = OptCode.OPT_INVAL,
) -> Any:
    """Run a core-key parser; a rejected value becomes ``code`` with the parser's message.

    Names (missing or too long) are always OPT_INVAL, as in C.
    """
    try:
        return fn(section)
    except OptError:
        raise
    except object_keys.ObjectNameError as exc:
        raise _inval(str(exc)) from None
    except EtmemError as exc:
        raise OptError(code, str(exc)) from None


class ObjectStore:
    """All projects of one daemon (newest first, as C), and the requests that change them.

    Every public method takes the store's lock, so requests from several client threads are
    serialised exactly as the single-threaded C daemon serialises them. Failures raise
    :class:`OptError`.
    """

    def __init__(
        self,
        registry: EngineRegistry | None = None,
        *,
        load: Callable[[str], Any] | None = None,
        lock_wait: float = LOCK_WAIT,
        hook_deadline: float | None = None,
    ) -> None:
        self.registry = registry if registry is not None else EngineRegistry()
        self._load_file = load if load is not None else objfile.load_object_file
        #: parses of files added, for their obj del (with the default loader only)
        self._memo = objfile.ParseMemo() if load is None else None
        self._projects: list[Project] = []
        self._lock = threading.RLock()
        self.lock_wait = lock_wait
        #: (what, since) of the engine hook running now, for the "busy" answer
        self._busy: tuple[str, float] | None = None
        #: seconds a hook may take (0: no deadline, hooks run on the request's thread); the
        #: daemon passes what its settings say (``DaemonSettings.hook_deadline_seconds``)
        self.hook_deadline = HOOK_DEADLINE if hook_deadline is None else hook_deadline
        self._runner = Runner()
        self._big_loads = threading.BoundedSemaphore(BIG_LOADS)
        #: engines with a hook still running past its deadline -> that hook's name; they get
        #: no further calls until it returns (it may hold the engine's own locks)
        self._wedged: dict[int, str] = {}
        #: teardown owed to a wedged engine that has left the store, run once its hook returns
        self._owed: dict[int, list[Callable[[], None]]] = {}

    # -- lookups -------------------------------------------------------------------------------

    @property
    def projects(self) -> list[Project]:
        """A snapshot of the projects, newest first."""
        with self._lock:
            return list(self._projects)

    def find_project(self, name: str) -> Project | None:
        """The project called ``name``, or None."""
        with self._lock:
            return next((p for p in self._projects if p.name == name), None)

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """The store's lock for one request; "busy" (naming the hook that holds it) if the
        request before does not finish within ``lock_wait`` seconds."""
        if not self._lock.acquire(timeout=self.lock_wait):
            busy = self._busy
            what = (
                f"{busy[0]} has been running for {time.monotonic() - busy[1]:.0f} s"
                if busy is not None
                else "another request is still running"
            )
            raise OptError(OptCode.OPT_INTER_ERR, f"etmemd is busy: {what}; try again later")
        try:
            yield
        finally:
            self._lock.release()

    def _need_project(self, name: str, section: ConfigSection | None = None) -> Project:
        project = self.find_project(name)
        if project is None:
            where = f"{section.label}: " if section is not None else ""
            raise OptError(OptCode.OPT_PRO_NOEXIST, f"{where}project {name} does not exist")
        return project

    @staticmethod
    def _need_engine(project: Project, name: str, section: ConfigSection | None = None) -> Engine:
        engine = project.find_engine(name)
        if engine is None:
            where = f"{section.label}: " if section is not None else ""
            raise OptError(
                OptCode.OPT_ENG_NOEXIST,
                f"{where}engine {name} does not exist in project {project.name}",
            )
        return engine

    def _finder(self) -> Callable[[str, str, ConfigSection], tuple[Project, Engine]]:
        """``_need_project`` + ``_need_engine`` for the tasks of one file, remembering what
        it found (a file's tasks name the same few engines; it may hold 10^5 tasks). Valid
        while the caller holds the store's lock and adds or removes no project or engine."""
        found: dict[tuple[str, str], tuple[Project, Engine]] = {}

        def find(proj_name: str, eng_name: str, section: ConfigSection) -> tuple[Project, Engine]:
            hit = found.get((proj_name, eng_name))
            if hit is None:
                project = self._need_project(proj_name, section)
                hit = found[proj_name, eng_name] = (
                    project,
                    self._need_engine(project, eng_name, section),
                )
            return hit

        return find

    # -- obj add / del ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _loaded(self, path: str, *, reuse: bool = False) -> Iterator[Any]:
        """The parsed object file, for one request: a big file's slot is held until the
        request is done, since its parsed form lives that long. ``reuse``: the parse made
        when these very bytes were added will do (``obj del``)."""
        slot: list[bool] = []
        try:
            yield self._load(path, slot, reuse=reuse)
        finally:
            if slot:
                self._big_loads.release()

    def _load(self, path: str, slot: list[bool] | None = None, *, reuse: bool = False) -> Any:
        """Check and parse an object file; C resolves relative paths in the daemon's cwd.

        With ``slot``, a big file's parse slot stays taken (``slot`` says so) for the caller
        to release."""
        if not path:
            raise _inval("no configuration file given")
        full = os.path.abspath(path)
        try:
            big = os.stat(full).st_size > BIG_FILE
        except (OSError, ValueError):
            big = False  # the load below says why it cannot be read
        # Parsing takes ~10x the file's size: bound how many big files are parsed at once, so
        # 200 concurrent 10 MiB adds cannot take gigabytes.
        if big and not self._big_loads.acquire(timeout=self.lock_wait):
            raise OptError(
                OptCode.OPT_INTER_ERR,
                f"etmemd is busy: another large object file is being read (at most {BIG_LOADS} "
                "at a time); try again later",
            )
        try:
            try:
                if reuse and self._memo is not None:
                    obj = objfile.load_object_file(full, memo=self._memo)
                else:
                    obj = self._load_file(full)
            except OptError:
                raise
            except objfile.ObjectFileSyntaxError as exc:
                raise OptError(OptCode.OPT_INTER_ERR, str(exc)) from None
            except (EtmemError, OSError, ValueError) as exc:
                raise _inval(str(exc) or f"{path}: cannot be used") from None
            if not (obj.projects or obj.engines or obj.tasks):
                raise _inval(f"{os.path.basename(full)}: no group has been parsed")
            if big and slot is not None:
                slot.append(True)  # the caller releases it
                big = False
        finally:
            if big:  # a refused file must give its slot back, or two of them wedge every big add
                self._big_loads.release()
        return obj

    def obj_add(self, path: str) -> None:
        """``etmem obj add``: add the file's project, engines and tasks, in that order.

        All or nothing: on the first failure everything this file added so far is removed
        again (in reverse order) and the failure is raised.
        """
        with _gc_paused(), self._loaded(path) as obj, self._request():
            undo: list[Undo] = []
            try:
                for section in obj.projects:
                    undo.append(self._add_project(section))
                for section in obj.engines:
                    undo.append(self._add_engine(section))
                self._add_tasks(obj.tasks, undo)
            except OptError as exc:
                log.error("obj add %s failed: %s", path, exc.reason)
                self._rollback(undo, path)
                raise
            except BaseException as exc:  # a bug: still leave nothing half-added
                log.error("obj add %s failed", path, exc_info=exc)
                self._rollback(undo, path)
                raise OptError(
                    OptCode.OPT_INTER_ERR, f"{path}: {type(exc).__name__}: {exc}"
                ) from exc
            if self._memo is not None:
                self._memo.remember(obj)
        log.info("obj add %s: done", path)

    def _rollback(self, undo: list[Undo], path: str) -> None:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # never hide the error that caused the rollback
                log.exception("obj add %s: rollback step failed", path)

    def obj_del(self, path: str) -> None:
        """``etmem obj del``: remove the file's tasks, engines, then project.

        As in C every group is attempted and the last failure is raised.
        """
        with _gc_paused(), self._loaded(path, reuse=True) as obj, self._request():
            last: OptError | None = self._del_tasks(path, obj.tasks)
            for remove, sections in (
                (self._del_engine, obj.engines),
                (self._del_project, obj.projects),
            ):
                for section in sections:
                    try:
                        remove(section)
                    except Exception as exc:  # obj del goes on past one failure
                        last = _del_failure(path, exc)
            if last is not None:
                raise last
        log.info("obj del %s: done", path)

    # projects

    def _add_project(self, section: ConfigSection) -> Undo:
        project: Project = _parsed(object_keys.parse_project, section)
        if self.find_project(project.name) is not None:
            raise OptError(
                OptCode.OPT_PRO_EXISTED,
                f"{section.label}: project {project.name} has already been added",
            )
        if project.config is None:
            project.config = section
        self._projects.insert(0, project)
        return lambda: self._remove_project(project, [])

    def _del_project(self, section: ConfigSection) -> None:
        # C needs only [project] name to delete a project
        name = _parsed(object_keys.project_identity, section)
        project = self._need_project(name, section)
        errors: list[OptError] = []
        self._remove_project(project, errors)
        if errors:
            raise errors[0]

    def _remove_project(self, project: Project, errors: list[OptError]) -> None:
        if project in self._projects:
            self._projects.remove(project)
        # engines go while ``start`` still says whether their tasks need stopping
        for engine in list(project.engines):
            self._remove_engine(project, engine, errors)
        project.start = False

    # engines

    def _add_engine(self, section: ConfigSection) -> Undo:
        proj_name, eng_name = _parsed(object_keys.engine_identity, section)
        kind = section.get("name", "")
        project = self._need_project(proj_name, section)
        if project.find_engine(eng_name) is not None:
            raise OptError(
                OptCode.OPT_ENG_EXISTED,
                f"{section.label}: engine {eng_name} already exists in project {proj_name}",
            )
        loaded = self.registry.get(kind)
        engine = Engine(
            name=eng_name,
            kind=kind,
            project=project,
            config=section,
            hooks=loaded.hooks,
            implements=loaded.implements,
        )
        project.engines.insert(0, engine)
        try:
            # a refused engine is unlinked without clear_eng_params, as in C
            self._call(engine, EngineHooks.fill_eng_params, engine=engine, config=section)
        except BaseException:
            project.engines.remove(engine)
            raise
        return lambda: self._remove_engine(project, engine, [])

    def _del_engine(self, section: ConfigSection) -> None:
        proj_name, eng_name = _parsed(object_keys.engine_identity, section)
        project = self._need_project(proj_name, section)
        engine = self._need_engine(project, eng_name, section)
        errors: list[OptError] = []
        self._remove_engine(project, engine, errors)
        if errors:
            raise errors[0]

    def _remove_engine(self, project: Project, engine: Engine, errors: list[OptError]) -> None:
        self._remove_tasks(project, engine, list(engine.tasks), errors)
        self._teardown(engine, EngineHooks.clear_eng_params, errors, engine=engine)
        if engine in project.engines:
            project.engines.remove(engine)

    # tasks

    def _add_tasks(self, sections: list[ConfigSection], undo: list[Undo]) -> None:
        """Add a file's tasks: all checked first, then linked and filled engine by engine.

        In bulk, so that a file of 40,000 tasks costs linear time: names are looked up in a
        set, each engine's list grows once, and each engine's hooks run as one batch.
        """
        prepared: list[tuple[Project, Engine, Task]] = []
        names: dict[int, set[str]] = {}
        find = self._finder()
        nprocs = os.cpu_count() or 1  # once, not once per task
        # The file's tasks repeat a few combinations of these keys (TASK_KEYS but the name):
        # once a task passed every check with one, the next that has it only needs its own
        # name checked. Errors always come from the full checks below, in their order.
        passed: dict[tuple[str | None, ...], tuple[Project, Engine, set[str], Task]] = {}

        def parse_task(section: ConfigSection) -> Task:
            return object_keys.parse_task(section, nprocs=nprocs)

        for section in sections:
            get = section.get
            task_name = get("name")
            key = (
                get("project"),
                get("engine"),
                get("type"),
                get("value"),
                get("swap_flag"),
                get("max_threads"),
            )
            hit = passed.get(key)
            if hit is not None and object_keys.is_plain_name(task_name):
                project, engine, seen, like = hit
                if task_name in seen:
                    raise OptError(
                        OptCode.OPT_TASK_EXISTED,
                        f"{section.label}: task {task_name} already exists in engine {key[1]}",
                    )
                task = Task(
                    name=task_name,
                    type=like.type,
                    value=like.value,
                    max_threads=like.max_threads,
                    swap_flag=like.swap_flag,
                    engine=engine,
                    config=section,
                )
                seen.add(task_name)
                prepared.append((project, engine, task))
                continue
            proj_name, eng_name, task_name = _parsed(object_keys.task_identity, section)
            project, engine = find(proj_name, eng_name, section)
            taken = names.get(id(engine))
            if taken is None:
                taken = names[id(engine)] = {t.name for t in engine.tasks}
            if task_name in taken:
                raise OptError(
                    OptCode.OPT_TASK_EXISTED,
                    f"{section.label}: task {task_name} already exists in engine {eng_name}",
                )
            # C answers OPT_INTER_ERR for a bad type/value/swap_flag/max_threads
            # (only names are OPT_INVAL)
            task = _parsed(parse_task, section, OptCode.OPT_INTER_ERR)
            _check_pid_value(section, task)
            task.engine = engine
            if task.config is None:
                task.config = section
            taken.add(task_name)
            prepared.append((project, engine, task))
            if key[5] is None or key[5] == str(task.max_threads):  # not one warned about
                passed[key] = (project, engine, taken, task)
        i = 0
        while i < len(prepared):
            project, engine = prepared[i][0], prepared[i][1]
            j = i
            while j < len(prepared) and prepared[j][1] is engine:
                j += 1
            undo.append(self._link_tasks(project, engine, [t for _, _, t in prepared[i:j]]))
            i = j

    def _link_tasks(self, project: Project, engine: Engine, tasks: list[Task]) -> Undo:
        """Link ``tasks`` (file order) into ``engine``, fill them, start them if the project
        runs; on a failure undo this group and raise."""
        engine.tasks[0:0] = tasks[::-1]  # newest first, as C
        filled: list[Task] = []
        started: list[Task] = []
        try:
            self._call_many(
                engine,
                EngineHooks.fill_task_params,
                [{"task": t, "config": t.config} for t in tasks],
                filled,
            )
            if project.start and "start_task" in engine.implements:
                self._call_many(engine, EngineHooks.start_task, _stops(engine, tasks), started)
        except BaseException:
            if started:
                self._teardown_many(engine, EngineHooks.stop_task, _stops(engine, started), [])
            self._teardown_many(engine, EngineHooks.clear_task_params, _clears(filled), [])
            self._unlink(engine, tasks)
            raise
        return lambda: self._remove_tasks(project, engine, tasks, [])

    @staticmethod
    def _unlink(engine: Engine, tasks: list[Task]) -> None:
        gone = {id(t) for t in tasks}
        engine.tasks[:] = [t for t in engine.tasks if id(t) not in gone]

    def _del_tasks(self, path: str, sections: list[ConfigSection]) -> OptError | None:
        """Remove a file's tasks (every one is attempted, as C); the last failure, or None."""
        last: OptError | None = None
        groups: dict[int, tuple[Project, Engine, list[Task]]] = {}
        index: dict[int, dict[str, Task]] = {}
        find = self._finder()
        # (project, engine) of the file's tasks that passed the checks: the next task naming
        # them needs only its own name checked
        passed: dict[tuple[str, str], tuple[Project, Engine, dict[str, Task]]] = {}
        for section in sections:
            try:
                get = section.get
                proj_name, eng_name, task_name = get("project"), get("engine"), get("name")
                hit = passed.get((proj_name, eng_name))
                if hit is not None and object_keys.is_plain_name(task_name):
                    project, engine, by_name = hit
                else:
                    proj_name, eng_name, task_name = _parsed(object_keys.task_identity, section)
                    project, engine = find(proj_name, eng_name, section)
                    found = index.get(id(engine))
                    if found is None:
                        found = index[id(engine)] = {t.name: t for t in reversed(engine.tasks)}
                    by_name = found
                    passed[proj_name, eng_name] = (project, engine, by_name)
                task = by_name.pop(task_name, None)
                if task is None:
                    raise OptError(
                        OptCode.OPT_TASK_NOEXIST,
                        f"{section.label}: task {task_name} does not exist in engine {eng_name}",
                    )
                groups.setdefault(id(engine), (project, engine, []))[2].append(task)
            except Exception as exc:  # obj del goes on past one failure
                last = _del_failure(path, exc)
        for project, engine, tasks in groups.values():
            errors: list[OptError] = []
            self._remove_tasks(project, engine, tasks, errors)
            for err in errors:
                log.error("obj del %s: %s", path, err.reason)
                last = err
        return last

    def _remove_tasks(
        self, project: Project, engine: Engine, tasks: list[Task], errors: list[OptError]
    ) -> None:
        if project.start:
            if "stop_task" in engine.implements:
                self._teardown_many(engine, EngineHooks.stop_task, _stops(engine, tasks), errors)
            elif tasks:
                log.error(
                    "engine %s: has no stop_task, %d task(s) not stopped", engine.name, len(tasks)
                )
        self._teardown_many(engine, EngineHooks.clear_task_params, _clears(tasks), errors)
        self._unlink(engine, tasks)

    # -- start / stop ----------------------------------------------------------------------------

    def project_start(self, name: str | None) -> None:
        """``etmem project start``: ``start_task`` for every task of every engine.

        An engine without ``start_task`` makes the start fail (as in C, even with no tasks).
        On failure the tasks started so far are stopped again and the project stays stopped.
        """
        if not name:
            raise _inval("no project name given")
        with self._request():
            project = self._need_project(name)
            if project.start:
                raise OptError(OptCode.OPT_PRO_STARTED, f"project {name} is already started")
            started: list[tuple[Engine, list[Task]]] = []
            try:
                for engine in project.engines:
                    if "start_task" not in engine.implements:
                        raise OptError(
                            OptCode.OPT_INTER_ERR,
                            f"engine {engine.name}: has no start_task, "
                            f"so project {name} cannot start",
                        )
                    done: list[Task] = []
                    try:
                        self._call_many(
                            engine, EngineHooks.start_task, _stops(engine, engine.tasks), done
                        )
                    finally:
                        started.append((engine, done))
            except BaseException as exc:
                reason = exc.reason if isinstance(exc, OptError) else repr(exc)
                log.error("project start %s failed: %s", name, reason)
                for engine, done in reversed(started):
                    self._teardown_many(
                        engine, EngineHooks.stop_task, _stops(engine, done[::-1]), []
                    )
                raise
            project.start = True
        log.info("project %s started", name)

    def project_stop(self, name: str | None) -> None:
        """``etmem project stop``: ``stop_task`` for every task; the project is stopped even
        if an engine fails (the first failure is raised afterwards)."""
        if not name:
            raise _inval("no project name given")
        with self._request():
            project = self._need_project(name)
            if not project.start:
                raise OptError(OptCode.OPT_PRO_STOPPED, f"project {name} is already stopped")
            errors: list[OptError] = []
            for engine in project.engines:
                if "stop_task" not in engine.implements:
                    log.error("engine %s: has no stop_task, its tasks are not stopped", engine.name)
                    continue
                calls = _stops(engine, engine.tasks)
                self._teardown_many(engine, EngineHooks.stop_task, calls, errors)
            project.start = False
        log.info("project %s stopped", name)
        if errors:
            raise errors[0]

    # -- engine private commands -------------------------------------------------------------------

    def engine_cmd(
        self,
        project: str | None,
        engine: str | None,
        task: str | None,
        cmd: str | None,
        reply: Reply,
    ) -> None:
        """``etmem engine CMD``: run the engine's ``eng_mgt_func``; its output goes to ``reply``.

        C's checks in C's order; the project must be started. An engine that raises an
        ``EtmemError`` answers "invalid parameters" (C's non-zero return); anything else it
        raises is an internal error.
        """
        if not project or not engine or not cmd:
            raise _inval("engine command needs a project, an engine and a command")
        with self._request():
            proj = self._need_project(project)
            if not proj.start:
                raise _inval(f"project {project} is not started")
            eng = self._need_engine(proj, engine)
            tk = None
            if task:
                tk = eng.find_task(task)
                if tk is None:
                    raise OptError(
                        OptCode.OPT_TASK_NOEXIST,
                        f"task {task} does not exist in engine {engine}",
                    )
            if "eng_mgt_func" not in eng.implements:
                raise _inval(f"engine {engine}: has no private commands")
            # Output after a deadline must not reach a client that already got its answer.
            gate = {"open": True}
            gated = Reply(lambda data: reply.write(data) if gate["open"] else None)
            try:
                self._call(eng, EngineHooks.eng_mgt_func, engine=eng, task=tk, cmd=cmd, reply=gated)
            except OptError as exc:
                if isinstance(exc.__cause__, EtmemError):
                    raise OptError(OptCode.OPT_INVAL, exc.reason) from exc.__cause__
                raise
            finally:
                gate["open"] = False

    # -- show ----------------------------------------------------------------------------------

    def _chosen(self, name: str | None) -> list[Project]:
        return [p for p in self._projects if name is None or p.name == name]

    def project_show(self, name: str | None, reply: Reply) -> None:
        """``etmem project show [-n NAME]``: C's table, byte for byte (always a success)."""
        name = name or None
        with self._request():
            for piece in show_text(self._chosen(name), name):
                reply.write(piece)

    def project_show_json(self, name: str | None) -> list[dict[str, Any]]:
        """Everything ``project show`` knows, plus settings, pids and each object's ``stats``.

        An unknown ``name`` gives an empty list.
        """
        name = name or None
        with self._request():
            return [project_doc(p) for p in self._chosen(name)]

    # -- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop and delete every project (daemon exit); failures are only logged."""
        with self._lock:
            for project in list(self._projects):
                errors: list[OptError] = []
                self._remove_project(project, errors)
                for err in errors:
                    log.error("shutdown: project %s: %s", project.name, err.reason)
        log.info("all projects removed")
        # a kdamond left behind by a worker stuck past its stop would make DAMON busy for
        # the next user: the mechanism gives back what it still holds
        scan.shutdown()

    # -- calling engines -----------------------------------------------------------------------

    def _call(self, engine: Engine, hook: Hook[_P], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Call ``hook`` if the engine implements it; any failure -> OPT_INTER_ERR.

        The hook has :attr:`hook_deadline` seconds; past them it is abandoned and fails like a
        hook that raised, naming itself, and the engine gets no further calls until it
        returns (what it did late is undone then, see ``_UNDO_LATE``).
        """
        op = hook.__name__
        if op not in engine.implements:
            return
        hooks = _hooks(engine)

        def run() -> None:
            hook(hooks, *args, **kwargs)

        key = id(engine)
        stuck = self._wedged.get(key)
        if stuck is not None:
            reason = (
                f"engine {engine.name}: {op}: not called, its {stuck} has not returned yet "
                "(past its deadline)"
            )
            log.error("%s", reason)
            if op == "clear_eng_params":  # owed once the hook returns (an isolated helper ends)
                self._owed.setdefault(key, []).append(run)
            raise OptError(OptCode.OPT_INTER_ERR, reason)
        outer, self._busy = self._busy, (f"engine {engine.name}: {op}", time.monotonic())
        try:
            self._runner.call(run, self.hook_deadline, self._late(engine, op, dict(kwargs)))
        except DeadlineExceeded as exc:
            raise self._abandoned(engine, key, op, exc) from None
        except BaseException as exc:
            # Hooks run on worker threads (signals reach only the main thread, whose handlers
            # raise nothing), so even KeyboardInterrupt here is the engine's own doing.
            raise self._engine_failed(engine, op, exc) from exc
        finally:
            self._busy = outer

    def _late(
        self, engine: Engine, op: str, kwargs: dict[str, Any]
    ) -> Callable[[Any, BaseException | None], None]:
        """What runs on the abandoned thread when ``op`` finally returns."""

        def late(_result: Any, error: BaseException | None) -> None:
            key = id(engine)
            log.warning(
                "engine %s: %s returned after its deadline%s",
                engine.name,
                op,
                f" ({type(error).__name__}: {error})" if error is not None else "",
            )
            undo, names = _UNDO_LATE.get(op, (None, ()))
            if error is None and undo is not None and undo.__name__ in engine.implements:
                try:
                    undo(_hooks(engine), **{name: kwargs[name] for name in names})
                except BaseException as exc:
                    log.error(
                        "engine %s: %s after a late %s failed: %s", engine.name, undo, op, exc
                    )
            self._wedged.pop(key, None)
            for owed in self._owed.pop(key, []):
                try:
                    owed()
                except BaseException as exc:
                    log.error("engine %s: owed teardown failed: %s", engine.name, exc)

        return late

    def _call_many(
        self, engine: Engine, hook: Hook[...], calls: list[dict[str, Any]], done: list[Task]
    ) -> None:
        """``_call`` for a batch of calls of one hook of one engine (keyword arguments each) on
        one worker thread, each with the deadline; the ``task`` of each call that returned goes
        to ``done``. Stops at the first failure, raised as by ``_call``."""
        op = hook.__name__
        if op not in engine.implements:
            done.extend(c["task"] for c in calls)
            return
        if not calls:
            return
        key = id(engine)
        stuck = self._wedged.get(key)
        if stuck is not None:
            self._call(engine, hook, **calls[0])  # raises the "not called" failure
        batch = _hooks(engine).batch(hook, calls)
        returned = 0  # calls[:returned] returned; one abandoned is its late callback's
        outer, self._busy = self._busy, (f"engine {engine.name}: {op}", time.monotonic())
        try:
            self._runner.call_many(
                batch, self.hook_deadline, lambda i: self._late(engine, op, calls[i])
            )
            returned = len(calls)
        except DeadlineExceeded as exc:
            returned = exc.index  # type: ignore[attr-defined]
            raise self._abandoned(engine, key, op, exc) from None
        except BatchStopped as exc:
            returned = exc.index
            raise self._engine_failed(engine, op, exc.error) from exc.error
        finally:
            done.extend(c["task"] for c in calls[:returned])
            self._busy = outer

    def _teardown_many(
        self, engine: Engine, hook: Hook[...], calls: list[dict[str, Any]], errors: list[OptError]
    ) -> None:
        """A teardown hook for each task of ``calls`` (see :func:`_stops`, :func:`_clears`):
        every one is attempted (failures go to ``errors``), except once the engine is stuck
        past a deadline (reported once)."""
        start = 0
        while start < len(calls):
            done: list[Task] = []
            try:
                self._call_many(engine, hook, calls[start:], done)
                return
            except OptError as exc:
                errors.append(exc)
                if id(engine) in self._wedged:
                    return
                start += len(done) + 1

    def _teardown(
        self,
        engine: Engine,
        hook: Hook[_P],
        errors: list[OptError],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        """Call a teardown hook; a failure is logged and recorded in ``errors``, never raised."""
        try:
            self._call(engine, hook, *args, **kwargs)
        except OptError as exc:
            errors.append(exc)

    def _abandoned(self, engine: Engine, key: Any, op: str, exc: DeadlineExceeded) -> OptError:
        """A hook past its deadline: the engine is wedged on ``op`` until it returns, and the
        request gets this reply."""
        self._wedged[key] = op
        reason = f"engine {engine.name}: {op}: {exc}; abandoned"
        log.error("%s", reason)
        return OptError(OptCode.OPT_INTER_ERR, reason)

    @staticmethod
    def _engine_failed(
        engine: Engine,
        op: str,
        exc: BaseException,
        code: OptCode = OptCode.OPT_INTER_ERR,
    ) -> OptError:
        if isinstance(exc, EtmemError):
            reason = f"engine {engine.name}: {op}: {exc}"
            log.error("%s", reason)
        else:  # a bug in the engine: keep the traceback in the log
            reason = f"engine {engine.name}: {op}: {type(exc).__name__}: {exc}"
            log.error("%s", reason, exc_info=exc)
        return OptError(code, reason)


def _check_pid_value(section: ConfigSection, task: Task) -> None:
    """Deliberate difference: a ``type=pid`` value must be a process id. The original accepts
    any value of the name rule (``abc``, ``-1``, ``0x10``) and then never finds a target,
    saying so only in its debug log; here ``obj add`` refuses it, naming the key."""
    if task.type == "pid" and targets.pid_value(task.value) is None:
        raise OptError(
            OptCode.OPT_INTER_ERR,
            f"{section.where('value')}: type=pid needs a process id, a number from 1 to "
            f"{targets.MAX_PID_VALUE}",
        )


def _del_failure(path: str, exc: Exception) -> OptError:
    """Log one failure of ``obj del`` (which goes on with the rest) and give its reply: an
    ``OptError`` as it is, anything else as a bug in the core (logged with its traceback)."""
    if isinstance(exc, OptError):
        log.error("obj del %s: %s", path, exc.reason)
        return exc
    log.exception("obj del %s failed", path)
    return OptError(OptCode.OPT_INTER_ERR, f"{path}: {exc}")
