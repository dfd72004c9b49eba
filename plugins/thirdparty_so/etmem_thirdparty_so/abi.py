"""ctypes mirrors of the original etmemd's C ABI (LP64): one ``Structure`` per C struct.

The layouts match ``include/*.h`` field for field; ``tests/test_thirdparty_abi.py`` compiles a C
program against those headers and compares every ``sizeof``/``offsetof`` with these classes.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_float,
    c_int,
    c_uint,
    c_uint64,
    c_ulong,
    c_void_p,
)

# enum scan_type
PAGE_SCAN, REGION_SCAN, PSI_SCAN = 0, 1, 2
# enum eng_type: every engine loaded from a .so is a THIRDPARTY_ENGINE
THIRDPARTY_ENGINE = 7
# enum page_type
PTE_TYPE, PMD_TYPE, PUD_TYPE, PAGE_TYPE_INVAL = 0, 1, 2, 3
# etmemd_get_page_refs() flags
SCAN_AS_HUGE, SCAN_IGN_HOST, VMA_SCAN_FLAG = 0x01000000, 0x02000000, 0x1000

VMA_PATH_STR_LEN = 256
VMA_MAJOR_MINOR_LEN = 8


class PageScan(Structure):
    """``struct page_scan`` (``project->scan_param`` of a page project): interval, loop, sleep."""

    _fields_ = [("interval", c_int), ("loop", c_int), ("sleep", c_int)]


class PsiScan(Structure):
    """``struct psi_scan``."""

    _fields_ = [("interval", c_int)]


class RegionScan(Structure):
    """``struct region_scan`` (DAMON settings of a region project)."""

    _fields_ = [
        ("sample_interval", c_ulong),
        ("aggr_interval", c_ulong),
        ("update_interval", c_ulong),
        ("min_nr_regions", c_ulong),
        ("max_nr_regions", c_ulong),
    ]


class CProject(Structure):
    """``struct project`` (56 bytes)."""


class CEngine(Structure):
    """``struct engine`` (80 bytes)."""


class CTask(Structure):
    """``struct task`` (88 bytes)."""


class CTaskPid(Structure):
    """``struct task_pid`` (32 bytes)."""


class CEngineOps(Structure):
    """``struct engine_ops`` (nine function pointers, 72 bytes)."""


class CPageRefs(Structure):
    """``struct page_refs`` (24 bytes)."""


class CVma(Structure):
    """``struct vma`` (320 bytes)."""


class CVmas(Structure):
    """``struct vmas`` (16 bytes)."""


class _SListEntry(Structure):
    _fields_ = [("sle_next", POINTER(CProject))]


CProject._fields_ = [
    ("name", c_char_p),
    ("type", c_int),
    ("scan_param", c_void_p),
    ("sysmem_threshold", c_int),
    ("swapcache_high_wmark", c_int),
    ("swapcache_low_wmark", c_int),
    ("start", c_bool),
    ("wmark_set", c_bool),
    ("engs", POINTER(CEngine)),
    ("entry", _SListEntry),
]

CEngine._fields_ = [
    ("engine_type", c_int),
    ("name", c_char_p),
    ("params", c_void_p),
    ("proj", POINTER(CProject)),
    ("page_ref", POINTER(CPageRefs)),
    ("ops", POINTER(CEngineOps)),
    ("tasks", POINTER(CTask)),
    ("page_cnt", c_uint64),
    ("next", POINTER(CEngine)),
    ("handler", c_void_p),
]

CTask._fields_ = [
    ("type", c_char_p),
    ("value", c_char_p),
    ("name", c_char_p),
    ("max_threads", c_int),
    ("swap_flag", c_int),
    ("pids", POINTER(CTaskPid)),
    ("eng", POINTER(CEngine)),
    ("params", c_void_p),
    ("task_pt", c_ulong),  # pthread_t
    ("timer_inst", c_void_p),
    ("threadpool_inst", c_void_p),
    ("next", POINTER(CTask)),
]

CTaskPid._fields_ = [
    ("pid", c_uint),
    ("rt_swapin_rate", c_float),
    ("params", c_void_p),
    ("tk", POINTER(CTask)),
    ("next", POINTER(CTaskPid)),
]

# GKeyFile* is opaque to us: glib owns it.
GKeyFileP = c_void_p

#: The nine ops in C order, with their C prototypes (restype first).
OP_PROTOTYPES: dict[str, type] = {
    "fill_eng_params": CFUNCTYPE(c_int, GKeyFileP, POINTER(CEngine)),
    "clear_eng_params": CFUNCTYPE(None, POINTER(CEngine)),
    "fill_task_params": CFUNCTYPE(c_int, GKeyFileP, POINTER(CTask)),
    "clear_task_params": CFUNCTYPE(None, POINTER(CTask)),
    "start_task": CFUNCTYPE(c_int, POINTER(CEngine), POINTER(CTask)),
    "stop_task": CFUNCTYPE(None, POINTER(CEngine), POINTER(CTask)),
    "alloc_pid_params": CFUNCTYPE(c_int, POINTER(CEngine), POINTER(POINTER(CTaskPid))),
    "free_pid_params": CFUNCTYPE(None, POINTER(CEngine), POINTER(POINTER(CTaskPid))),
    "eng_mgt_func": CFUNCTYPE(c_int, POINTER(CEngine), POINTER(CTask), c_char_p, c_int),
}

CEngineOps._fields_ = [(name, proto) for name, proto in OP_PROTOTYPES.items()]

CPageRefs._fields_ = [
    ("addr", c_uint64),
    ("count", c_int),
    ("type", c_int),  # enum page_type
    ("next", POINTER(CPageRefs)),
]

CVma._fields_ = [
    ("start", c_uint64),
    ("end", c_uint64),
    ("stat", c_bool * 4),  # READ, WRITE, EXEC, MAY_SHARE
    ("offset", c_uint64),
    ("inode", c_uint64),
    ("path", c_char * VMA_PATH_STR_LEN),
    ("major", c_char * VMA_MAJOR_MINOR_LEN),
    ("minor", c_char * VMA_MAJOR_MINOR_LEN),
    ("next", POINTER(CVma)),
]

CVmas._fields_ = [("vma_cnt", c_uint64), ("vma_list", POINTER(CVma))]

#: Every mirrored struct by its C name (the ABI test walks this).
STRUCTS: dict[str, type[Structure]] = {
    "engine": CEngine,
    "task": CTask,
    "project": CProject,
    "task_pid": CTaskPid,
    "engine_ops": CEngineOps,
    "vma": CVma,
    "vmas": CVmas,
    "page_refs": CPageRefs,
    "page_scan": PageScan,
    "psi_scan": PsiScan,
    "region_scan": RegionScan,
}


class CallFailed(OSError):
    """A C library call reported failure (NULL or -1)."""


def _errcheck(result, func, args):
    """Turn the C failure conventions (NULL pointer, negative int) into :class:`CallFailed`."""
    failed = (func.restype is c_int and result < 0) or (
        func.restype is not None and func.restype is not c_int and not result
    )
    if failed:
        err = ctypes.get_errno()
        raise CallFailed(err, f"{func.__name__} failed" + (f": {_strerror(err)}" if err else ""))
    return result


def _strerror(err: int) -> str:
    import os

    return os.strerror(err)


#: libetmemd_scan.so: name -> (restype, argtypes, check failures). ONE table.
SCAN_API: dict[str, tuple[object, list[object], bool]] = {
    "etmemd_scan_init": (c_int, [], True),
    "etmemd_scan_exit": (None, [], False),
    "etmemd_get_vmas": (POINTER(CVmas), [c_char_p, POINTER(c_char_p), c_int, c_bool], True),
    "etmemd_free_vmas": (None, [POINTER(CVmas)], False),
    "etmemd_get_page_refs": (
        c_int,
        [POINTER(CVmas), c_char_p, POINTER(POINTER(CPageRefs)), c_int],
        True,
    ),
    "etmemd_free_page_refs": (None, [POINTER(CPageRefs)], False),
    "etmemd_scan_set_proc_root": (c_int, [c_char_p], True),
}

#: libglib-2.0 functions used to build and free the GKeyFile handed to the fill ops.
GLIB_API: dict[str, tuple[object, list[object], bool]] = {
    "g_key_file_new": (c_void_p, [], True),
    "g_key_file_free": (None, [c_void_p], False),
    "g_key_file_load_from_data": (
        c_int,
        [c_void_p, c_char_p, ctypes.c_size_t, c_int, c_void_p],
        False,
    ),
    "g_key_file_get_string": (c_void_p, [c_void_p, c_char_p, c_char_p, c_void_p], False),
    "g_free": (None, [c_void_p], False),
}


def bind(lib: ctypes.CDLL, table: dict[str, tuple[object, list[object], bool]]) -> None:
    """Set ``restype``/``argtypes`` (and the errcheck helper where failures are signalled)."""
    for name, (restype, argtypes, check) in table.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
        if check:
            func.errcheck = _errcheck
