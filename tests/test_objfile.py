"""etmem_core.objfile: GKeyFile and TOML object files become config sections."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from etmem_sdk import ConfigError, ConfigSection

from etmem_core.keyfile import parse_keyfile
from etmem_core.objfile import (
    ObjectFileSyntaxError,
    load_object_file,
    parse_object_data,
)

# Files handed to the checked loader must be root:root; chown needs root.
needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to root:root needs root"),
]


def _root(fn):
    for mark in needs_root:
        fn = mark(fn)
    return fn


def _install(tmp_path: Path, name: str, data: str | bytes, mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chown(p, 0, 0)
    os.chmod(p, mode)
    return p


def _copy_golden(golden: Path, rel: str, tmp_path: Path) -> Path:
    # The original's test configs are committed 0644, which the daemon refuses; copy and chmod.
    src = golden / "config" / "c-test-conf" / rel
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    os.chown(dst, 0, 0)
    os.chmod(dst, 0o600)
    return dst


# --- the original's test configs and shipped samples ----------------------------------------


@_root
def test_c_test_conf_slide_loads(golden: Path, tmp_path: Path) -> None:
    obj = load_object_file(_copy_golden(golden, "conf_slide/config_file", tmp_path))
    assert [dict(s) for s in obj.projects] == [
        {"name": "test", "scan_type": "page", "loop": "1", "interval": "1", "sleep": "1"}
    ]
    assert [dict(s) for s in obj.engines] == [{"name": "slide", "project": "test"}]
    (task,) = obj.tasks
    assert dict(task) == {
        "project": "test",
        "engine": "slide",
        "name": "background1",
        "type": "name",
        "value": "sshd",
        "max_threads": "10",
        "T": "2",
    }
    assert task.label == "config_file"
    assert task.path == obj.path
    assert (
        task.text == obj.text == (golden / "config/c-test-conf/conf_slide/config_file").read_text()
    )


@_root
@pytest.mark.parametrize(
    "rel, group, count",
    [
        ("conf_cslide/proj.config", "projects", 1),
        ("conf_cslide/eng.config", "engines", 1),
        ("conf_cslide/task.config", "tasks", 1),
    ],
)
def test_c_test_conf_cslide_loads(
    golden: Path, tmp_path: Path, rel: str, group: str, count: int
) -> None:
    obj = load_object_file(_copy_golden(golden, rel, tmp_path))
    assert len(getattr(obj, group)) == count
    assert sum(len(x) for x in (obj.projects, obj.engines, obj.tasks)) == count


def test_eng_config_without_final_newline(golden: Path) -> None:
    src = golden / "config/c-test-conf/conf_cslide/eng.config"
    obj = load_object_file(src, check=False)
    assert obj.engines[0]["node_hot_reserve"] == "119600"


def _sample_cases(golden_dir: Path) -> list[dict]:
    cases = json.loads((golden_dir / "config/cases.json").read_text())["cases"]
    return [c for c in cases if c["name"].startswith(("sample_conf_", "c_test_conf_"))]


def test_shipped_samples_load(golden: Path) -> None:
    samples = _sample_cases(golden)
    assert len(samples) >= 10
    for case in samples:
        obj = parse_object_data(bytes.fromhex(case["text_hex"]), f"/etc/etmem/{case['name']}.yaml")
        expected = {g["name"]: {k["key"]: k["string"] for k in g["keys"]} for g in case["groups"]}
        got = {s.group: dict(s) for s in obj.projects + obj.engines + obj.tasks}
        assert got == expected, case["name"]


@_root
def test_original_file_checks_apply(golden: Path, tmp_path: Path) -> None:
    p = _copy_golden(golden, "conf_slide/config_file", tmp_path)
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="mode 0644") as ei:
        load_object_file(p)
    assert not isinstance(ei.value, ObjectFileSyntaxError)
    assert load_object_file(p, check=False).projects  # the check can be skipped (tests, tools)


def test_missing_file_unchecked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_object_file(tmp_path / "nope.conf", check=False)


# --- GKeyFile semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["name=p\n[project]\n", "[project]\nname=p\nloop 1\n", "[project]\n; c\n", "[]\n", "[p]\n=x\n"],
)
def test_syntax_errors_are_their_own_class(text: str) -> None:
    with pytest.raises(ObjectFileSyntaxError) as ei:
        parse_object_data(text, "/x/bad.conf")
    assert isinstance(ei.value, ConfigError)
    assert str(ei.value).startswith("bad.conf: ")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[foo]\nname=x\n", "[Project]\nname=x"])
def test_no_known_group(text: str) -> None:
    with pytest.raises(ConfigError, match="no group has been parsed") as ei:
        parse_object_data(text, "/x/empty.conf")
    assert not isinstance(ei.value, ObjectFileSyntaxError)


def test_unknown_groups_are_ignored_and_groups_merge() -> None:
    obj = parse_object_data(
        "[task]\nname=t1\ntype=pid\n[other]\nk=v\n[task]\nvalue=1\nname=t2\n", "/x/t.conf"
    )
    assert obj.projects == [] and obj.engines == []
    (task,) = obj.tasks
    assert dict(task) == {"name": "t2", "type": "pid", "value": "1"}


def test_values_are_unescaped_and_stripped() -> None:
    obj = parse_object_data(
        "[project]\nname=a\\sb\nloop=1  \nodd=semi\\;colon\nlead=\\s\\sx\n", "/x/p.conf"
    )
    p = obj.projects[0]
    assert p["name"] == "a b"
    assert p["loop"] == "1"
    assert p["odd"] == "semi\\;colon"  # glib would refuse to read it; kept raw
    assert p["lead"] == "  x"


def test_invalid_utf8_value_is_kept_for_its_check() -> None:
    obj = parse_object_data(b"[project]\nname=\xff\nloop=1\n", "/x/p.conf")
    assert obj.projects[0]["loop"] == "1"
    assert obj.projects[0]["name"] == "\udcff"


# --- TOML ---------------------------------------------------------------------------------------

TOML = """
[project]
name = "web"
loop = 3
interval = "5"
sleep = 1
sysmem_threshold = 50

[[engine]]
name = "slide"

[[engine]]
name = "thirdparty"
eng_name = "my_engine"
libname = "/usr/lib/etmem_fetch/my_engine.so"
ops_name = "my_engine_ops"
private = "with space and \\\\ backslash"

[[task]]
engine = "slide"
name = "nginx"
type = "name"
value = "nginx"
T = 3
swap_flag = true
max_threads = 2

[[task]]
engine = "my_engine"
name = "db"
type = "pid"
value = "1234"
ratio = 0.25
"""


def test_toml_several_engines_and_tasks() -> None:
    obj = parse_object_data(TOML, "/etc/etmem/web.toml")
    (proj,) = obj.projects
    assert dict(proj) == {
        "name": "web",
        "loop": "3",
        "interval": "5",
        "sleep": "1",
        "sysmem_threshold": "50",
    }
    assert [dict(e)["name"] for e in obj.engines] == ["slide", "thirdparty"]
    assert all(e["project"] == "web" for e in obj.engines)
    slide_task, db_task = obj.tasks
    assert dict(slide_task) == {
        "engine": "slide",
        "name": "nginx",
        "type": "name",
        "value": "nginx",
        "T": "3",
        "swap_flag": "yes",
        "max_threads": "2",
        "project": "web",
    }
    assert db_task["ratio"] == "0.25"
    assert db_task["project"] == "web"


def test_toml_labels_say_which_engine_and_task() -> None:
    obj = parse_object_data(TOML, "/etc/etmem/web.toml")
    assert obj.projects[0].where("loop") == "web.toml: [project] loop=3"
    assert obj.engines[1].where("eng_name") == "web.toml: engine #2: [engine] eng_name=my_engine"
    assert obj.tasks[0].where("T") == "web.toml: task #1: [task] T=3"
    assert obj.tasks[0].path == "/etc/etmem/web.toml"
    assert obj.text == TOML


def test_toml_sections_render_as_keyfiles_with_one_of_each_group() -> None:
    obj = parse_object_data(TOML, "/etc/etmem/web.toml")
    kf = parse_keyfile(obj.tasks[1].text)
    assert kf.groups() == ["project", "engine", "task"]
    assert kf.items("engine")["eng_name"] == "my_engine"
    assert kf.get_string("engine", "private") == "with space and \\ backslash"
    assert kf.items("task")["name"] == "db"
    kf = parse_keyfile(obj.engines[0].text)
    assert kf.groups() == ["project", "engine"]
    assert kf.items("engine") == {"name": "slide", "project": "web"}


def test_toml_single_engine_is_filled_into_tasks() -> None:
    text = (
        '[project]\nname = "p"\n[[engine]]\nname = "thirdparty"\neng_name = "e1"\n'
        '[[task]]\nname = "t"\n[[task]]\nname = "u"\nengine = "other"\n'
    )
    obj = parse_object_data(text, "/x/p.toml")
    assert obj.tasks[0]["engine"] == "e1"  # thirdparty: identity is eng_name
    assert obj.tasks[1]["engine"] == "other"


def test_toml_explicit_project_is_kept() -> None:
    obj = parse_object_data('[[engine]]\nname = "slide"\nproject = "elsewhere"\n', "/x/e.toml")
    assert obj.projects == []
    assert obj.engines[0]["project"] == "elsewhere"


def test_toml_engine_without_project_anywhere_stays_without() -> None:
    obj = parse_object_data('[[engine]]\nname = "slide"\n', "/x/e.toml")
    assert "project" not in obj.engines[0]


def test_toml_single_table_engine_accepted() -> None:
    obj = parse_object_data('[project]\nname = "p"\n[engine]\nname = "slide"\n', "/x/p.toml")
    assert obj.engines[0]["name"] == "slide"


def test_toml_syntax_error() -> None:
    with pytest.raises(ObjectFileSyntaxError, match=r"^bad.toml: "):
        parse_object_data("[project\nname = 1\n", "/x/bad.toml")
    with pytest.raises(ObjectFileSyntaxError):
        parse_object_data(b'[project]\nname = "\xff"\n', "/x/bad.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[project]\nname = ["a"]\n', r"p.toml: \[project\] name: must be a string, .* not list"),
        ("[project]\nname = 1979-05-27\n", r"\[project\] name: must be .* not date"),
        ('[[task]]\nname = "t"\nx = {a = 1}\n', r"\[task #1\] x: must be .* not dict"),
        ('[[engines]]\nname = "slide"\n', r"unknown top-level key engines"),
        ('project = "p"\n', r"\[project\] must be a table"),
        ('engine = "slide"\n', r"engine must be an array of tables"),
        ('[project]\n"a=b" = 1\n', r"'a=b': not a usable key name"),
        ("", r"no group has been parsed"),
    ],
)
def test_toml_rejections(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as ei:
        parse_object_data(text, "/x/p.toml")
    assert not isinstance(ei.value, ObjectFileSyntaxError)


@pytest.mark.parametrize("group", ["task", "engine"])
def test_toml_with_more_tables_than_a_file_may_hold_is_refused_naming_the_limit(
    group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from etmem_core import objfile

    monkeypatch.setattr(objfile, "MAX_TABLES", 3)
    one = f'[[{group}]]\nname = "x"\n'
    assert len(getattr(parse_object_data(one * 3, "/x/p.toml"), group + "s")) == 3
    with pytest.raises(ConfigError, match=rf"^p.toml: 4 \[\[{group}\]\] tables; .* at most 3 "):
        parse_object_data(one * 4, "/x/p.toml")


def test_toml_tasks_show_their_keyfile_text_when_read() -> None:
    # the text is rendered lazily; what it says must not depend on when it is read
    obj = parse_object_data(
        '[project]\nname = "p"\nloop = 1\n[[engine]]\nname = "slide"\n'
        '[[task]]\nname = "a b"\nT = 2\n',
        "/x/p.toml",
    )
    [task] = obj.tasks
    assert task.text == (
        "[project]\nname=p\nloop=1\n\n[engine]\nname=slide\nproject=p\n\n"
        "[task]\nname=a b\nT=2\nproject=p\nengine=slide\n"
    )
    assert parse_keyfile(task.text).get_string("task", "name") == "a b"


def test_toml_tasks_are_config_sections_like_any_other() -> None:
    # a TOML task is built without ConfigSection.__init__ (10^5 of them): it must still have
    # everything that sets, and answer like a section made from the same items
    obj = parse_object_data(TOML, "/etc/etmem/web.toml")
    task = obj.tasks[1]
    plain = ConfigSection("task", dict(task), path=task.path, text="x", label=task.label)
    assert set(vars(plain)) - {"text"} <= set(vars(task))
    assert (task.group, task.path, task.label) == (plain.group, plain.path, plain.label)
    assert (
        dict(task) == dict(plain)
        and len(task) == len(plain)
        and task.where("T") == plain.where("T")
    )
    assert all(task.get(k) == plain.get(k) and (k in task) for k in plain)
    # a table's values are converted in place, each once, whatever its position
    obj = parse_object_data(
        '[[engine]]\nname = "e"\n'
        + "".join(f'[[task]]\nname = "t{i}"\nT = {i}\nok = true\nf = 0.5\n' for i in range(3)),
        "/x/p.toml",
    )
    assert [dict(t) for t in obj.tasks] == [
        {"name": f"t{i}", "T": str(i), "ok": "yes", "f": "0.5", "engine": "e"} for i in range(3)
    ]
    with pytest.raises(ConfigError, match=r"^p.toml: \[task #3\] T: must be a string, integer"):
        parse_object_data("[[task]]\nT = 1\n[[task]]\nT = 2\n[[task]]\nT = [3]\n", "/x/p.toml")


@_root
def test_toml_file_loads_through_checks(tmp_path: Path) -> None:
    p = _install(tmp_path, "web.toml", TOML)
    obj = load_object_file(p)
    assert len(obj.engines) == 2 and len(obj.tasks) == 2
    os.chmod(p, 0o666)
    with pytest.raises(ConfigError, match="mode 0666"):
        load_object_file(p)


def test_syntax_error_names_the_line_but_never_echoes_it(tmp_path):
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    path = tmp_path / "id_ed25519"
    path.write_text(secret)
    with pytest.raises(ObjectFileSyntaxError) as e:
        load_object_file(str(path), check=False)
    msg = str(e.value)
    assert msg.startswith("id_ed25519: not a valid object file: line 1:")
    assert "OPENSSH" not in msg and "b3Bl" not in msg
