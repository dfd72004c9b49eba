"""``pip install etmem``, then ``pip install etmem-plugin-age``: ``[engine] name=age`` just works.

A FRESH virtual environment (no system site packages, nothing from the development venv) gets the
project from a copy of this checkout and then the example distribution from its folder; its own
``etmemd`` runs the age policy on a live workload with swap on, and its ``etmem`` sees the
statistics change and the workload's cold memory move to swap. A throw-away distribution whose
engine raises at import sits on the daemon's PYTHONPATH: ``etmem plugins --check`` lists it with
the error, and a config naming it fails with that error while a slide project in the same daemon
keeps running.

Teardown order is fixed by the fixture: etmemd stopped, workloads killed, then swapoff.
The example's own test suite (written with the SDK fixtures) runs here too, from the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etmem_scan import procfs
from etmem_sdk.testing import Workload, spawn_workload, swap_on
from etmemd_proc import EtmemdProc, project_config, throwaway_dist, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "etmem-plugin-age"
COLD_MIB = 64
DEADLINE = 60.0  # seconds for the policy to act (cycles are ~1 s)


def _copy_checkout(dest: Path) -> Path:
    """The working tree without virtual environments, git data or build leftovers (pip builds
    in the source tree; a copy keeps the checkout clean while others work in it)."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "build", "dist", "*.egg-info", ".*_cache", "*.qcow2"
        ),
    )
    return dest


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with etmem and etmem-plugin-age pip-installed (not editable); its bin/."""
    base = tmp_path_factory.mktemp("ecosystem")
    src = _copy_checkout(base / "etmem-src")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def install(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*pip, *args], capture_output=True, text=True, env=env, timeout=900)

    # Fast path: build with the venv's own setuptools (plus wheel) instead of fetching a build
    # environment for each of the two builds; fall back to pip's isolated build if that fails.
    fast = install("wheel").returncode == 0
    for what in (src, src / "examples" / "etmem-plugin-age"):
        res = install("--no-build-isolation", str(what)) if fast else None
        if res is None or res.returncode != 0:
            res = install(str(what))
        assert res.returncode == 0, f"pip install {what} failed:\n{res.stdout}\n{res.stderr}"
    return venv / "bin"


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH directory holding engine ``broken``, whose module raises at import."""
    site = tmp_path_factory.mktemp("broken-site")
    throwaway_dist(
        site,
        "etmem-plugin-broken",
        "0.3",
        "etmem_plugin_broken",
        "raise RuntimeError('this engine is broken on purpose')\n",
        "broken",
    )
    return site


def venv_env(broken_site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(broken_site)
    return env


@dataclass
class Rig:
    daemon: EtmemdProc
    target: Workload  # for age
    other: Workload  # for slide


@pytest.fixture(scope="module")
def rig(venv_bin: Path, broken_site: Path, tmp_path_factory) -> Iterator[Rig]:
    """Swap on, two workloads, and the fresh venv's etmemd; torn down etmemd -> workloads ->
    swap, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root (swapon, process_madvise on another process)")
    work = tmp_path_factory.mktemp("etmemd")
    with swap_on(512), spawn_workload(8, COLD_MIB) as target, spawn_workload(2, 8) as other:
        d = EtmemdProc(work, bindir=venv_bin, env=venv_env(broken_site))
        try:
            yield Rig(d, target, other)
        finally:
            d.stop()
            target.kill()
            other.kill()


def age_totals(d: EtmemdProc, project: str) -> dict[str, int]:
    """The ``total:`` line of ``etmem engine showstats -e age`` as numbers."""
    out = d.etmem("engine", "showstats", "-n", project, "-e", "age").stdout
    line = next(x for x in out.splitlines() if x.startswith("total:"))
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", line)}


def task_stats(d: EtmemdProc, project: str) -> dict:
    doc = json.loads(d.etmem("project", "show", "-n", project, "--json").stdout)
    return doc[0]["engines"][0]["tasks"][0]["stats"]


@pytest.mark.slow
def test_fresh_venv_holds_its_own_install(venv_bin: Path, broken_site: Path) -> None:
    where = subprocess.run(
        [str(venv_bin / "python"), "-c", "import etmem_sdk, etmem_plugin_age, sys; "
         "print(etmem_sdk.__file__); print(etmem_plugin_age.__file__); print(sys.flags.no_site)"],
        capture_output=True, text=True, check=True, env=venv_env(broken_site),
    ).stdout.split()  # fmt: skip
    venv = str(venv_bin.parent)
    assert where[0].startswith(venv) and where[1].startswith(venv), where  # not the checkout's


@pytest.mark.slow
def test_etmem_plugins_lists_age_and_the_broken_engine(venv_bin: Path, broken_site: Path) -> None:
    res = subprocess.run(
        [str(venv_bin / "etmem"), "plugins", "--check", "--json"],
        capture_output=True,
        text=True,
        env=venv_env(broken_site),
        timeout=60,
    )
    assert res.returncode == 1, res.stderr  # one engine does not load
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["age"]["distribution"] == "etmem-plugin-age"
    assert rows["age"]["version"] == "0.1.0" and rows["age"]["loads"] is True
    assert {"start_task", "stop_task", "eng_mgt_func"} <= set(rows["age"]["ops"])
    assert rows["broken"]["loads"] is False
    assert rows["broken"]["error"] == (
        "engine 'broken': cannot import it: RuntimeError: this engine is broken on purpose"
    )
    assert rows["slide"]["loads"] is True


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.swap
def test_age_policy_moves_cold_memory_under_etmemd(rig: Rig) -> None:
    d, w = rig.daemon, rig.target
    cold_kb = COLD_MIB << 10
    assert procfs.read_status(w.pid).get("VmSwap", 0) < cold_kb // 10
    d.add("age", project_config("aged", "age", w.pid, "idle_cycles=2\nmax_mib=1024\n"))
    d.etmem("project", "start", "-n", "aged")
    assert wait_for(lambda: age_totals(d, "aged")["cycles"] >= 1, DEADLINE), d.logtext()
    first = age_totals(d, "aged")

    assert wait_for(
        lambda: procfs.read_status(w.pid).get("VmSwap", 0) >= cold_kb * 9 // 10, DEADLINE
    ), f"VmSwap {procfs.read_status(w.pid).get('VmSwap')} kB\n{d.logtext()}"
    later = age_totals(d, "aged")
    assert later["cycles"] > first["cycles"]
    assert later["paged_out_pages"] * 4 >= cold_kb * 9 // 10 and later["errors"] == 0
    stats = task_stats(d, "aged")  # the same numbers through project show --json
    assert stats["actuator"] == "pageout" and stats["paged_out_pages"] >= later["paged_out_pages"]
    d.etmem("project", "stop", "-n", "aged")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.swap
def test_broken_engine_fails_while_slide_keeps_running(rig: Rig) -> None:
    d = rig.daemon
    d.add("slidep", project_config("slidep", "slide", rig.other.pid, "T=1\n"))
    d.etmem("project", "start", "-n", "slidep")
    assert wait_for(lambda: task_stats(d, "slidep")["cycles"] >= 1, DEADLINE), d.logtext()

    res = d.add("broken", project_config("brokenp", "broken", rig.other.pid), check=False)
    assert res.returncode != 0
    assert (
        "engine 'broken': cannot import it: RuntimeError: this engine is broken on purpose"
        in res.stdout + res.stderr
    )
    assert "brokenp" not in d.etmem("project", "show").stdout  # obj add is all or nothing
    before = task_stats(d, "slidep")["cycles"]
    assert wait_for(lambda: task_stats(d, "slidep")["cycles"] > before, DEADLINE), d.logtext()
    assert d.proc.poll() is None


def test_the_example_suite_passes_with_the_sdk_fixtures() -> None:
    """The example distribution's own tests (fake tree and live child), from the checkout; not
    slow, so the policy is tested wherever the fast suite runs."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
