"""The wheel is complete: built from a fresh copy of the tree, installed into a fresh venv.

``pip wheel .`` in a copy of the checkout (what ``git clone`` gives), the wheel installed into a
new virtual environment (no editable install, no checkout on the path). That venv's
``python -m etmem_scan.clib`` prints the flags a vendor compiles a C policy with; the policy is
compiled against them, linked with the wheel's ``libetmemd_scan.so``, and run by that venv's
``etmemd``. One wheel build per session (the ``wheel_venv`` fixture), shared by every test here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from etmemd_proc import EtmemdProc

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "tests" / "thirdparty_c" / "scan_engine.c"

pytestmark = pytest.mark.slow


def tree_files(root: Path) -> list[str]:
    """The files a clone of ``root`` holds (tracked plus new, not ignored), relative to it."""
    res = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"not a git checkout ({res.stderr.decode().strip()}): cannot tell a clone")
    return [f for f in res.stdout.decode().split("\0") if f and (root / f).is_file()]


def copy_tree(dest: Path) -> Path:
    """A copy of what a clone of this checkout holds (uncommitted edits included)."""
    for rel in tree_files(ROOT):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return dest


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .`` of a fresh copy of the tree: the path of the etmem wheel."""
    base = tmp_path_factory.mktemp("wheel")
    src = copy_tree(base / "clone")
    out = base / "dist"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert res.returncode == 0, f"pip wheel failed:\n{res.stdout}\n{res.stderr}"
    (found,) = out.glob("etmem-*.whl")
    return found


@pytest.fixture(scope="session")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only the wheel (and its dependencies) installed: its bin/."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert res.returncode == 0, f"pip install of the wheel failed:\n{res.stdout}\n{res.stderr}"
    return venv / "bin"


def test_the_wheel_holds_the_c_library_and_headers(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("etmem_scan/lib/libetmemd_scan.so") for n in names), names
    for header in ("etmemd_thirdparty_export.h", "etmemd_scan_export.h"):
        assert any(n.endswith(f"etmem_scan/include/{header}") for n in names), header
    assert "-none-linux_" in wheel.name  # a platform wheel: it carries a native library


def test_the_wheel_marks_the_sdk_and_scan_library_typed(wheel: Path) -> None:
    """PEP 561 markers, so an engine author's type checker reads the annotations."""
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("etmem_sdk", "etmem_scan"):
        assert any(n.endswith(f"/{package}/py.typed") for n in names), package


def test_a_clone_collects_the_whole_suite_and_finds_its_golden_data(tmp_path: Path) -> None:
    """Everything the tests need is in the repository (golden data included)."""
    clone = copy_tree(tmp_path / "clone")
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    res = subprocess.run(
        [*pytest_cmd, "--collect-only"], cwd=clone, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert " error" not in res.stdout.splitlines()[-1]
    res = subprocess.run(
        [*pytest_cmd, "tests/test_protocol.py", "tests/test_idle_pages.py"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "passed" in res.stdout and "skipped" not in res.stdout


def test_versions_need_no_daemon(wheel_venv: Path) -> None:
    for prog in ("etmem", "etmemd"):
        res = subprocess.run([str(wheel_venv / prog), "--version"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [prog, "0.1.0"]


def test_printed_flags_point_into_the_installed_package(wheel_venv: Path) -> None:
    py = str(wheel_venv / "python")
    out = subprocess.run(
        [py, "-m", "etmem_scan.clib", "--cflags", "--libs"],
        capture_output=True, text=True, check=True, env=clean_env(),
    ).stdout.split()  # fmt: skip
    site = str(wheel_venv.parent / "lib")
    assert out[0].startswith("-I" + site) and out[0].endswith("etmem_scan/include")
    assert out[1].startswith("-L" + site) and out[1].endswith("etmem_scan/lib")
    assert out[2] == "-letmemd_scan"
    assert (Path(out[0][2:]) / "etmemd_scan_export.h").is_file()


@pytest.mark.root
def test_vendor_policy_compiled_against_the_wheel_runs_in_its_etmemd(
    wheel_venv: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("policies and object files must be owned by root: run as root")
    flags = subprocess.run(
        [str(wheel_venv / "python"), "-m", "etmem_scan.clib", "--cflags", "--libs"],
        capture_output=True, text=True, check=True, env=clean_env(),
    ).stdout  # fmt: skip
    lib = tmp_path / "libvendor.so"
    cc = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib), str(POLICY)]
    subprocess.run([*cc, *shlex.split(flags)], check=True)
    os.chmod(lib, 0o700)
    target = subprocess.Popen(["sleep", "300"])
    d = EtmemdProc(tmp_path, bindir=wheel_venv, env=clean_env())
    try:
        conf = tmp_path / "vendor.conf"
        conf.write_text(
            "[project]\nname=v\nloop=1\ninterval=1\nsleep=1\n"
            "[engine]\nname=thirdparty\nproject=v\neng_name=vendor\n"
            f"libname={lib}\nops_name=scan_ops\n"
            f"[task]\nproject=v\nengine=vendor\nname=t\ntype=pid\nvalue={target.pid}\n"
        )
        conf.chmod(0o600)
        d.etmem("obj", "add", "-f", str(conf))
        d.etmem("project", "start", "-n", "v")
        res = d.etmem("engine", f"vmas_{target.pid}", "-n", "v", "-e", "vendor", "-t", "t")
        maps = Path(f"/proc/{target.pid}/maps").read_text().splitlines()
        assert res.stdout == f"vmas={len(maps)}\n", d.logtext()
        # the wheel's own copy of the library, not a checkout's build
        loaded = Path(f"/proc/{d.proc.pid}/maps").read_text()
        assert (
            f"{wheel_venv.parent}/lib/" in loaded and "etmem_scan/lib/libetmemd_scan.so" in loaded
        )
    finally:
        d.stop()
        target.kill()
        target.wait()
