"""Finding and opening a vendor policy (.so) and the libetmemd_scan.so it may link with.

The checks are the original's: the realpath of ``libname`` must be a regular file owned by
root:root with mode exactly 0500 or 0700; the library is opened ``RTLD_NOW | RTLD_LOCAL`` and
``ops_name`` must name a ``struct engine_ops`` data object in it.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import os
import threading

from etmem_sdk import ConfigError, clib
from etmem_sdk.trusted_files import Flaw, owned_by_root_with_mode, writable_only_by

from . import abi

SCAN_LIB_NAME = "libetmemd_scan.so"
#: Overrides where libetmemd_scan.so is looked for first.
SCAN_LIB_ENV = "ETMEMD_SCAN_LIB"
ALLOWED_MODES = (0o500, 0o700)
_MODES_TEXT = " or ".join(f"{mode:04o}" for mode in ALLOWED_MODES)  # 0500 or 0700


def scan_lib_candidates() -> list[str]:
    """Where libetmemd_scan.so is looked for, in order."""
    found = [os.environ[SCAN_LIB_ENV]] if os.environ.get(SCAN_LIB_ENV) else []
    found += [str(p) for p in clib.library_candidates()]  # the installed copy, then a checkout's
    found.append(SCAN_LIB_NAME)  # the dynamic linker's own search (ldconfig, LD_LIBRARY_PATH)
    return found


@functools.cache
def scan_lib() -> ctypes.CDLL:
    """libetmemd_scan.so, loaded once with ``RTLD_GLOBAL`` before any policy.

    A policy linked with ``-letmemd_scan`` then finds it by its SONAME without LD_LIBRARY_PATH.
    Raises ``ConfigError`` saying how to build it when it is nowhere to be found.
    """
    errors = []
    for candidate in scan_lib_candidates():
        if "/" in candidate and not os.path.exists(candidate):
            errors.append(f"{candidate}: not found")
            continue
        try:
            target = candidate
            if "/" in candidate:  # the linker's own search path is the system's to trust
                target = _pinned_path(_open_trusted(candidate))
            lib = ctypes.CDLL(target, mode=os.RTLD_NOW | os.RTLD_GLOBAL, use_errno=True)
        except (OSError, ConfigError) as exc:
            errors.append(str(exc))
            continue
        abi.bind(lib, abi.SCAN_API)
        return lib
    raise ConfigError(
        f"{SCAN_LIB_NAME} is not built (run `make -C scan_lib` or scripts/setup, or set "
        f"{SCAN_LIB_ENV}): " + "; ".join(errors)
    )


def _open_trusted(path: str) -> int:
    """An fd of ``path`` if only root can have written it (owned by uid 0, not writable by
    group or others): libetmemd_scan.so runs inside the root daemon like a policy does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    verdict = writable_only_by(st, (0,))
    if verdict is not None:
        os.close(fd)
        problem = {
            Flaw.TYPE: "is not a regular file",
            Flaw.OWNER: f"is owned by uid {st.st_uid}, it must be owned by root",
            Flaw.MODE: f"has mode {verdict.mode:04o}: writable by group or others",
        }[verdict.flaw]
        raise ConfigError(f"{path} {problem}; not loaded")
    return fd


def check_library(libname: str) -> str:
    """The realpath of ``libname`` if it passes the original's ownership and mode checks."""
    if "\0" in libname:  # no path holds one; the OS calls would raise ValueError
        raise ConfigError(f"libname={libname!r}: must not contain a NUL byte")
    try:
        resolved = os.path.realpath(libname, strict=True)
        st = os.stat(resolved)
    except OSError as exc:
        raise ConfigError(f"libname={libname}: realpath failed: {exc.strerror}") from None
    _check_stat(libname, resolved, st)
    return resolved


def open_checked_library(libname: str) -> tuple[str, ctypes.CDLL]:
    """``(realpath, handle)``: check ``libname`` as :func:`check_library` does, then dlopen the
    very file that was checked.

    Checking a path and then dlopening the same path leaves a window in which whoever can write
    the directory swaps in their own code, to run as root. So the file is opened once, the
    checks run on that open file (``fstat``) and dlopen gets ``/proc/self/fd/N``: the file
    checked is the file loaded (see :func:`_pinned_path` for why that fd stays open).
    """
    resolved = check_library(libname)
    try:
        # O_NONBLOCK: a FIFO swapped in meanwhile must not hang the open (fstat refuses it)
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"libname={libname}: cannot open {resolved}: {exc.strerror}") from None
    try:
        _check_stat(libname, resolved, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    path = _pinned_path(fd)
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as exc:
        _unpin(path)
        raise ConfigError(f"dlopen {resolved} failed: {exc}") from None
    with _pinned_lock:
        _users[lib._handle] = path
    return resolved, lib


#: (st_dev, st_ino) -> [an fd of that file, how many opens use it]
_pinned: dict[tuple[int, int], list[int]] = {}
#: dlopen handle -> the /proc/self/fd/N name it was opened by
_users: dict[int, str] = {}
_pinned_lock = threading.Lock()


def _pinned_path(fd: int) -> str:
    """``/proc/self/fd/N`` for the file open on ``fd`` (which this takes over), with an ``N``
    that names that file, and only that file, for the rest of the process.

    glibc's dlopen hands back an already loaded object whose name equals the one asked for; if
    fd numbers were reused, ``/proc/self/fd/7`` could return an earlier library that was opened
    through fd 7. So the first fd of each file stays open and is used again for that file.
    """
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _pinned_lock:
        pin = _pinned.setdefault(key, [fd, 0])
        pin[1] += 1
        kept = pin[0]
    if kept != fd:
        os.close(fd)
    return f"/proc/self/fd/{kept}"


def _unpin(path: str) -> None:
    """One use of the pinned ``path`` ends; the fd is closed with the last one, unless the
    library is still mapped (dlclose may keep it: NODELETE, unique symbols), because its name
    must then keep meaning that file."""
    fd = int(path.rsplit("/", 1)[1])
    with _pinned_lock:
        key = next((k for k, pin in _pinned.items() if pin[0] == fd), None)
        if key is None:
            return
        pin = _pinned[key]
        pin[1] -= 1
        if pin[1] > 0:
            return
        try:
            still = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            still = None
        if still is not None:
            _ctypes.dlclose(still._handle)  # undo the reference NOLOAD took
            pin[1] = 0
            return
        del _pinned[key]
        os.close(fd)


def _check_stat(libname: str, resolved: str, st: os.stat_result) -> None:
    # all of S_IMODE is compared: a setuid, setgid or sticky bit refuses the library
    verdict = owned_by_root_with_mode(st, ALLOWED_MODES)
    if verdict is None:
        return
    if verdict.flaw is Flaw.TYPE:
        raise ConfigError(f"libname={libname}: {resolved} is not a regular file")
    if verdict.flaw is Flaw.OWNER:
        raise ConfigError(
            f"libname={libname}: {resolved} is owned by {st.st_uid}:{st.st_gid}, "
            "it must be owned by root:root"
        )
    raise ConfigError(
        f"libname={libname}: {resolved} has mode {verdict.mode:04o}, only {_MODES_TEXT} are allowed"
    )


def open_library(path: str) -> ctypes.CDLL:
    """``dlopen(path, RTLD_NOW | RTLD_LOCAL)``."""
    try:
        return ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as exc:
        raise ConfigError(f"dlopen {path} failed: {exc}") from None


def close_library(lib: ctypes.CDLL) -> None:
    """``dlclose`` the handle ``open_library`` or ``open_checked_library`` returned (the
    library may stay mapped if shared); the file's fd goes with its last user."""
    handle = lib._handle
    _ctypes.dlclose(handle)
    with _pinned_lock:
        path = _users.get(handle)
    if path is not None:
        _unpin(path)
        with _pinned_lock:
            if not any(pin[0] == int(path.rsplit("/", 1)[1]) for pin in _pinned.values()):
                _users.pop(handle, None)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


class _ElfSym(ctypes.Structure):  # Elf64_Sym
    _fields_ = [
        ("st_name", ctypes.c_uint32),
        ("st_info", ctypes.c_ubyte),
        ("st_other", ctypes.c_ubyte),
        ("st_shndx", ctypes.c_uint16),
        ("st_value", ctypes.c_uint64),
        ("st_size", ctypes.c_uint64),
    ]


_RTLD_DL_SYMENT = 1
_STT_OBJECT = 1
_STT_TYPES = {0: "an untyped symbol", 2: "a function", 6: "a TLS object", 10: "an ifunc"}


def _symbol_kind(address: int) -> tuple[int, int] | None:
    """(ELF symbol type, size) of the symbol at ``address``, or None if glibc cannot say."""
    libc = ctypes.CDLL(None)
    dladdr1 = getattr(libc, "dladdr1", None)
    if dladdr1 is None:
        return None
    info = _DlInfo()
    sym = ctypes.POINTER(_ElfSym)()
    if not dladdr1(
        ctypes.c_void_p(address), ctypes.byref(info), ctypes.byref(sym), _RTLD_DL_SYMENT
    ):
        return None
    if not sym:
        return None
    return sym.contents.st_info & 0xF, sym.contents.st_size


def find_ops(lib: ctypes.CDLL, ops_name: str) -> abi.CEngineOps:
    """The ``struct engine_ops`` data object named ``ops_name`` inside ``lib``.

    Like ``dlsym``, the name is also looked up in the libraries ``lib`` depends on. A symbol
    that is not a data object of at least ``sizeof(struct engine_ops)`` is refused: calling
    through a function's code bytes as if they were pointers would crash etmemd.
    """
    try:
        ops = abi.CEngineOps.in_dll(lib, ops_name)
    except ValueError:
        where = lib._name
        if where.startswith("/proc/self/fd/"):  # name the library, not the fd it was opened by
            try:
                where = os.readlink(where)
            except OSError:
                pass
        raise ConfigError(f"ops_name={ops_name}: no such symbol in {where}") from None
    kind = _symbol_kind(ctypes.addressof(ops))
    if kind is not None:
        sym_type, size = kind
        if sym_type != _STT_OBJECT:
            what = _STT_TYPES.get(sym_type, f"a symbol of type {sym_type}")
            raise ConfigError(f"ops_name={ops_name}: is {what}, not a struct engine_ops object")
        if size < ctypes.sizeof(abi.CEngineOps):
            raise ConfigError(
                f"ops_name={ops_name}: object of {size} bytes, struct engine_ops has "
                f"{ctypes.sizeof(abi.CEngineOps)}"
            )
    return ops
