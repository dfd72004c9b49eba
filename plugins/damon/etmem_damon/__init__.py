"""The damon engine: DAMON/DAMOS region-based memory management (``scan_type=region``)."""
