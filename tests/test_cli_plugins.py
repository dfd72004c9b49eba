"""``etmem plugins``: every engine of the etmem.engines group, its distribution, version, ops, and
whether it loads -- built-in ones and throw-away distributions on a PYTHONPATH directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from etmemd_proc import throwaway_dist

from etmem_core.cli import plugins as cli_plugins
from etmem_core.registry import EngineInfo

BIN = Path(sys.executable).parent

GOOD = """
from etmem_sdk import hookimpl

@hookimpl
def start_task(engine, task):
    pass

@hookimpl
def stop_task(engine, task):
    pass
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    throwaway_dist(site, "etmem-good-engine", "2.0", "good_engine_mod", GOOD, "good")
    throwaway_dist(
        site,
        "etmem-broken-engine",
        "1.0",
        "broken_engine_mod",
        "raise RuntimeError('broken on purpose')\n",
        "broken",
    )
    return site


def etmem_plugins(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [str(BIN / "etmem"), "plugins", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isalnum()}


def test_check_lists_a_broken_engine_with_its_error(site: Path) -> None:
    res = etmem_plugins(site, "--check")
    assert res.returncode == cli_plugins.EXIT_BROKEN, res.stderr
    table = rows(res.stdout)
    assert table["good"] == ["good", "etmem-good-engine", "2.0", "yes", "start_task,stop_task"]
    assert table["broken"][:5] == ["broken", "etmem-broken-engine", "1.0", "no", "-"]
    assert table["slide"][1:5] == ["etmem", "0.1.0", "yes", "all"]
    lines = res.stdout.splitlines()
    after = lines[lines.index(next(x for x in lines if x.startswith("broken"))) + 1]
    assert after == ("  error: engine 'broken': cannot import it: RuntimeError: broken on purpose")
    assert "Traceback" not in res.stderr and res.stderr == ""


def test_without_check_nothing_is_imported(site: Path) -> None:
    res = etmem_plugins(site)
    assert res.returncode == 0, res.stderr
    table = rows(res.stdout)
    assert table["broken"][:4] == ["broken", "etmem-broken-engine", "1.0", "?"]
    assert "error" not in res.stdout


def test_json(site: Path) -> None:
    res = etmem_plugins(site, "--check", "--json")
    assert res.returncode == cli_plugins.EXIT_BROKEN
    doc = {r["name"]: r for r in json.loads(res.stdout)}
    assert doc["good"] == {
        "name": "good",
        "distribution": "etmem-good-engine",
        "version": "2.0",
        "ops": ["start_task", "stop_task"],
        "loads": True,
        "error": None,
    }
    assert doc["broken"]["loads"] is False and "broken on purpose" in doc["broken"]["error"]
    assert {"slide", "cslide", "thirdparty"} <= set(doc)


def test_daemon_settings_block_list_applies(site: Path, tmp_path: Path) -> None:
    conf = tmp_path / "etmemd.toml"
    conf.write_text('[engines]\nblock = ["good", "broken"]\n')
    res = etmem_plugins(site, "--check", "--json", "--config", str(conf))
    doc = {r["name"]: r for r in json.loads(res.stdout)}
    assert doc["good"]["loads"] is False
    assert doc["good"]["error"] == "engine 'good': blocked by the daemon's configuration"
    assert doc["slide"]["loads"] is True

    conf.write_text('[engines]\nblok = ["good"]\n')
    res = etmem_plugins(site, "--config", str(conf))
    assert res.returncode == cli_plugins.EXIT_SETTINGS
    assert res.stderr == (
        "etmem: etmemd.toml: [engines] blok: unknown key; known: allow, block, hook_deadline\n"
    )


def test_text_format_without_engines_and_partial_ops() -> None:
    assert "no engines installed" in cli_plugins.format_text([], True)
    text = cli_plugins.format_text(
        [EngineInfo("x", None, None, ("start_task",), True, None)], checked=True
    )
    assert text.splitlines()[1].split() == ["x", "?", "?", "yes", "start_task"]
