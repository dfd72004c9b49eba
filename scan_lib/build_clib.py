"""setuptools build step: compile libetmemd_scan.so into the wheel, with its public headers.

``pyproject.toml`` names these classes in ``[tool.setuptools.cmdclass]``, so no setup.py is
needed. ``build_py`` copies the Python packages as usual, then compiles ``scan_lib/c`` (the same
flags as ``scan_lib/Makefile``) into ``etmem_scan/lib/`` and copies ``scan_lib/include/*.h`` into
``etmem_scan/include/`` of the build tree; ``etmem_scan.clib`` finds them there once installed.
An editable install skips this: there ``scripts/setup`` runs ``make -C scan_lib`` and the loader
uses the checkout's ``scan_lib/build``.

The wheel then holds a native library, so ``bdist_wheel`` tags it for this platform (any Python 3:
the library does not use the Python C API).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools.command.build_py import build_py as _build_py

try:  # setuptools >= 70.1 has its own; older ones use the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "c" / "etmemd_scan.c"]
VERSION_SCRIPT = HERE / "c" / "etmemd_scan.version"
INCLUDE = HERE / "include"
LIB_NAME = "libetmemd_scan.so"


def compile_scan_lib(out: Path) -> None:
    """Compile libetmemd_scan.so to ``out`` with ``$CC`` (default ``cc``) and ``$CFLAGS``."""
    cc = shlex.split(os.environ.get("CC", "cc"))
    cflags = shlex.split(os.environ.get("CFLAGS", "-O2 -g"))
    if shutil.which(cc[0]) is None:
        raise RuntimeError(
            f"etmem's wheel compiles {LIB_NAME} from C, and no C compiler {cc[0]!r} was found: "
            "install gcc (or set CC)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*cc, *cflags, "-Wall", "-Wextra", "-std=gnu11", "-fPIC", "-shared", f"-I{INCLUDE}"]
    cmd += [f"-Wl,-soname,{LIB_NAME}", f"-Wl,--version-script={VERSION_SCRIPT}"]
    cmd += ["-o", str(out), *map(str, SOURCES)]
    subprocess.run(cmd, check=True)


class build_py(_build_py):  # noqa: N801 -- setuptools looks the command up by this name
    """Build the packages, then add the C library and headers to ``etmem_scan``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        pkg = Path(self.build_lib) / "etmem_scan"
        compile_scan_lib(pkg / "lib" / LIB_NAME)
        (pkg / "include").mkdir(parents=True, exist_ok=True)
        for header in sorted(INCLUDE.glob("*.h")):
            shutil.copy2(header, pkg / "include" / header.name)


class bdist_wheel(_bdist_wheel):  # noqa: N801
    """A platform wheel (it carries a native library), for any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat
