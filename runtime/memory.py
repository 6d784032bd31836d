"""This process's resident memory: what loading a model cost (GET /model), and giving back what it freed.

Read from /proc, without psutil: the service reports it and needs no extra dependency for it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

MIB = 2**20


def resident_mib() -> float | None:
    """Resident set size of this process in MiB; None where /proc is absent (not Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim); a no-op without glibc.

    Loading a model frees a lot on its way (the parsed protobuf, a probe session's weights) in blocks
    small enough to stay in the heap, resident, until something asks for them to be returned.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)
