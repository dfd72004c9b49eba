"""The ctypes mirrors agree with the shipped C headers, field by field (compiled with gcc)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest
from etmem_sdk import clib
from etmem_thirdparty_so import abi

INCLUDE = clib.include_dir()

#: sizes the original etmemd has on x86_64 (its etmemd_*.h and etmemd_scan_exp.h headers)
ORIGINAL_SIZES = {
    "engine": 80,
    "task": 88,
    "project": 56,
    "task_pid": 32,
    "engine_ops": 72,
    "vma": 320,
    "vmas": 16,
    "page_refs": 24,
    "page_scan": 12,
    "region_scan": 40,
}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, int]:
    """sizeof/offsetof of every mirrored struct and field, printed by a C program."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to check the ABI")
    lines = []
    for cname, struct in abi.STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        for field, *_ in struct._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof(struct {cname}, {field}));')
    source = (
        "#include <stddef.h>\n#include <stdio.h>\n"
        '#include "etmemd_thirdparty_export.h"\n#include "etmemd_scan_export.h"\n'
        "int main(void)\n{\n" + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    tmp = tmp_path_factory.mktemp("abi")
    (tmp / "layout.c").write_text(source)
    subprocess.run(
        [
            "gcc",
            "-Wall",
            "-Werror",
            f"-I{INCLUDE}",
            "-o",
            str(tmp / "layout"),
            str(tmp / "layout.c"),
        ],
        check=True,
    )
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_struct_matches_header(c_layout, cname):
    struct = abi.STRUCTS[cname]
    assert ctypes.sizeof(struct) == c_layout[cname]
    for field, *_ in struct._fields_:
        assert getattr(struct, field).offset == c_layout[f"{cname}.{field}"], field


@pytest.mark.parametrize(("cname", "size"), sorted(ORIGINAL_SIZES.items()))
def test_sizes_are_the_originals(c_layout, cname, size):
    assert c_layout[cname] == size
    assert ctypes.sizeof(abi.STRUCTS[cname]) == size


def test_known_offsets_from_the_reference():
    # a few offsets the reference lists explicitly, so a shifted header cannot pass alone
    assert abi.CEngine.handler.offset == 72
    assert abi.CEngine.proj.offset == 24
    assert abi.CTask.params.offset == 48
    assert abi.CTask.next.offset == 80
    assert abi.CProject.engs.offset == 40
    assert abi.CProject.wmark_set.offset == 37
    assert abi.CTaskPid.tk.offset == 16
    assert abi.CVma.path.offset == 40
    assert abi.CVma.next.offset == 312
    assert abi.CEngineOps.eng_mgt_func.offset == 64


def test_engine_ops_order_is_the_hookspec_order():
    from etmem_sdk import ENGINE_OPS

    assert tuple(name for name, _ in abi.CEngineOps._fields_) == ENGINE_OPS
