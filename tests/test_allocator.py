"""allocator.py: in a process that imported teegate, a 256 KiB block (uvloop's TLS
read buffer) gets a mapping of its own even after a large block was freed, not a
slice of the heap."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Frees a 4 MiB block (glibc then raises its threshold past 256 KiB, unless pinned),
# then says whether a new 256 KiB block lies inside the [heap] mapping.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    if sys.argv[1] == "teegate":
        import teegate  # pins the threshold, first thing
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free(libc.malloc(4 << 20))
    block = libc.malloc(256 << 10)
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            print("heap" if start <= block < end else "own mapping")
            break
    else:
        print("own mapping")
    """
)


def where_a_256k_block_goes(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_importing_teegate_keeps_large_blocks_off_the_heap() -> None:
    assert where_a_256k_block_goes("plain") == "heap"  # the drift teegate stops
    assert where_a_256k_block_goes("teegate") == "own mapping"
