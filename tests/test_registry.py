"""EngineRegistry: engines found through real ``etmem.engines`` entry points, lazily, each
validated against the hookspecs; broken engines are named errors, never a dead daemon."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from etmem_sdk import BufferReply, hookimpl
from stevedore import ExtensionManager
from stevedore import _cache as stevedore_cache

from etmem_core.errors import OptCode, OptError
from etmem_core.lifecycle import ObjectStore
from etmem_core.registry import GROUP, EngineRegistry

GOOD_ENGINE = '''
"""A throw-away engine: records what the core asks of it in EVENTS (test only)."""
from etmem_sdk import ConfigError, EngineError, hookimpl

EVENTS = []


@hookimpl
def fill_eng_params(engine, config):
    if config.get("engine_private_key") != "1024":
        raise ConfigError(config.where("engine_private_key") + ": must be 1024")
    assert config.text and config.path
    engine.params = {"key": config["engine_private_key"]}
    EVENTS.append(("fill_eng_params", engine.name, engine.project.name))


@hookimpl
def clear_eng_params(engine):
    EVENTS.append(("clear_eng_params", engine.name))
    engine.params = None


@hookimpl
def fill_task_params(task, config):
    task.params = config.get("task_private_key")
    EVENTS.append(("fill_task_params", task.name))


@hookimpl
def clear_task_params(task):
    EVENTS.append(("clear_task_params", task.name))


@hookimpl
def start_task(engine, task):
    EVENTS.append(("start_task", task.name))


@hookimpl
def stop_task(engine, task):
    EVENTS.append(("stop_task", task.name))


@hookimpl
def eng_mgt_func(engine, task, cmd, reply):
    if cmd != "my_cmd":
        raise EngineError(f"unknown command {cmd}")
    EVENTS.append(("eng_mgt_func", cmd, task.name if task else None))
    reply.write("msg to client\\n")
'''

PLUGIN_OBJECT = """
from etmem_sdk import hookimpl

class Policy:
    @hookimpl
    def start_task(self, engine, task):
        pass

    @hookimpl
    def stop_task(self, engine, task):
        pass

PLUGIN = Policy()
"""


class Site:
    """A directory on sys.path holding engine modules and ``*.dist-info`` entry points."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root = root
        self.tag = tag
        self.modules: list[str] = []

    def module(self, name: str, source: str) -> str:
        """Write a module; returns its unique import name."""
        modname = f"etmem_test_{name}_{self.tag}"
        (self.root / f"{modname}.py").write_text(textwrap.dedent(source))
        self.modules.append(modname)
        return modname

    def dist(self, dist: str, entry_points: dict[str, str], version: str = "1.0") -> None:
        info = self.root / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    # stevedore keeps the group's listing in a class attribute and an on-disk cache keyed by
    # sys.path: start from a clean listing and keep the cache file out of the home directory
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    monkeypatch.setattr(stevedore_cache._c, "_dir", str(tmp_path / "epcache"))
    s = Site(root, uuid.uuid4().hex[:8])
    yield s
    for name in s.modules:
        sys.modules.pop(name, None)


def conf(files: Path, name: str, text: str) -> str:
    path = files / name
    path.write_text(textwrap.dedent(text))
    os.chmod(path, 0o600)
    return str(path)


def test_entry_point_engine_full_cycle(site: Site, tmp_path: Path) -> None:
    good = site.module("good", GOOD_ENGINE)
    lazy = site.module("lazy", "raise RuntimeError('imported although no config names it')\n")
    site.dist("etmem_plugin_good", {"goodeng": good, "lazyeng": lazy})
    registry = EngineRegistry()
    d = ObjectStore(registry)
    path = conf(
        tmp_path,
        "good.conf",
        """\
        [project]
        name=proj
        loop=1
        interval=1
        sleep=1
        [engine]
        project=proj
        name=goodeng
        engine_private_key=1024
        [task]
        project=proj
        engine=goodeng
        name=background1
        type=name
        value=sshd
        task_private_key=2048
        """,
    )
    try:
        d.obj_add(path)
        d.project_start("proj")
        reply = BufferReply()
        d.engine_cmd("proj", "goodeng", "background1", "my_cmd", reply)
        assert reply.text == "msg to client\n"
        with pytest.raises(OptError) as e:
            d.engine_cmd("proj", "goodeng", None, "other", BufferReply())
        assert e.value.code is OptCode.OPT_INVAL
        d.project_stop("proj")
        d.obj_del(path)
    finally:
        d.shutdown()
    events = sys.modules[good].EVENTS
    assert events == [
        ("fill_eng_params", "goodeng", "proj"),
        ("fill_task_params", "background1"),
        ("start_task", "background1"),
        ("eng_mgt_func", "my_cmd", "background1"),
        ("stop_task", "background1"),
        ("clear_task_params", "background1"),
        ("clear_eng_params", "goodeng"),
    ]
    # only the engine the config named was imported
    assert lazy not in sys.modules
    loaded = registry.get("goodeng")
    assert loaded.plugin is sys.modules[good]  # the module itself is the plugin
    assert loaded.implements == {
        "fill_eng_params",
        "clear_eng_params",
        "fill_task_params",
        "clear_task_params",
        "start_task",
        "stop_task",
        "eng_mgt_func",
    }


def test_engine_refusing_its_config(site: Site, tmp_path: Path) -> None:
    good = site.module("good", GOOD_ENGINE)
    site.dist("etmem_plugin_good", {"goodeng": good})
    d = ObjectStore(EngineRegistry())
    text = "[project]\nname=p\nloop=1\ninterval=1\nsleep=1\n[engine]\nproject=p\nname=goodeng\n"
    with pytest.raises(OptError) as e:
        d.obj_add(conf(tmp_path, "e.conf", text + "engine_private_key=1\n"))
    assert e.value.code is OptCode.OPT_INTER_ERR
    assert e.value.reason == (
        "engine goodeng: fill_eng_params: e.conf: [engine] engine_private_key=1: must be 1024"
    )
    assert d.projects == []


def test_import_error_is_named_and_others_keep_working(site: Site) -> None:
    broken = site.module("broken", "import no_such_module_for_etmem_tests\n")
    good = site.module("good", GOOD_ENGINE)
    site.dist("etmem_plugin_mixed", {"brokeneng": broken, "goodeng": good})
    registry = EngineRegistry()
    for _ in range(2):  # reported again on every request, not cached as dead
        with pytest.raises(OptError) as e:
            registry.get("brokeneng")
        assert e.value.code is OptCode.OPT_INTER_ERR
        assert e.value.reason.startswith("engine 'brokeneng': cannot import it: ")
        assert "no_such_module_for_etmem_tests" in e.value.reason
    assert registry.get("goodeng").plugin is sys.modules[good]
    # fixed on disk: the next request loads it
    (site.root / f"{broken}.py").write_text(GOOD_ENGINE + "\n# fixed\n")
    assert "start_task" in registry.get("brokeneng").implements


def test_engine_raising_at_import(site: Site) -> None:
    boom = site.module("boom", "raise ValueError('vendor library missing')\n")
    leave = site.module("leave", "import sys\nsys.exit(3)\n")
    site.dist("etmem_plugin_boom", {"boomeng": boom, "exiteng": leave})
    with pytest.raises(OptError) as e:
        EngineRegistry().get("boomeng")
    assert e.value.reason == (
        "engine 'boomeng': cannot import it: ValueError: vendor library missing"
    )
    with pytest.raises(OptError) as e:  # not even sys.exit() at import ends the daemon
        EngineRegistry().get("exiteng")
    assert e.value.reason == "engine 'exiteng': cannot import it: SystemExit: 3"


def test_misspelt_hook_fails_validation(site: Site) -> None:
    typo = site.module(
        "typo",
        """\
        from etmem_sdk import hookimpl

        @hookimpl
        def start_task(engine, task):
            pass

        @hookimpl
        def fill_eng_param(engine, config):
            pass
        """,
    )
    site.dist("etmem_plugin_typo", {"typoeng": typo})
    with pytest.raises(OptError) as e:
        EngineRegistry().get("typoeng")
    assert e.value.code is OptCode.OPT_INTER_ERR
    assert e.value.reason.startswith("engine 'typoeng': does not match the engine hookspecs")
    assert "fill_eng_param" in e.value.reason


def test_wrong_hook_arguments_fail_validation(site: Site) -> None:
    bad = site.module(
        "badargs",
        """\
        from etmem_sdk import hookimpl

        @hookimpl
        def start_task(engine, tsk):
            pass
        """,
    )
    site.dist("etmem_plugin_badargs", {"badargs": bad})
    with pytest.raises(OptError) as e:
        EngineRegistry().get("badargs")
    assert "engine 'badargs'" in e.value.reason and "tsk" in e.value.reason


def test_entry_point_naming_an_object(site: Site) -> None:
    mod = site.module("obj", PLUGIN_OBJECT)
    site.dist("etmem_plugin_obj", {"objeng": f"{mod}:PLUGIN"})
    loaded = EngineRegistry().get("objeng")
    assert loaded.plugin is sys.modules[mod].PLUGIN
    assert loaded.implements == {"start_task", "stop_task"}


def test_unknown_engine_uses_c_text_and_late_install_is_found(site: Site) -> None:
    registry = EngineRegistry()
    with pytest.raises(OptError) as e:
        registry.get("lateeng")
    assert e.value.code is OptCode.OPT_INTER_ERR
    assert e.value.reason == "engine lateeng not support"
    site.dist("etmem_plugin_late", {"lateeng": site.module("late", GOOD_ENGINE)})
    assert "eng_mgt_func" in registry.get("lateeng").implements


def test_loaded_engines_are_cached(site: Site) -> None:
    good = site.module("good", GOOD_ENGINE)
    site.dist("etmem_plugin_good", {"goodeng": good})
    registry = EngineRegistry()
    first = registry.get("goodeng")
    assert registry.get("goodeng") is first
    # two managers, one module: each engine has its own PluginManager
    other = EngineRegistry().get("goodeng")
    assert other.pm is not first.pm and other.plugin is first.plugin


def test_duplicate_entry_point_names_are_refused(site: Site) -> None:
    site.dist("etmem_plugin_a", {"twin": site.module("a", GOOD_ENGINE)})
    site.dist("etmem_plugin_b", {"twin": site.module("b", GOOD_ENGINE)})
    with pytest.raises(OptError) as e:
        EngineRegistry().get("twin")
    assert "engine 'twin'" in e.value.reason and "several" in e.value.reason


def test_blocked_and_allowed(site: Site) -> None:
    good = site.module("good", GOOD_ENGINE)
    site.dist("etmem_plugin_good", {"goodeng": good, "othereng": good})
    with pytest.raises(OptError) as e:
        EngineRegistry(blocked={"goodeng"}).get("goodeng")
    assert e.value.code is OptCode.OPT_INTER_ERR
    assert e.value.reason == "engine 'goodeng': blocked by the daemon's configuration"
    assert good not in sys.modules  # refused before import
    with pytest.raises(OptError) as e:
        EngineRegistry(allowed={"othereng"}).get("goodeng")
    assert "not in the daemon's list of allowed engines" in e.value.reason
    assert EngineRegistry(allowed={"othereng"}).get("othereng").plugin is sys.modules[good]


def test_list_engines(site: Site) -> None:
    good = site.module("good", GOOD_ENGINE)
    broken = site.module("broken", "raise ImportError('needs libfoo')\n")
    site.dist("etmem_plugin_good", {"goodeng": good, "brokeneng": broken}, version="2.5")
    registry = EngineRegistry(blocked={"blockedeng"})
    site.dist("etmem_plugin_blocked", {"blockedeng": site.module("blk", GOOD_ENGINE)})

    rows = {r.name: r for r in registry.list_engines(check=False)}
    # the built-in engines are entry points of the etmem distribution like any other
    for builtin in ("slide", "cslide", "thirdparty"):
        assert rows[builtin].distribution == "etmem"
    g = rows["goodeng"]
    assert (g.distribution, g.version, g.ops, g.loads, g.error) == (
        "etmem_plugin_good",
        "2.5",
        (),
        None,
        None,
    )
    assert rows["blockedeng"].error == "blocked"
    assert good not in sys.modules and broken not in sys.modules  # listing imports nothing

    rows = {r.name: r for r in registry.list_engines(check=True)}
    assert rows["goodeng"].loads is True
    assert rows["goodeng"].ops == (
        "fill_eng_params",
        "clear_eng_params",
        "fill_task_params",
        "clear_task_params",
        "start_task",
        "stop_task",
        "eng_mgt_func",
    )
    assert rows["brokeneng"].loads is False
    assert "needs libfoo" in (rows["brokeneng"].error or "")
    assert rows["blockedeng"].loads is False and "blocked" in (rows["blockedeng"].error or "")


def test_register_plugin_injection() -> None:
    class Inline:
        @hookimpl
        def start_task(self, engine, task):
            pass

    registry = EngineRegistry()
    loaded = registry.register_plugin("inline_test_engine", Inline())
    assert registry.get("inline_test_engine") is loaded
    assert loaded.implements == {"start_task"}
    assert "inline_test_engine" in registry.names()
    row = next(r for r in registry.list_engines() if r.name == "inline_test_engine")
    assert row.loads is True and row.ops == ("start_task",)

    class Bad:
        @hookimpl
        def no_such_op(self):
            pass

    with pytest.raises(OptError) as e:
        registry.register_plugin("bad_inline", Bad())
    assert "engine 'bad_inline'" in e.value.reason and "no_such_op" in e.value.reason
    registry.unregister_plugin("inline_test_engine")
    with pytest.raises(OptError) as e:
        registry.get("inline_test_engine")
    assert e.value.reason == "engine inline_test_engine not support"
