"""etmem package."""
