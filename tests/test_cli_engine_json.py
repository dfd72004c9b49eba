"""``etmem engine showstats --json``: an engine's and its tasks' statistics as JSON."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from etmemd_proc import EtmemdProc, project_config

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("object files must be owned by root: run as root")
    target = subprocess.Popen(["sleep", "300"])
    d = EtmemdProc(tmp_path)
    try:
        d.add("a", project_config("a", "slide", target.pid, "T=1\n"))
        yield d
    finally:
        d.stop()
        target.kill()
        target.wait()


def test_showstats_json_has_the_engine_and_its_tasks(daemon):
    for args in (
        ("engine", "showstats", "-n", "a", "-e", "slide", "--json"),
        ("engine", "showstats", "--json", "-n", "a", "-e", "slide", "-t", "t"),
    ):
        doc = json.loads(daemon.etmem(*args).stdout)
        assert doc["project"] == "a" and doc["engine"] == "slide"
        assert [t["name"] for t in doc["tasks"]] == ["t"]
        assert isinstance(doc["tasks"][0]["stats"], dict)


def test_showstats_json_of_an_unknown_engine_or_task_fails_with_a_message(daemon):
    res = daemon.etmem("engine", "showstats", "-n", "a", "-e", "nosuch", "--json", check=False)
    assert res.returncode != 0 and "engine nosuch does not exist" in res.stderr
    res = daemon.etmem(
        "engine", "showstats", "-n", "a", "-e", "slide", "-t", "x", "--json", check=False
    )
    assert res.returncode != 0 and "task x does not exist" in res.stderr


def test_json_goes_with_showstats_only(daemon):
    res = daemon.etmem("engine", "other", "-n", "a", "-e", "slide", "--json", check=False)
    assert res.returncode != 0 and "showstats" in res.stderr
