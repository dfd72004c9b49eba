"""etmemd.toml: the daemon's own settings (engine allow/block lists, scan defaults) and
``etmemd --config``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from etmem_sdk import ConfigError, scan
from etmemd_proc import EtmemdProc, project_config

from etmem_core import daemon, daemon_settings
from etmem_core.daemon_settings import DaemonSettings, load, parse
from etmem_core.errors import OptError

FULL = """
[engines]
allow = ["slide", "age"]
block = ["thirdparty"]

[scan]
tracker = "refs"
actuator = "pageout"
"""


def test_parse_every_key():
    s = parse(FULL, "/etc/etmem/etmemd.toml")
    assert s == DaemonSettings(
        "/etc/etmem/etmemd.toml",
        frozenset({"slide", "age"}),
        frozenset({"thirdparty"}),
        "refs",
        "pageout",
    )
    assert parse("") == DaemonSettings(daemon_settings.DEFAULT_PATH)
    assert parse("[engines]\n").allowed is None  # no allow list: every engine may load


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nallow=[]\n", "etmemd.toml: unknown table [engine]; known: [engines], [scan]"),
        ("[scan]\ntraker='refs'\n", "etmemd.toml: [scan] traker: unknown key; known: tracker,"),
        ("[engines]\nblock='slide'\n", "etmemd.toml: [engines] block='slide': must be a list of"),
        ("[engines]\nallow=['']\n", "etmemd.toml: [engines] allow=['']: must be a list of engine"),
        ("[scan]\ntracker='psychic'\n", "etmemd.toml: [scan] tracker='psychic': must be one of"),
        ("[scan]\nactuator=1\n", "etmemd.toml: [scan] actuator=1: must be one of swap_pages,"),
        ("engines = 1\n", "etmemd.toml: [engines]: must be a table"),
        ("[scan\n", "etmemd.toml: not valid TOML: "),
    ],
)
def test_parse_refuses_with_file_table_and_key(text, message):
    with pytest.raises(ConfigError) as err:
        parse(text, "/etc/etmem/etmemd.toml")
    assert str(err.value).startswith(message)


def test_load_default_path_is_optional_but_an_explicit_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon_settings, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    assert load() == DaemonSettings()
    with pytest.raises(ConfigError, match="absent.toml: cannot read the daemon settings"):
        load(str(tmp_path / "absent.toml"))
    conf = tmp_path / "etmemd.toml"
    conf.write_text(FULL)
    conf.chmod(0o644)
    monkeypatch.setattr(daemon_settings, "DEFAULT_PATH", str(conf))
    assert load().tracker == "refs"
    conf.chmod(0o664)
    with pytest.raises(ConfigError, match="not be writable by group or others .mode 0664"):
        load(str(conf))
    with pytest.raises(ConfigError, match="must be a regular file"):
        load(str(tmp_path))


def test_registry_enforces_the_lists():
    reg = DaemonSettings(allowed=frozenset({"slide", "cslide"}), blocked=frozenset({"cslide"}))
    registry = reg.registry()
    assert "start_task" in registry.get("slide").implements
    with pytest.raises(OptError, match="engine 'cslide': blocked by the daemon's configuration"):
        registry.get("cslide")
    with pytest.raises(OptError, match="engine 'thirdparty': not in the daemon's list of allowed"):
        registry.get("thirdparty")


def test_scan_defaults_reach_the_sdk():
    before = scan.defaults()
    try:
        DaemonSettings(tracker="refs", actuator="cold").apply_scan_defaults()
        assert (scan.defaults().tracker, scan.defaults().actuator) == ("refs", "cold")
        assert scan.choose_actuator() == "cold"
    finally:
        scan.set_defaults(tracker=before.tracker, actuator=before.actuator)


def test_etmemd_config_option():
    opts = daemon.parse_args(["-s", "x", "-l", "0", "-m", "--config", "/p/etmemd.toml"])
    assert opts.config == "/p/etmemd.toml" and opts.mode_systemctl  # 7 words: ours not counted
    assert daemon.parse_args(["--config=/q.toml", "-s", "x"]).config == "/q.toml"
    assert daemon.parse_args(["-s", "x"]).config is None
    with pytest.raises(daemon.ArgsExit) as err:
        daemon.parse_args(["-s", "x", "-l", "0", "-m", "-m", "--config", "/p"])
    assert err.value.status == daemon.EXIT_ARGS  # the original's limit still holds for the rest


def test_etmemd_refuses_to_start_on_bad_settings(tmp_path):
    conf = tmp_path / "etmemd.toml"
    conf.write_text("[scan]\ntracker = 'psychic'\n")
    etmemd = Path(sys.executable).parent / "etmemd"
    res = subprocess.run(
        [str(etmemd), "-s", f"never-{tmp_path.name}", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == daemon.EXIT_FAIL
    assert "etmemd: etmemd.toml: [scan] tracker='psychic': must be one of" in res.stderr


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_blocked_engine_is_named_and_the_others_keep_working(tmp_path, sleeper):
    conf = tmp_path / "etmemd.toml"
    conf.write_text('[engines]\nblock = ["cslide"]\n')
    d = EtmemdProc(tmp_path, "--config", str(conf))
    try:
        res = d.add("blocked", project_config("p1", "cslide", sleeper), check=False)
        assert res.returncode != 0
        assert "engine 'cslide': blocked by the daemon's configuration" in res.stdout + res.stderr
        d.add("fine", project_config("p2", "slide", sleeper, "T=1\n"))
        show = d.etmem("project", "show").stdout
        assert "p2" in show and "p1" not in show
    finally:
        d.stop()


def test_daemon_table_gives_defaults_for_our_options():
    s = parse(
        '[daemon]\nconf_dir = "/etc/etmem/conf.d"\nstart_projects = true\n'
        'metrics = "127.0.0.1:9743"\n'
    )
    assert (s.conf_dir, s.start_projects, s.metrics) == (
        "/etc/etmem/conf.d",
        True,
        "127.0.0.1:9743",
    )
    assert parse("").conf_dir is None


@pytest.mark.parametrize(
    "text, words",
    [
        ('[daemon]\nconf_dir = ""\n', "conf_dir"),
        ("[daemon]\nmetrics = 9743\n", "metrics"),
        ('[daemon]\nstart_projects = "yes"\n', "true or false"),
        ("[daemon]\nlog_file = '/x'\n", "unknown key"),
    ],
)
def test_daemon_table_refuses_bad_values(text, words):
    with pytest.raises(ConfigError, match=words):
        parse(text)


def test_hook_deadline_from_the_file_the_environment_wins():
    s = parse("[engines]\nhook_deadline = 2.5\n")
    assert s.hook_deadline == 2.5
    assert s.hook_deadline_seconds({}) == 2.5
    assert s.hook_deadline_seconds({"ETMEMD_HOOK_DEADLINE": "1"}) == 1.0  # the env wins
    assert s.hook_deadline_seconds({"ETMEMD_HOOK_DEADLINE": " "}) == 2.5  # blank: not set
    assert parse("[engines]\nhook_deadline = 0\n").hook_deadline_seconds({}) == 0  # none
    assert parse("[engines]\nhook_deadline = 8\n").hook_deadline_seconds({}) == 8
    default = parse("")
    assert default.hook_deadline is None
    assert default.hook_deadline_origin({}) == (daemon_settings.HOOK_DEADLINE, "the default")
    assert s.hook_deadline_origin({}) == (2.5, "etmemd.toml [engines]")
    assert s.hook_deadline_origin({"ETMEMD_HOOK_DEADLINE": "3"}) == (3.0, "ETMEMD_HOOK_DEADLINE")


@pytest.mark.parametrize("value", ["-1", "8.5", "60", "0.05", "'5'", "true", "inf", "nan"])
def test_hook_deadline_out_of_range_is_refused_naming_the_range(value):
    with pytest.raises(ConfigError) as err:
        parse(f"[engines]\nhook_deadline = {value}\n", "/etc/etmem/etmemd.toml")
    assert str(err.value).startswith("etmemd.toml: [engines] hook_deadline=")
    assert "must be a number of seconds, 0 (no deadline) or 0.1 to 8" in str(err.value)


@pytest.mark.parametrize("value", ["abc", "9", "-0.5", "nan", "1e400"])
def test_a_bad_hook_deadline_in_the_environment_is_refused_too(value):
    with pytest.raises(ConfigError, match=r"^ETMEMD_HOOK_DEADLINE='.*': must be a number of sec"):
        DaemonSettings().hook_deadline_seconds({"ETMEMD_HOOK_DEADLINE": value})


def test_etmemd_uses_the_files_hook_deadline_and_refuses_a_bad_one(tmp_path, monkeypatch):
    conf = tmp_path / "etmemd.toml"
    conf.write_text("[engines]\nhook_deadline = 1.5\n")
    conf.chmod(0o644)
    monkeypatch.delenv("ETMEMD_HOOK_DEADLINE", raising=False)
    opts = daemon.parse_args(["-s", "x", "--config", str(conf)])
    opts.settings = load(str(conf))
    assert daemon._make_store(opts).hook_deadline == 1.5
    monkeypatch.setenv("ETMEMD_HOOK_DEADLINE", "0.5")
    assert daemon._make_store(opts).hook_deadline == 0.5
    etmemd = Path(sys.executable).parent / "etmemd"
    for text, env, said in (
        ("[engines]\nhook_deadline = 30\n", {}, "etmemd.toml: [engines] hook_deadline=30: must"),
        ("", {"ETMEMD_HOOK_DEADLINE": "30"}, "ETMEMD_HOOK_DEADLINE='30': must be a number"),
    ):
        conf.write_text(text)
        res = subprocess.run(
            [str(etmemd), "-s", f"never-{tmp_path.name}", "--config", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**{k: v for k, v in os.environ.items() if k != "ETMEMD_HOOK_DEADLINE"}, **env},
        )
        assert res.returncode == daemon.EXIT_FAIL
        assert said in res.stderr, res.stderr
