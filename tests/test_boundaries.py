"""The arrows of docs/architecture.md, checked on the source with ``ast``:

* ``etmem_core`` imports no engine (built-in ones, or anything under plugins/ or examples/);
  it reaches engines only through the ``etmem.engines`` entry points;
* no engine imports ``etmem_core``;
* ``etmem_sdk`` and ``etmem_scan`` import no ``etmem_core``;
* engines and ``etmem_core`` (the CLI included) import no ``etmem_scan``: they reach the
  mechanism through ``etmem_sdk.scan``;
* ``etmem_scan`` is the bottom: it imports nothing of ours (nor pluggy);
* the daemon's modules import nothing of the client's (``etmem_core.cli``, ``etmem_core.client``);
* the C library (``scan_lib/``) takes no header or source from an engine's folder.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "etmem_core"
SDK = ROOT / "sdk" / "etmem_sdk"
SCAN = ROOT / "scan_lib" / "etmem_scan"
BUILTIN_ENGINES = {"etmem_slide", "etmem_cslide", "etmem_thirdparty_so", "etmem_damon", "etmem_psi"}
SKIP_DIRS = {"tests", "test", "build", "dist", ".venv", "__pycache__"}


def imported_modules(source: str, package: str = "") -> set[str]:
    """Absolute module names a file imports, including ``importlib.import_module("x")`` and
    ``__import__("x")`` with a literal name.  Relative imports are resolved against
    ``package`` (the dotted package the file is in) and skipped without it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and package:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            if node.module:
                found.add(f"{base}.{node.module}")
            else:  # from . import a, b: each name may be a module
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def top_levels(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def py_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts)]


def engine_packages() -> dict[str, Path]:
    """Top-level packages and modules of every engine under plugins/ and examples/."""
    found: dict[str, Path] = {}
    for base in (ROOT / "plugins", ROOT / "examples"):
        if not base.is_dir():
            continue
        for init in base.rglob("__init__.py"):
            pkg = init.parent
            if SKIP_DIRS & set(pkg.relative_to(base).parts):
                continue
            if not (pkg.parent / "__init__.py").exists():
                found[pkg.name] = pkg
        # flat single-module distributions: a .py beside a pyproject.toml (or in its src/)
        for pyproject in base.rglob("pyproject.toml"):
            for where in (pyproject.parent, pyproject.parent / "src"):
                for mod in where.glob("*.py"):
                    if mod.stem not in ("setup", "conftest", "noxfile"):
                        found[mod.stem] = mod
    return found


def imports_of(root: Path) -> dict[Path, set[str]]:
    files = [root] if root.is_file() else py_files(root)
    return {f: top_levels(imported_modules(f.read_text())) for f in files}


def offenders(root: Path, forbidden: set[str]) -> list[str]:
    return [
        f"{f.relative_to(ROOT)} imports {sorted(mods & forbidden)}"
        for f, mods in imports_of(root).items()
        if mods & forbidden
    ]


def test_the_checker_sees_every_kind_of_import() -> None:
    src = """
import etmem_slide.engine
from etmem_cslide import engine
from . import sibling
import importlib
importlib.import_module("etmem_thirdparty_so")
__import__("etmem_core.errors")
def f():
    from etmem_core.lifecycle import ObjectStore
"""
    assert top_levels(imported_modules(src)) == {
        "etmem_slide",
        "etmem_cslide",
        "importlib",
        "etmem_thirdparty_so",
        "etmem_core",
    }


def test_the_checker_resolves_relative_imports() -> None:
    src = "from .cli.gnu_getopt import Getopt\nfrom .. import keyfile\nfrom . import errors\n"
    assert imported_modules(src, "etmem_core.cli") == {
        "etmem_core.cli.cli.gnu_getopt",
        "etmem_core.keyfile",
        "etmem_core.cli.errors",
    }
    assert imported_modules("from .cli.gnu_getopt import Getopt\n", "etmem_core") == {
        "etmem_core.cli.gnu_getopt"
    }


def test_engine_discovery_finds_the_builtins() -> None:
    assert BUILTIN_ENGINES <= set(engine_packages())


def test_core_imports_no_engine() -> None:
    forbidden = BUILTIN_ENGINES | set(engine_packages())
    assert py_files(CORE), "etmem_core not found"
    assert offenders(CORE, forbidden) == []


@pytest.mark.parametrize("name", sorted(engine_packages()))
def test_engine_imports_no_core(name: str) -> None:
    assert offenders(engine_packages()[name], {"etmem_core"}) == []


@pytest.mark.parametrize("root", [SDK, SCAN], ids=["etmem_sdk", "etmem_scan"])
def test_sdk_and_scan_import_no_core_and_no_engine(root: Path) -> None:
    assert py_files(root)
    forbidden = {"etmem_core"} | BUILTIN_ENGINES | set(engine_packages())
    assert offenders(root, forbidden) == []


@pytest.mark.parametrize("name", sorted(engine_packages()))
def test_engine_reaches_the_mechanism_only_through_the_sdk(name: str) -> None:
    """One seam (``etmem_sdk.scan``) decides which /proc and /sys, and one function which
    tracker: an engine importing ``etmem_scan`` itself would bypass both."""
    assert offenders(engine_packages()[name], {"etmem_scan"}) == []


def test_the_core_and_the_cli_reach_the_mechanism_only_through_the_sdk() -> None:
    """``etmem scan``, ``etmem sysinfo`` and the daemon take their /proc, /sys and tracker
    from ``etmem_sdk.scan`` too: no module of ``etmem_core`` (``cli/`` included) imports
    ``etmem_scan``."""
    assert py_files(CORE / "cli"), "etmem_core/cli not found"
    assert offenders(CORE, {"etmem_scan"}) == []


def test_scan_imports_nothing_of_ours_above_it() -> None:
    """``etmem_scan`` is the bottom: errors, page sizes and name tables live in it and are
    re-exported above, so it needs neither the SDK nor pluggy."""
    forbidden = {"etmem_sdk", "etmem_core", "pluggy"} | BUILTIN_ENGINES | set(engine_packages())
    assert offenders(SCAN, forbidden) == []


def test_importing_every_scan_module_loads_no_sdk_and_no_pluggy() -> None:
    """The same rule at run time: what an import really pulls in, lazy imports included once
    the module is loaded."""
    modules = sorted(f"etmem_scan.{p.stem}" for p in SCAN.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pluggy', 'etmem_sdk', "
        "'etmem_core'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


CLIENT_MODULES = ("etmem_core.cli", "etmem_core.client")


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1])


def test_the_daemon_imports_nothing_of_the_client() -> None:
    """etmemd must not load the client's modules (its start-up, its getopt tables)."""
    daemon_files = [f for f in py_files(CORE) if f.parent == CORE and f.name != "client.py"]
    assert daemon_files, "etmem_core modules not found"
    found = []
    for f in daemon_files:
        for mod in imported_modules(f.read_text(), package_of(f)):
            if mod.startswith(CLIENT_MODULES):
                found.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert found == []


def test_the_c_library_takes_nothing_from_an_engine() -> None:
    """The C library's public headers live in scan_lib/include; a build file or source that
    names plugins/ would make the mechanism depend on an engine."""
    lib = ROOT / "scan_lib"
    files = [lib / "Makefile", lib / "build_clib.py"]
    files += [p for p in (lib / "c").rglob("*") if p.is_file()]
    files += [p for p in (lib / "include").rglob("*") if p.is_file()]
    assert (lib / "Makefile").is_file() and (lib / "include").is_dir()
    found = [str(f.relative_to(ROOT)) for f in files if "plugins" in f.read_text(errors="replace")]
    assert found == []


def test_the_sdk_pytest_plugin_loads_no_numpy_and_no_scan_facade() -> None:
    """etmem_sdk.testing is loaded into every pytest run of an environment holding etmem
    (entry point pytest11): it imports numpy and the scan facade only when a fixture needs
    them."""
    code = (
        "import sys, pytest, etmem_sdk.testing\n"
        "heavy = sorted(m for m in ('numpy', 'etmem_sdk.scan', 'etmem_scan.trackers') "
        "if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_clients_command_path_stays_light() -> None:
    """``etmem project show`` (the getopt path) imports neither typer (it serves ``--help``)
    nor the modules that the issue's start-up work took off it (docs/performance.md). Run
    without ``site``, whose editable-install finder would load ``re`` before our code."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from etmem_core.cli import main\n"
        "main(['project', 'show', '-s', 'etmem-test-no-such-socket'])\n"
        "heavy = ('typer', 'click', 'json', 're', 'struct', 'dataclasses', 'typing', 'inspect',\n"
        "         'numpy', 'pluggy', 'etmem_sdk', 'etmem_scan')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
