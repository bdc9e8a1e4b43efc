"""How a batch of audit rows is cut into multi-row INSERT statements. Pure.

A batch of ``n`` rows is inserted as chunks whose sizes are powers of two (the binary digits
of ``n``, largest first, at most ``ROWS_PER_INSERT`` each), so the driver only ever prepares
ten statement shapes (~0.8 MB together). One statement per batch size seen instead kept up
to 128 prepared statements of up to ~0.8 MB each: ~110 MB held for good after an outage's
backlog was written in batches of many sizes (bench/outage_memory.py, ``sink``).
"""

from __future__ import annotations

from collections.abc import Iterator

# Rows per multi-row INSERT, a power of two: 9 parameters a row stays under SQLite's 32,766
# variables, and fewer statements per batch means fewer GIL handovers in the driver.
ROWS_PER_INSERT = 512


def chunk_sizes(total: int, largest: int = ROWS_PER_INSERT) -> Iterator[int]:
    """Sizes, in order, of the chunks ``total`` rows are inserted in (each a power of two)."""
    left = total
    while left > 0:
        size = min(largest, 1 << (left.bit_length() - 1))
        yield size
        left -= size
