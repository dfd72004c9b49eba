"""The thirdparty engine under hostile input and hostile policies: refusals with reasons,
descriptors released, hung or dying isolated policies bounded by their deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from etmem_sdk import ConfigError
from etmem_thirdparty_so import loader
from test_thirdparty import Host, hooks, libs  # noqa: F401 - fixtures
from thirdparty_build import compile_policy

pytestmark = pytest.mark.root


def _fds_on(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


@pytest.fixture
def host(hooks, tmp_path):  # noqa: F811
    h = Host(hooks, tmp_path)
    yield h
    for eng in list(h.project.engines):
        h.del_engine(eng)


def test_a_policy_file_descriptor_goes_with_its_last_engine(host, tmp_path):
    lib = compile_policy("my_engine.c", tmp_path / "libfd.so")
    one = host.add_engine(lib, "my_engine_ops", "one", extra="engine_private_key=1024\n")
    two = host.add_engine(lib, "my_engine_ops", "two", extra="engine_private_key=1024\n")
    assert _fds_on(lib) == 1  # one pinned fd per file, whatever the number of engines
    host.del_engine(one)
    assert _fds_on(lib) == 1  # still in use by "two"
    host.del_engine(two)
    assert _fds_on(lib) == 0
    again = host.add_engine(lib, "my_engine_ops", "again", extra="engine_private_key=1024\n")
    assert host.mgt(again, "my_cmd") == "msg to client\n"


def test_a_nul_byte_in_libname_is_a_reason_not_a_traceback():
    with pytest.raises(ConfigError, match="must not contain a NUL byte"):
        loader.check_library("/usr/lib/a\0b.so")


def test_non_utf8_bytes_in_an_object_file_reach_glib_as_they_were():
    from etmem_thirdparty_so import glib

    from etmem_core.objfile import parse_object_data

    raw = b"[engine]\n# caf\xe9 au lait\nname=thirdparty\nkey=v\xff\n"
    obj = parse_object_data(raw, "/x/obj.conf")
    with glib.keyfile(obj.engines[0].text) as handle:
        assert glib.get_string(handle, "engine", "name") == "thirdparty"
