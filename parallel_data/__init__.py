"""Data pipeline: record I/O, sources (sharding, held-out split, resume cursors), parallel datasets, grouping and collation."""
