"""etmem_core — the host: config files, object model lifecycle, engine registry, etmemd and etmem."""
