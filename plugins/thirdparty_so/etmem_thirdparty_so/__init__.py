"""etmem_thirdparty_so — the ``thirdparty`` engine: vendors' C etmem policies (.so) via ctypes."""
