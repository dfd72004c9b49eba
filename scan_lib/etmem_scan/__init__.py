"""etmem_scan — the mechanism under every engine: readers of /proc and /sys (VMAs, pagemap,
PSI, cgroups, DAMON), page trackers, actuators that move pages (process_madvise, move_pages,
openEuler's swap_pages), the capability probe, and where ``libetmemd_scan.so`` lives.

Every reader takes ``proc_root`` / ``sys_root`` so tests run on fake trees. It is the bottom
layer: it imports nothing of ours and no pluggy (tests/test_boundaries.py); engines and the
CLI reach it through the SDK's facade, :mod:`etmem_sdk.scan`, which picks those roots.
"""
