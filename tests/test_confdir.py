"""``etmemd --conf-dir``: object files added (and optionally started) at start-up, SIGHUP reload."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from etmem_sdk import hookimpl
from etmemd_proc import EtmemdProc, wait_for

from etmem_core.confdir import ConfDir
from etmem_core.errors import OptError
from etmem_core.lifecycle import ObjectStore
from etmem_core.registry import EngineRegistry


class Starts:
    """An engine that only records which tasks were started and stopped."""

    def __init__(self) -> None:
        self.started: list[str] = []

    @hookimpl
    def start_task(self, engine, task):
        self.started.append(task.name)

    @hookimpl
    def stop_task(self, engine, task):
        self.started.remove(task.name)


@pytest.fixture
def eng() -> Starts:
    return Starts()


@pytest.fixture
def store(eng: Starts) -> Any:
    registry = EngineRegistry()
    registry.register_plugin("starts", eng)
    d = ObjectStore(registry)
    yield d
    d.shutdown()


def obj(project: str, task: str = "t", pid: int = 1) -> str:
    return (
        f"[project]\nname={project}\nloop=1\ninterval=1\nsleep=1\n"
        f"[engine]\nname=starts\nproject={project}\n"
        f"[task]\nproject={project}\nengine=starts\nname={task}\ntype=pid\nvalue={pid}\n"
    )


def put(d: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = d / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.fixture
def confd(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("object files must be owned by root: run as root")
    d = tmp_path / "conf.d"
    d.mkdir()
    return d


def test_every_good_file_is_added_and_a_bad_one_is_skipped_with_obj_adds_reason(store, confd):
    put(confd, "10-a.conf", obj("a"))
    bad = put(confd, "20-bad.conf", obj("bad"), mode=0o644)
    put(confd, "30-c.conf", obj("c"))
    put(confd, ".hidden", "garbage")
    put(confd, "40-a.conf~", "garbage")
    with pytest.raises(OptError) as direct:
        store.obj_add(str(bad))
    cd = ConfDir(store, str(confd))
    try:
        report = cd.load()
    finally:
        cd.close()
    assert report.added == ["10-a.conf", "30-c.conf"]
    assert report.failed == {"20-bad.conf": direct.value.reason}
    assert store.find_project("a") and store.find_project("c")
    assert store.find_project("bad") is None
    assert not store.find_project("a").start  # not asked to start


def test_start_starts_the_projects_it_added(store, eng, confd):
    put(confd, "a.conf", obj("a", "ta"))
    cd = ConfDir(store, str(confd), start=True)
    try:
        assert cd.load().added == ["a.conf"]
    finally:
        cd.close()
    assert store.find_project("a").start
    assert eng.started == ["ta"]


def test_reload_adds_new_deletes_gone_and_replaces_changed_files(store, eng, confd):
    put(confd, "a.conf", obj("a", "ta"))
    put(confd, "b.conf", obj("b", "tb"))
    cd = ConfDir(store, str(confd), start=True)
    try:
        cd.load()
        (confd / "a.conf").unlink()
        put(confd, "b.conf", obj("b", "tb2"))
        put(confd, "c.conf", obj("c", "tc"))
        report = cd.load()
        assert sorted(report.deleted) == ["a.conf", "b.conf"]
        assert report.added == ["b.conf", "c.conf"]
        assert store.find_project("a") is None
        assert sorted(eng.started) == ["tb2", "tc"]
        again = cd.load()  # nothing changed: nothing is touched
        assert again.added == again.deleted == [] and again.failed == {}
    finally:
        cd.close()


def test_runtime_objects_are_not_the_directorys(store, confd, tmp_path):
    other = put(tmp_path, "manual.conf", obj("manual"))
    store.obj_add(str(other))
    put(confd, "a.conf", obj("a"))
    cd = ConfDir(store, str(confd))
    try:
        cd.load()
        (confd / "a.conf").unlink()
        cd.load()
    finally:
        cd.close()
    assert store.find_project("manual") is not None
    assert store.find_project("a") is None


@pytest.mark.root
def test_etmemd_adds_the_directory_at_start_up_and_reloads_on_sighup(confd, tmp_path):
    target = subprocess.Popen(["sleep", "300"])
    cfg = (
        "[project]\nname={p}\nloop=1\ninterval=1\nsleep=1\n"
        "[engine]\nname=slide\nproject={p}\n"
        f"[task]\nproject={{p}}\nengine=slide\nname=t\ntype=pid\nvalue={target.pid}\nT=1\n"
    )
    put(confd, "a.conf", cfg.format(p="a"))
    put(confd, "bad.conf", cfg.format(p="bad"), mode=0o644)
    log = tmp_path / "etmemd.log"
    d = EtmemdProc(tmp_path, "--conf-dir", str(confd), "--log-file", str(log))
    try:
        shown = d.etmem("project", "show").stdout
        assert "a" in shown.split() and "bad" not in shown.split()
        text = log.read_text()
        assert f"conf dir: {confd}/bad.conf skipped:" in text
        put(confd, "b.conf", cfg.format(p="b"))
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "b" in d.etmem("project", "show").stdout.split(), 20)
        assert d.proc.poll() is None  # SIGHUP reloads, it does not end etmemd
    finally:
        d.stop()
        target.kill()
        target.wait()


@pytest.mark.root
def test_conf_dir_can_come_from_etmemd_toml(confd, tmp_path):
    target = subprocess.Popen(["sleep", "300"])
    put(
        confd,
        "a.conf",
        "[project]\nname=a\nloop=1\ninterval=1\nsleep=1\n[engine]\nname=slide\nproject=a\n"
        f"[task]\nproject=a\nengine=slide\nname=t\ntype=pid\nvalue={target.pid}\nT=1\n",
    )
    settings = put(tmp_path, "etmemd.toml", f'[daemon]\nconf_dir = "{confd}"\n', mode=0o644)
    d = EtmemdProc(tmp_path, "--config", str(settings))
    try:
        assert "a" in d.etmem("project", "show").stdout.split()
    finally:
        d.stop()
        target.kill()
        target.wait()
