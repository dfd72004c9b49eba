"""etmem_core: the host (config files, object lifecycle, engine registry, etmemd, etmem)."""
