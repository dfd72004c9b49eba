"""Engine plugins: found by entry-point name (stevedore), validated and called through pluggy.

Every engine, built-in or not, is an entry point in the ``etmem.engines`` group naming a module
(or any object) that holds hookimpls. Only the engines a config asks for are imported. Each one
gets its own ``PluginManager`` checked against the hookspecs, so a broken engine is a named error
for the request that wanted it and never takes the others (or the daemon) down with it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy
from etmem_sdk import hookspecs
from etmem_sdk.hooks import EngineHooks
from stevedore import DriverManager, ExtensionManager, NamedExtensionManager
from stevedore.exception import NoMatches

from .errors import OptCode, OptError

log = logging.getLogger(__name__)

#: The entry-point group engines register under.
GROUP = "etmem.engines"


@dataclass(frozen=True)
class LoadedEngine:
    """An engine plugin that imported and passed validation."""

    name: str
    plugin: Any
    #: the typed door to the plugin's hooks: ``hooks.start_task(engine=..., task=...)``
    hooks: EngineHooks

    @property
    def pm(self) -> pluggy.PluginManager:
        """The plugin's own pluggy manager."""
        return self.hooks.pm

    @property
    def implements(self) -> frozenset[str]:
        """Op names (C ``engine_ops`` fields) with at least one hookimpl."""
        return self.hooks.implemented


@dataclass(frozen=True)
class EngineInfo:
    """One row of ``etmem plugins``."""

    name: str
    distribution: str | None
    version: str | None
    #: implemented ops in C ``engine_ops`` order; empty when not loaded
    ops: tuple[str, ...]
    #: True/False once loading was tried, None when not checked
    loads: bool | None
    error: str | None


class _Duplicate(Exception):
    pass


def _refuse_duplicates(namespace: str, name: str, found: list[Any]) -> Any:
    """Two distributions claiming one engine name: refuse rather than guess which one."""
    targets = ", ".join(ext.entry_point.value for ext in found)
    raise _Duplicate(f"several {namespace!r} entry points have this name: {targets}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class EngineRegistry:
    """Entry-point name -> loaded, hookspec-validated engine plugin.

    ``allowed`` (None = any) and ``blocked`` restrict which engine names may be loaded.
    Loaded engines are cached; a failed load is not, so the next request tries again (after
    the user fixed or installed something) and reports the failure again if it persists.
    """

    def __init__(
        self,
        *,
        allowed: Iterable[str] | None = None,
        blocked: Iterable[str] = (),
        group: str = GROUP,
    ) -> None:
        self.group = group
        self.allowed = set(allowed) if allowed is not None else None
        self.blocked = set(blocked)
        self._loaded: dict[str, LoadedEngine] = {}
        self._injected: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- loading -------------------------------------------------------------------------------

    def register_plugin(self, name: str, plugin: Any) -> LoadedEngine:
        """Use ``plugin`` for engine ``name`` instead of an entry point (tests, SDK fixtures).

        Validated like an entry point; raises :class:`OptError` if it fails the hookspecs.
        """
        with self._lock:
            loaded = self._validate(name, plugin)
            self._injected[name] = plugin
            self._loaded[name] = loaded
            return loaded

    def unregister_plugin(self, name: str) -> None:
        """Forget an injected (or loaded) engine; the next :meth:`get` looks it up again."""
        with self._lock:
            self._injected.pop(name, None)
            self._loaded.pop(name, None)

    def get(self, name: str) -> LoadedEngine:
        """The engine plugin named ``name``, imported on first use.

        Raises ``OptError(OPT_INTER_ERR)``: ``engine NAME not support`` for a name no entry
        point has (C's text), ``engine 'NAME': ...`` saying what failed otherwise.
        """
        with self._lock:
            self._check_policy(name)
            loaded = self._loaded.get(name)
            if loaded is not None:
                return loaded
            plugin = self._import(name)
            loaded = self._validate(name, plugin)
            self._loaded[name] = loaded
            log.info("engine %s loaded (%s)", name, ", ".join(sorted(loaded.implements)))
            return loaded

    def _check_policy(self, name: str) -> None:
        if name in self.blocked:
            raise self._fail(name, "blocked by the daemon's configuration")
        if self.allowed is not None and name not in self.allowed:
            raise self._fail(name, "not in the daemon's list of allowed engines")

    def _import(self, name: str) -> Any:
        if name in self._injected:
            return self._injected[name]
        self._list_group()
        try:
            manager = DriverManager(
                self.group,
                name,
                invoke_on_load=False,
                on_missing_entrypoints_callback=None,
                conflict_resolver=_refuse_duplicates,
            )
        except _Duplicate as exc:
            raise self._fail(name, str(exc)) from None
        except NoMatches:
            # Maybe installed since the group was listed: forget the listing for next time.
            self.refresh()
            err = OptError(OptCode.OPT_INTER_ERR, f"engine {name} not support")
            log.error("%s (no %r entry point named %r)", err.reason, self.group, name)
            raise err from None
        except BaseException as exc:  # whatever the plugin's module raises, KeyboardInterrupt too
            raise self._fail(name, f"cannot import it: {_describe(exc)}", exc) from exc
        return manager.driver

    def _validate(self, name: str, plugin: Any) -> LoadedEngine:
        try:
            hooks = EngineHooks(plugin)
        except BaseException as exc:  # PluginValidationError, or a plugin whose attributes raise
            raise self._fail(name, f"does not match the engine hookspecs: {exc}", exc) from exc
        return LoadedEngine(name=name, plugin=plugin, hooks=hooks)

    def _fail(self, name: str, what: str, exc: BaseException | None = None) -> OptError:
        err = OptError(OptCode.OPT_INTER_ERR, f"engine '{name}': {what}")
        # tracebacks only for errors raised by plugin code, not for policy refusals
        log.error("%s", err.reason, exc_info=exc is not None and log.isEnabledFor(logging.DEBUG))
        return err

    def refresh(self) -> None:
        """Forget the group's listing so that the next look-up sees newly installed engines."""
        ExtensionManager.ENTRY_POINT_CACHE.pop(self.group, None)
        importlib.invalidate_caches()

    def _list_group(self) -> None:
        """Make sure stevedore has a listing of the group, read with importlib.metadata.

        Every stevedore manager takes a group's entry points from ``ENTRY_POINT_CACHE`` when it
        is there, and otherwise from its own memo of the whole table, which has no public way
        to be dropped; filling the former ourselves keeps :meth:`refresh` effective.
        """
        cache = ExtensionManager.ENTRY_POINT_CACHE
        if self.group not in cache:
            cache[self.group] = list(importlib.metadata.entry_points(group=self.group))

    # -- listing -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every engine name known (entry points and injected plugins), sorted; imports nothing."""
        # names=[]: the manager lists the group but loads none of it
        self._list_group()
        lister: NamedExtensionManager[Any] = NamedExtensionManager(
            self.group, names=[], on_missing_entrypoints_callback=None
        )
        return sorted(set(self._injected) | {ep.name for ep in lister.list_entry_points()})

    def list_engines(self, check: bool = False) -> list[EngineInfo]:
        """Describe every engine for ``etmem plugins``.

        ``check=False`` imports nothing (``ops`` shown only for engines already loaded);
        ``check=True`` loads each permitted engine and reports whether it works and why not.
        """
        dists = self._distributions()
        rows = []
        for name in self.names():
            dist, version = dists.get(name, (None, None))
            if name in self._injected:
                dist, version = "(registered in process)", None
            ops: tuple[str, ...] = ()
            loads: bool | None = None
            error: str | None = None
            with self._lock:
                loaded = self._loaded.get(name)
            if check and loaded is None:
                try:
                    loaded = self.get(name)
                except OptError as exc:
                    loads, error = False, exc.reason
            elif name in self.blocked or (self.allowed is not None and name not in self.allowed):
                error = "blocked" if name in self.blocked else "not allowed"
                loads = False if check else None
            if loaded is not None:
                loads = True
                ops = tuple(op for op in hookspecs.ENGINE_OPS if op in loaded.implements)
            rows.append(EngineInfo(name, dist, version, ops, loads, error))
        return rows

    def _distributions(self) -> dict[str, tuple[str | None, str | None]]:
        """Entry-point name -> (distribution name, version), read from metadata only."""
        found: dict[str, tuple[str | None, str | None]] = {}
        for ep in importlib.metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            if dist is not None and ep.name not in found:
                found[ep.name] = (dist.metadata["Name"], dist.version)
        return found
