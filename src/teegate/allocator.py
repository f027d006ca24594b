"""The C allocator's settings for a long-running gateway (glibc only; elsewhere, nothing).

glibc serves a large block (past its mmap threshold, 128 KiB at start) from a
mapping of its own, and each time such a block is freed it raises the threshold
to that block's size, up to 32 MiB. Start-up frees a few (parsing the catalog,
attestation evidence, migrations), so afterwards every upstream TLS connection's
256 KiB read buffer (uvloop's, one per connection) comes from the heap instead:
measured here, ~25 KiB more resident memory per open stream (97 KiB against
72 KiB with 1000 streams). Setting the threshold turns that adjustment off.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the mmap threshold (glibc's malloc.h)."""

MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own initial threshold: blocks from here up get their own mapping."""


def pin_mmap_threshold() -> bool:
    """Pin the threshold where glibc starts it; True if the allocator took it.

    It must run before a server process's imports (reading large files, building
    large tables) grow the heap: large blocks are carved from the heap's free room
    whatever the threshold, and pinned once start-up was done, the ~25 KiB per
    stream stayed. So `teegate/__init__.py` calls it, first thing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError, TypeError):  # no mallopt here (not glibc)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
